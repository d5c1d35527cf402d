"""Local mode: one step run in the Airflow worker's own process.

The callable of each local-mode ``PythonOperator``. The step's scalars come from the
DAG run's params (or constants), its inputs are the output directories its upstream
tasks returned through XCom, and its outputs go to ``<root>/<dag_id>/<run_id>/<task_id>``
(the layout of :mod:`xpuflow.dsl.command`), where root is the DAG's ``artifact_root``,
else ``$XPUFLOW_LOCAL_ROOT`` (read when the task runs), else ``<tmp>/xpuflow-airflow``.
The task's XCom return value maps each output to its directory.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["LOCAL_ROOT_ENV", "local_root", "run_dir", "run_step", "serialise"]

LOCAL_ROOT_ENV = "XPUFLOW_LOCAL_ROOT"

log = logging.getLogger("xpuflow.airflow")


def local_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Where local-mode runs write: ``root``, else ``$XPUFLOW_LOCAL_ROOT``, else ``<tmp>/xpuflow-airflow``."""
    return Path(root or os.environ.get(LOCAL_ROOT_ENV) or Path(tempfile.gettempdir(), "xpuflow-airflow"))


def _safe(text: str) -> str:
    """A run id as one path component (run ids carry ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def run_dir(root: str | os.PathLike[str] | None, dag_id: str, run_id: str) -> Path:
    """The directory of one DAG run; each task writes to a subdirectory named after it."""
    return local_root(root) / _safe(dag_id) / _safe(run_id)


def serialise(task: Any) -> dict[str, list[Any]]:
    """A task's arguments as plain data for op_kwargs: ``["param", name]``, ``["output", task, output]`` or
    ``["value", v]``."""
    from ..dsl.flow import FlowParam, OutputRef

    out: dict[str, list[Any]] = {}
    for key, value in task.args.items():
        if isinstance(value, FlowParam):
            out[key] = ["param", value.name]
        elif isinstance(value, OutputRef):
            out[key] = ["output", value.task, value.output]
        else:
            out[key] = ["value", value]
    return out


def run_step(step: str, arguments: Mapping[str, list[Any]], root: str | None = None, shard: str = "",
             **context: Any) -> dict[str, str]:
    """Run ``step`` (its import path) in this process; returns (as the task's XCom) its output directories.
    ``shard``: ``I/N`` for one mapped task of a sharded step (all N write the one output)."""
    from ..dsl.flow import FlowParam, OutputRef, Task
    from ..dsl.load import load_step
    from ..dsl.local import task_kwargs
    from ..steps.io import StepError

    ti, params = context["ti"], context["params"]
    the_step = load_step(step)
    args: dict[str, Any] = {}
    for key, (kind, *rest) in arguments.items():
        args[key] = FlowParam(rest[0], object, None) if kind == "param" else OutputRef(rest[0], rest[1]) \
            if kind == "output" else rest[0]

    def upstream(ref: OutputRef) -> str:
        outputs = ti.xcom_pull(task_ids=ref.task)
        if outputs is not None and not isinstance(outputs, Mapping):  # a sharded (mapped) upstream: one per shard
            outputs = next(iter(outputs), None)
        if not outputs or ref.output not in outputs:
            raise StepError(f"task {ti.task_id!r}: upstream task {ref.task!r} returned no output directory "
                            "through XCom. Fix: run the whole DAG, or clear the upstream task too.")
        return outputs[ref.output]

    base = str(run_dir(root, ti.dag_id, context["run_id"]))
    kwargs = task_kwargs(Task(ti.task_id, the_step, args), params, base, upstream)
    log.info("xpuflow step %s (local mode, in-process): %s", step,
             " ".join(f"--{k.replace('_', '-')} {v}" for k, v in kwargs.items()))
    the_step.fn(**kwargs, **({"shard": shard} if shard else {}))
    outputs = {out: kwargs[out] for out in the_step.outputs}
    log.info("xpuflow step %s: done; outputs %s", step, outputs)
    return outputs
