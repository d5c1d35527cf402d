"""Compute values that a pipeline parameter gives at run time (Kubeflow Pipelines only).

    @dsl.pipeline
    def train_pipeline(gpus: int = 1, memory: str = "16Gi"):
        placed(train(...), "gke", compute=Compute.gpu(count=gpus, model="l4", memory=memory, shm="4Gi"))

KFP resolves a pipeline parameter at run time for a task's CPU and memory requests and
limits and its accelerator count, and for nothing that decides where the pod goes: the
node pool, selector, tolerations, GPU model, TPU topology and spot are fixed when the
pipeline is compiled. So a ``Compute`` constructor accepts a parameter for ``cpu``,
``memory``, ``cpu_limit``, ``memory_limit`` and ``count`` only, and refuses one anywhere
else in one line. The Compute keeps a stand-in (the constructor's default; a request
given with a literal limit stands in at that limit) to choose the pool and price the
plan, and records the parameter in ``Compute.params``; the KFP renderer sets the
parameter itself, every other backend refuses (it has no run-time parameters).
kfp is never imported here: a parameter is recognised by its type's module and name.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ComputeError, invalid

__all__ = ["Param", "as_param", "accepts_parameters", "replaced_params", "PARAMETER_FIELDS"]

# constructor argument -> the limit that follows it when not given
PARAMETER_FIELDS = {"cpu": "cpu_limit", "memory": "memory_limit", "cpu_limit": None, "memory_limit": None,
                    "count": None}


@dataclass(frozen=True)
class Param:
    """A pipeline parameter standing for a Compute value (``channel``: the KFP PipelineParameterChannel)."""

    name: str
    channel: Any = field(default=None, compare=False, hash=False, repr=False)

    def __str__(self) -> str:
        return f"pipeline parameter {self.name!r}"


def as_param(value: object) -> Param | None:
    """``value`` as a Param when it is one, or a KFP pipeline parameter channel; else None."""
    if isinstance(value, Param):
        return value
    cls = type(value)
    if cls.__module__.startswith("kfp.") and "Channel" in cls.__name__ and hasattr(value, "pattern"):
        return Param(str(getattr(value, "name", "?")), value)
    return None


def accepts_parameters(constructor: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a ``Compute`` constructor (a classmethod's function) so that it takes pipeline parameters."""
    signature = inspect.signature(constructor)

    @functools.wraps(constructor)
    def build(cls: type, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(cls, *args, **kwargs)
        arguments = {k: v for k, v in bound.arguments.items() if k != "cls"}
        arguments.update(arguments.pop("options", {}))
        where = f"Compute.{constructor.__name__}"
        params: dict[str, Param] = {}
        for name, value in list(arguments.items()):
            param = as_param(value)
            if param is None:
                continue
            if name not in PARAMETER_FIELDS:
                raise ComputeError(invalid(
                    name, str(param), "a literal value: KFP resolves pipeline parameters only for cpu, memory, "
                    "cpu_limit, memory_limit and count; this one decides the node pool, selector or tolerations, "
                    "which are fixed when the pipeline is compiled", where=where,
                    fix=f"pass a literal {name}, or compile one pipeline per value"))
            params[name] = param
            del arguments[name]
            follower = PARAMETER_FIELDS[name]
            if follower and follower in arguments and as_param(arguments[follower]) is None:
                arguments[name] = arguments[follower]  # the request stands in at its literal limit
            elif follower and follower not in arguments:
                params[follower] = param  # the limit follows the request, as it does for literals
        purpose = arguments.get("purpose", signature.parameters["purpose"].default)
        if params and {"memory", "memory_limit"} & set(params) and "shm" in signature.parameters \
                and "shm" not in arguments and purpose == "training":
            raise ComputeError(invalid(
                "shm", "(default)", "an explicit size when memory comes from a pipeline parameter: the default is a "
                "quarter of the memory limit, unknown until run time", where=where,
                fix="pass shm='2Gi' (less than the smallest memory you will run with), or shm=None"))
        compute = constructor(cls, **arguments)
        if params:
            object.__setattr__(compute, "params", tuple(sorted(params.items())))
        return compute

    return build


_FIELD_OF = {"cpu_request": "cpu", "memory_request": "memory", "cpu_limit": "cpu_limit", "memory_limit": "memory_limit",
             "accelerator": "count"}


def replaced_params(params: tuple[tuple[str, Param], ...], changes: dict[str, Any]) -> tuple[tuple[str, Param], ...]:
    """``params`` less those that ``Compute.replace(**changes)`` gives a value (a literal wins over a parameter)."""
    touched = {_FIELD_OF.get(k, k) for k in changes}
    return tuple((name, p) for name, p in params if name not in touched)
