"""Local mode: one step run in the Airflow worker's own process.

The callable of each local-mode ``PythonOperator``. The step's options come from the
DAG run's params, its inputs are the output directories its upstream tasks returned
through XCom, and its output goes to ``<root>/<dag_id>/<run_id>/<task_id>``, where
root is the DAG's ``artifact_root``, else ``$XPUFLOW_LOCAL_ROOT`` (read when the task
runs), else ``<tmp>/xpuflow-airflow``. The task's XCom return value is that path.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["LOCAL_ROOT_ENV", "local_root", "run_dir", "run_step"]

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


def run_step(step: str, options: Mapping[str, str], inputs: Mapping[str, str], root: str | None = None,
             **context: Any) -> str:
    """Run xpuflow step ``step`` in this process; returns (as the task's XCom) its output directory.

    ``options`` maps a step option to the DAG param holding its value; ``inputs`` maps
    a step option to the upstream task whose output directory it reads.
    """
    from ..steps import step_function
    from ..steps.io import StepError

    ti = context["ti"]
    params = context["params"]
    kwargs: dict[str, Any] = {option: params[name] for option, name in options.items()}
    for option, upstream in inputs.items():
        path = ti.xcom_pull(task_ids=upstream)
        if not path:
            raise StepError(f"task {ti.task_id!r}: upstream task {upstream!r} returned no output directory "
                            "through XCom. Fix: run the whole DAG, or clear the upstream task too.")
        kwargs[option] = path
    out = run_dir(root, ti.dag_id, context["run_id"]) / ti.task_id
    kwargs["output"] = str(out)
    log.info("xpuflow step %s (local mode, in-process): %s", step,
             " ".join(f"--{k.replace('_', '-')} {v}" for k, v in kwargs.items()))
    step_function(step)(**kwargs)
    log.info("xpuflow step %s: done; output in %s", step, out)
    return str(out)
