"""KFP components made from steps: one per ``@step``, generated from its declaration.

    from xpuflow.kfp import components as xc
    xc.train          # the component of xpuflow's train step (any built-in step, by name)

A component's function is generated from the step (KFP reads real annotations and
ships the function's source to the pod): Input parameters become ``Input[Artifact]``,
Output parameters ``Output[Artifact]``, scalars parameters with the step's defaults.
Its body calls :func:`xpuflow.kfp.runtime.run_task`, which runs the step in the pod.
The components/ folder is compiled from these (``python -m xpuflow.commands.components``).
"""

from __future__ import annotations

import keyword
import typing
import linecache
from typing import Any

from ..dsl.step import FlowError, Step

__all__ = ["build_component", "made_from", "source_of", "shard_components"]

# component spec (by identity) -> the step it was made from; the spec itself is kept so its id stays unique
_MADE: dict[int, tuple[Any, Step]] = {}
_CACHE: dict[tuple[str, str], Any] = {}


def source_of(step: Step) -> str:
    """The Python source of ``step``'s component function."""
    params = [f"{name}: Input[Artifact]" for name in step.inputs]
    params += [f"{name}: Output[Artifact]" for name in step.outputs]
    params += [f"{p.name}: {p.type.__name__} = {p.default!r}" for p in step.params.values()]
    doc = ((step.fn.__doc__ or step.name).strip().split("\n")[0]).replace('"""', "'''").replace("\\", "/")
    return (f"def {step.name}({', '.join(params)}):\n"
            f'    """{doc}"""\n'
            f"    arguments = dict(locals())\n"
            f"    from xpuflow.kfp.runtime import run_task\n\n"
            f"    run_task({step.ref!r}, arguments)\n")


def build_component(step: Step, image: str) -> Any:
    """The KFP component of ``step`` in ``image`` (one per step and image)."""
    key = (step.ref, image)
    if key in _CACHE:
        return _CACHE[key]
    from kfp import dsl

    clash = [n for n in (*step.inputs, *step.outputs, *step.params) if keyword.iskeyword(n) or n == "arguments"]
    if clash:
        raise FlowError(f"step {step.ref}: parameter {clash[0]!r} cannot be a KFP component parameter. Fix: rename it.")
    step.pod_ref()  # the pod imports the step by its path
    source = source_of(step)
    filename = f"<xpuflow component {step.ref}>"
    # registered in linecache so that inspect.getsource (which KFP uses to ship the function) finds it
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"Input": dsl.Input, "Output": dsl.Output, "Artifact": dsl.Artifact,
                                 "__name__": "xpuflow_components"}
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)  # noqa: S102 - our own generated source
    fn = namespace[step.name]
    made = dsl.component(base_image=image)(fn)
    _MADE[id(made.component_spec)] = (made.component_spec, step)
    _CACHE[key] = made
    return made


def shard_components(output: str, image: str) -> tuple[Any, Any]:
    """The two components around a sharded step's ``dsl.ParallelFor``: ``shard_list(count)`` (the ``--shard``
    of each iteration) and ``join_shards(parts)``, which publishes the iterations' parts as ``output``
    (:func:`xpuflow.steps.shards.join`)."""
    key = (f"xpuflow-shards:{output}", image)
    if key in _CACHE:
        return _CACHE[key]
    from kfp import dsl

    source = ("def shard_list(count: int) -> List[str]:\n"
              '    """The --shard of each process of a sharded step."""\n'
              "    if count < 1:\n"
              "        raise ValueError(f'shards={count} is not valid: 1 or more')\n"
              "    return [f'{i}/{count}' for i in range(count)]\n\n\n"
              f"def join_shards(parts: Input[List[Artifact]], {output}: Output[Artifact]):\n"
              '    """Publish the parts of a sharded step as its one output."""\n'
              "    from xpuflow.steps.shards import join\n\n"
              f"    summary = join([p.path for p in parts], {output}.path)\n"
              f"    {output}.metadata.update({{k: v for k, v in summary.items() if isinstance(v, (int, float, str))\n"
              "                              and not isinstance(v, bool)})\n")
    filename = f"<xpuflow shard components {output}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"Input": dsl.Input, "Output": dsl.Output, "Artifact": dsl.Artifact,
                                 "List": typing.List, "__name__": "xpuflow_components"}
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)  # noqa: S102 - our own generated source
    made = (dsl.component(base_image=image)(namespace["shard_list"]),
            dsl.component(base_image=image)(namespace["join_shards"]))
    _CACHE[key] = made
    return made


def made_from(spec: Any) -> Step | None:
    """The step a component spec was made from by :func:`build_component`, or None."""
    entry = _MADE.get(id(spec))
    return entry[1] if entry is not None and entry[0] is spec else None


def __getattr__(name: str) -> Any:
    """``components.train`` etc.: the component of the built-in step of that name."""
    from ..steps import builtin_names

    if name.startswith("_") or name not in builtin_names():
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ..dsl.load import load_step

    step = load_step(name)
    return build_component(step, step.image_ref())
