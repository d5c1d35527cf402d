"""Write ``components/<name>/component.yaml`` (the KFP component of each built-in ``@step``) and its README.

    python -m xpuflow.commands.components components/      # regenerate; a test fails when they drift
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..cluster import Cluster
from ..dsl.step import FlowError, Step

__all__ = ["render_all", "write_all"]


def _type(spec) -> str:  # noqa: ANN001 - kfp InputSpec/OutputSpec
    return spec.type.split("@")[0].replace("system.", "")


def _readme(step: Step, component) -> str:  # noqa: ANN001
    spec = component.component_spec
    compute = step.compute
    if compute is None:
        raise FlowError(f"step {step.ref}: a built-in step must declare its compute.")
    doc = (step.fn.__doc__ or "").strip().split("\n\n")[0]
    lines = [f"# Component `{spec.name}`", "", doc, "",
             f"Step: `xpuflow step {step.name}` (`{step.ref}`, [docs](../../docs/steps/)); "
             f"Python: `from xpuflow.kfp.components import {step.name}`.", "", "## Inputs", "",
             "| name | type | default |", "|---|---|---|"]
    for name, inp in (spec.inputs or {}).items():
        default = "(artifact)" if inp.default is None and "." in inp.type else repr(inp.default)
        lines.append(f"| `{name}` | {_type(inp)} | {default} |")
    lines += ["", "## Outputs", "", "| name | type |", "|---|---|"]
    for name, out in (spec.outputs or {}).items():
        lines.append(f"| `{name}` | {_type(out)} |")
    lines += ["", "## Compute (declared with `@step`)", "", f"- kind: **{compute.kind}**, {compute.hardware}; requests cpu "
              f"{compute.cpu_request}, memory {compute.memory_request}; purpose `{compute.purpose}`"
              f"{'; spot' if compute.spot else ''}", ""]
    lines += ["Where it lands on the shipped clusters (`xpuflow plan`):", "", "| cluster | node pool | instance type |",
              "|---|---|---|"]
    for cluster_name in ("gke", "eks", "aks", "generic"):
        try:
            p = Cluster.load(cluster_name).place(compute)
            lines.append(f"| {cluster_name} | {p.pool} | {p.instance_type or '-'} |")
        except Exception as e:  # noqa: BLE001 - PlacementError: shown, not hidden
            lines.append(f"| {cluster_name} | not offered | {str(e).split(': ', 1)[-1].split('. ')[0]} |")
    lines += ["", "Override per task: `placed(task, cluster, compute=Compute.gpu(...))` (see `xpuflow.kfp`).", "",
              "Loaded with plain kfp (`kfp.components.load_component_from_file`), this component.yaml gives a task "
              "with **no compute**: KFP's loader keeps no requests, accelerator, node selector or tolerations. Get "
              "them back with `placed(task, cluster, compute=...)`, or set them with kfp's own setters; "
              "`xpuflow lint pipeline.yaml` finds tasks without them ([components/README.md](../README.md)).", ""]
    return "\n".join(lines)


def render_all() -> dict[str, str]:
    """Relative path -> content for every component file."""
    import tempfile

    from kfp import compiler

    from ..kfp import component as component_of
    from ..steps import builtin_steps

    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for step in builtin_steps():
            component = component_of(step)
            path = Path(tmp) / f"{step.name}.yaml"
            compiler.Compiler().compile(component, str(path))
            files[f"{step.name}/component.yaml"] = path.read_text()
            files[f"{step.name}/README.md"] = _readme(step, component)
    return files


def write_all(root: str | Path) -> list[Path]:
    from ..steps.io import atomic_file

    written = []
    for rel, content in render_all().items():
        path = Path(root) / rel
        with atomic_file(path, "w") as handle:
            handle.write(content)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_all(sys.argv[1] if len(sys.argv) > 1 else "components"):
        print(p)
