"""Write ``components/<name>/component.yaml`` (compiled from ``xpuflow.kfp.components``) and its README.

    python -m xpuflow.commands.components components/      # regenerate; a test fails when they drift
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..cluster import Cluster
from ..defaults import default_compute

__all__ = ["render_all", "write_all", "COMPONENTS"]

# component attribute in xpuflow.kfp.components -> xpuflow step (its default Compute)
COMPONENTS = {
    "preprocess": "preprocess",
    "train": "train",
    "train_tpu": "train_tpu",
    "evaluate": "evaluate",
    "export": "export",
    "validate_on_device": "validate_on_device",
    "chunk": "chunk",
    "embed": "embed",
    "index": "index",
    "batch_infer": "batch_infer",
}


def _type(spec) -> str:  # noqa: ANN001 - kfp InputSpec/OutputSpec
    return spec.type.split("@")[0].replace("system.", "")


def _readme(attr: str, component) -> str:  # noqa: ANN001
    spec = component.component_spec
    compute = default_compute(COMPONENTS[attr])
    doc = (component.python_func.__doc__ or "").strip()
    lines = [f"# Component `{spec.name}`", "", doc, "",
             f"Step: `xpuflow step {COMPONENTS[attr]}` ([docs](../../docs/steps/)); "
             f"Python: `from xpuflow.kfp.components import {attr}`.", "", "## Inputs", "",
             "| name | type | default |", "|---|---|---|"]
    for name, inp in (spec.inputs or {}).items():
        default = "(artifact)" if inp.default is None and "." in inp.type else repr(inp.default)
        lines.append(f"| `{name}` | {_type(inp)} | {default} |")
    lines += ["", "## Outputs", "", "| name | type |", "|---|---|"]
    for name, out in (spec.outputs or {}).items():
        lines.append(f"| `{name}` | {_type(out)} |")
    lines += ["", "## Default compute", "", f"- kind: **{compute.kind}**, {compute.hardware}; requests cpu "
              f"{compute.cpu_request}, memory {compute.memory_request}; pool purpose `{compute.pool}`"
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

    from ..kfp import components as module

    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for attr in COMPONENTS:
            component = getattr(module, attr)
            path = Path(tmp) / f"{attr}.yaml"
            compiler.Compiler().compile(component, str(path))
            files[f"{attr}/component.yaml"] = path.read_text()
            files[f"{attr}/README.md"] = _readme(attr, component)
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
