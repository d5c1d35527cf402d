"""``@step``: a plain function plus what it needs to run (its Compute, image, whether it resumes).

    from xpuflow import Compute, Input, Output, step

    @step(compute=Compute.gpu(count=1, model="l4", spot=True), resumable=True)
    def train(data: Input, model: Output, epochs: int = 10, checkpoint_dir: str = ""):
        ...

Parameters annotated :class:`Input` are directories or URLs an upstream step wrote,
:class:`Output` directories this step writes, the rest scalars (int, float, str,
bool) with defaults. A function whose signature you cannot annotate names them
instead: ``step(compute=..., inputs=("data",), outputs=("output",))(fn)``.

The :class:`Step` is the one declaration every backend and verb reads: KFP
components, Airflow tasks, Kubernetes Jobs, ``xpuflow step``, plan, lint and graph.
Called outside a flow it just runs the function; inside a ``@flow`` it returns a
task (:mod:`xpuflow.dsl.flow`).
"""

from __future__ import annotations

import functools
import inspect
import math
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..compute import Compute
from ..errors import XpuflowError, invalid
from ..quantity import MAX_INT64

__all__ = ["Input", "Output", "Param", "Step", "FlowError", "step", "SCALARS"]

SCALARS = (bool, int, float, str)
# image classes of xpuflow.images; anything with '/' or ':' is an image reference used as is
IMAGE_CLASSES = ("cpu", "cuda", "tpu")


class FlowError(XpuflowError, ValueError):
    """A ``@step`` or ``@flow`` declaration, a call of a step in a flow, or a reference to one, is not valid."""


class Input(str):
    """A step parameter holding a directory or URL that an upstream step wrote."""


class Output(str):
    """A step parameter holding a directory the step writes (its output)."""


