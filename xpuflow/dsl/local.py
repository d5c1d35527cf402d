"""A flow's tasks run in this process, in order (``Flow.run``; Airflow's local mode runs one task the same way)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .command import checkpoint_url, flag, output_url
from .flow import Flow, FlowParam, OutputRef, Task
from .params import check_params

__all__ = ["run_flow", "task_kwargs", "check_params"]

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


def run_flow(flow: Flow, root: str | Path, params: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    values = check_params(flow, params)
    base = str(Path(root).resolve())
    done: dict[str, dict[str, str]] = {}
    for task in flow.tasks:
        kwargs = task_kwargs(task, values, base, lambda ref: done[ref.task][ref.output])
        log.info("xpuflow step %s (task %s, in-process): %s", task.step.name, task.name,
                 " ".join(f"{flag(k)} {v}" for k, v in kwargs.items()))
        task.step.fn(**kwargs)
        done[task.name] = {out: kwargs[out] for out in task.step.outputs}
    return done
