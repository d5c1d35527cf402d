"""A flow's tasks run in this process, in order (``Flow.run``; Airflow's local mode runs one task the same way)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .command import checkpoint_url, flag, output_url
from .flow import Flow, FlowParam, OutputRef, Task
from .params import check_params
from .step import FlowError
from ..errors import invalid

__all__ = ["run_flow", "task_kwargs", "check_params", "shard_specs"]

log = logging.getLogger("xpuflow.local")


def task_kwargs(task: Task, params: Mapping[str, Any], root: str, upstream: Callable[[OutputRef], str]) -> dict[str, Any]:
    """The keyword arguments of ``task``'s step: flow parameters from ``params``, inputs from ``upstream``,
    outputs (and checkpoints of a checkpointed step) under ``root`` in the layout of :mod:`.command`."""
    kwargs: dict[str, Any] = {}
    for key, value in task.args.items():
        if isinstance(value, OutputRef):
            kwargs[key] = upstream(value)
        elif isinstance(value, FlowParam):
            kwargs[key] = params[value.name]
        else:
            kwargs[key] = value
    if task.step.checkpointed and "checkpoint_dir" not in kwargs:
        kwargs["checkpoint_dir"] = checkpoint_url(root, task.name)
    only = len(task.step.outputs) == 1
    for out in task.step.outputs:
        kwargs[out] = output_url(root, task.name, out, only)
    return kwargs


def shard_specs(task: Task, params: Mapping[str, Any] | None = None) -> list[str]:
    """``--shard`` of each process of ``task``: ``["0/N", ..., "N-1/N"]``, or ``[""]`` for an unsharded one; N
    from ``params`` when the count is a flow parameter, else the declared count."""
    count = params[task.shards_param.name] if params and task.shards_param is not None else task.shards
    if task.shards_param is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise FlowError(invalid(f"parameter {task.shards_param.name}", count, "a whole number of shards, 1 or more",
                                where=f"task {task.name!r}"))
    return spec_list(count)


def spec_list(count: int) -> list[str]:
    """The ``--shard`` values of ``count`` processes: ``["0/N", ..., "N-1/N"]``, or ``[""]`` for one."""
    return [f"{i}/{count}" for i in range(count)] if count > 1 else [""]


def run_flow(flow: Flow, root: str | Path, params: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    values = check_params(flow, params)
    base = str(Path(root).resolve())
    done: dict[str, dict[str, str]] = {}
    for task in flow.tasks:
        kwargs = task_kwargs(task, values, base, lambda ref: done[ref.task][ref.output])
        log.info("xpuflow step %s (task %s, in-process): %s", task.step.name, task.name,
                 " ".join(f"{flag(k)} {v}" for k, v in kwargs.items()))
        for shard in shard_specs(task, values):  # a sharded task: its N processes one after the other
            task.step.fn(**kwargs, **({"shard": shard} if shard else {}))
        done[task.name] = {out: kwargs[out] for out in task.step.outputs}
    return done