@dataclass(frozen=True)
class Param:
    """A scalar parameter of a step: ``type`` is one of int, float, str, bool."""

    name: str
    type: type
    default: Any

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def in_bounds(value: Any) -> bool:
    """A scalar a pipeline parameter can hold: an int within int64 (KFP's NUMBER_INTEGER), a finite float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return abs(value) <= MAX_INT64 if isinstance(value, int) else math.isfinite(value)


def _kind_of(annotation: Any, default: Any) -> type | str:
    """``"input"``, ``"output"`` or the scalar type of a parameter."""
    if annotation is Input or annotation == "Input":
        return "input"
    if annotation is Output or annotation == "Output":
        return "output"
    if annotation in SCALARS:
        return annotation
    if isinstance(annotation, str) and annotation in {t.__name__ for t in SCALARS}:
        return {t.__name__: t for t in SCALARS}[annotation]
    if type(default) in SCALARS:
        return type(default)
    return object


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - a name the module does not define: fall back to the raw strings
        return dict(getattr(fn, "__annotations__", {}))


class Step:
    """One step: the function, its Compute and how it runs. Build it with :func:`step`."""

    def __init__(self, fn: Callable[..., Any], *, compute: Compute | None, image: str | None, resumable: bool,
                 minutes: float, inputs: Iterable[str], outputs: Iterable[str],
                 check: Callable[..., None] | None = None) -> None:
        where = f"@step {fn.__module__}:{fn.__qualname__}"
        if check is not None and not callable(check):
            raise FlowError(invalid("check", check, "a function of the step's scalar parameters, or None", where=where))
        self.check = check
        if compute is not None and not isinstance(compute, Compute):
            raise FlowError(invalid("compute", compute, "a Compute (Compute.cpu/gpu/tpu/npu(...)) or None",
                                    where=where, fix="pass compute=Compute.gpu(count=1) or similar"))
        if image is not None and not (image in IMAGE_CLASSES or "/" in image or ":" in image):
            raise FlowError(invalid("image", image, f"an image class ({', '.join(IMAGE_CLASSES)}) or an image "
                                    "reference (registry/name:tag)", where=where, choices=IMAGE_CLASSES))
        if not isinstance(minutes, (int, float)) or isinstance(minutes, bool) or minutes <= 0:
            raise FlowError(invalid("minutes", minutes, "a positive number (expected duration, for plan's cost)",
                                    where=where))
        functools.update_wrapper(self, fn)
        self.fn, self.compute, self.image, self.resumable, self.minutes = fn, compute, image, resumable, float(minutes)
        self.name: str = fn.__name__
        self.ref = f"{fn.__module__}:{fn.__qualname__}"
        hints, named_in, named_out = _hints(fn), set(inputs), set(outputs)
        sig = inspect.signature(fn)
        unknown = sorted((named_in | named_out) - set(sig.parameters))
        if unknown:
            raise FlowError(f"{where}: inputs/outputs name {', '.join(map(repr, unknown))}, not parameters of "
                            f"{fn.__name__}({', '.join(sig.parameters)}). Fix: name its parameters.")
        ins, outs, params = [], [], {}
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise FlowError(f"{where}: *{p.name} is not valid in a step: each parameter must be an Input, an "
                                "Output or a scalar with a default. Fix: list the parameters.")
            default = None if p.default is inspect.Parameter.empty else p.default
            kind = "input" if p.name in named_in else "output" if p.name in named_out else _kind_of(
                hints.get(p.name, p.annotation), default)
            if kind == "input":
                ins.append(p.name)
            elif kind == "output":
                outs.append(p.name)
            elif kind is object or p.default is inspect.Parameter.empty or not isinstance(default, kind):
                raise FlowError(invalid(f"parameter {p.name}", p.default if p.default is not inspect.Parameter.empty
                                        else "(no default)", "Input, Output, or int/float/str/bool with a default "
                                        "of that type", where=where, fix=f"annotate it, e.g. {p.name}: Input, or "
                                        f"give it a default, e.g. {p.name}: int = 1"))
            elif not in_bounds(default):
                raise FlowError(invalid(f"parameter {p.name}", default, "an int within int64 or a finite float (a "
                                        "pipeline parameter)", where=where, fix="give it a default in that range"))
            else:
                params[p.name] = Param(p.name, kind, default)
        if not outs:
            raise FlowError(f"{where}: no Output parameter: a step writes at least one directory. Fix: add one, "
                            "e.g. output: Output.")
        self.inputs: tuple[str, ...] = tuple(ins)
        self.outputs: tuple[str, ...] = tuple(outs)
        self.params: Mapping[str, Param] = params

    def pod_ref(self) -> str:
        """``package.module:function``, as a pod (or an Airflow worker) imports it; refused for a step defined
        in a script or in a file loaded by path, which no other process can import."""
        module = self.ref.partition(":")[0]
        if module == "__main__" or module.startswith("xpuflow_file_") or "<locals>" in self.ref:
            raise FlowError(f"step {self.name!r} is defined in a script or a file loaded by path ({module}), so a "
                            "pod cannot import it. Fix: put the step in an importable module (a package on "
                            "PYTHONPATH or installed) and import it from the flow file.")
        return self.ref

    @property
    def shardable(self) -> bool:
        """It takes ``shard: str`` (``--shard I/N``, :mod:`xpuflow.steps.shards`): a flow may run it in N shards."""
        return "shard" in self.params and self.params["shard"].type is str

    @property
    def checkpointed(self) -> bool:
        """A resumable step with a ``checkpoint_dir`` parameter: backends give it a durable checkpoint URL."""
        return self.resumable and "checkpoint_dir" in self.params

    def image_class(self, compute: Compute | None = None) -> str:
        """The image (class or reference) of this step run with ``compute`` (default: its own)."""
        if self.image:
            return self.image
        kind = (compute or self.compute).kind if (compute or self.compute) else "cpu"
        return {"cpu": "cpu", "npu": "cpu", "gpu": "cuda", "tpu": "tpu"}[kind]

    def image_ref(self, compute: Compute | None = None) -> str:
        from ..images import image_for_class

        return image_for_class(self.image_class(compute))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .flow import current_builder

        builder = current_builder()
        if builder is None:
            return self.fn(*args, **kwargs)
        if args:
            raise FlowError(f"step {self.name!r} called with positional arguments inside a flow. Fix: pass them "
                            f"by name, e.g. {self.name}({', '.join(f'{n}=...' for n in self.inputs[:1])}).")
        return builder.add(self, kwargs)

    def check_alone(self, arguments: Mapping[str, Any], where: str) -> None:
        """The arguments of this step run alone (an Airflow task, a Kubernetes Job), refused in one line: an
        Output (the backend writes it under the artifact root), a name it does not have, an input not given."""
        for key in arguments:
            if key in self.outputs:
                raise FlowError(f"{where}: {key}= is an Output of {self.name}: it is written under the artifact root "
                                f"(<root>/<task id>). Fix: drop {key}=, or choose the root with artifact_root=.")
            if key not in self.inputs and key not in self.params:
                known = [*self.inputs, *self.params]
                raise FlowError(invalid("argument", key, f"one of {', '.join(known) or '(none)'}", where=where,
                                        choices=known))
        missing = [i for i in self.inputs if i not in arguments]
        if missing:
            raise FlowError(f"{where}: input(s) {', '.join(missing)} not given. Fix: pass the URL an upstream step "
                            f"wrote, e.g. {missing[0]}='s3://bucket/run-1/prep'.")

    def __repr__(self) -> str:
        return f"<step {self.ref} compute={self.compute.hardware if self.compute else None}>"

    def __reduce__(self) -> Any:  # pickled (Airflow, multiprocessing) by import path
        from .load import load_step

        return (load_step, (self.ref,))


def step(fn: Callable[..., Any] | None = None, *, compute: Compute | None = None, image: str | None = None,
         resumable: bool = False, minutes: float = 5.0, inputs: Iterable[str] = (),
         outputs: Iterable[str] = (), check: Callable[..., None] | None = None) -> Any:
    """Declare a step. ``compute``: what it needs (a flow's ``default_compute`` when None); ``image``: an
    image class (cpu, cuda, tpu) or reference (default: from the compute kind); ``resumable``: it resumes
    after preemption (from ``checkpoint_dir`` when it has one); ``minutes``: rough duration, for the cost
    shown by ``xpuflow plan``; ``inputs``/``outputs``: parameter names, for functions you cannot annotate;
    ``check``: called with the step's scalar parameters (keyword arguments) before a flow runs, raises an
    XpuflowError for a bad value, so ``xpuflow run --param`` is refused before any task starts."""

    def wrap(f: Callable[..., Any]) -> Step:
        return Step(f, compute=compute, image=image, resumable=resumable, minutes=minutes, inputs=inputs,
                    outputs=outputs, check=check)

    return wrap(fn) if fn is not None else wrap
