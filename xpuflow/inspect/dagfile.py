"""Read an Airflow DAG file's KubernetesPodOperator tasks into ``TaskPod``s (needs Airflow installed).

Each pod is built by the operator itself (``build_pod_request_obj(dry_run=True)``), so
``full_pod_spec``, ``pod_template_file`` and the typed arguments are merged as Airflow
merges them; a mapped pod task (``.partial().expand()``) is built as its map indexes would be.
Tasks of other operators run on the worker, not in a pod of their own.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

from ..errors import PipelineFileError
from .pod import TaskPod, from_pod_spec

__all__ = ["read_dag_file", "is_dag_file"]

MAX_MAPPED = 64  # map indexes of one mapped task built to lint them (distinct pods are kept)
_IMPORTS_AIRFLOW = re.compile(r"^\s*(from|import)\s+(xpuflow\.)?airflow\b", re.MULTILINE)


def is_dag_file(path: str | os.PathLike[str]) -> bool:
    """A ``.py`` file that imports Airflow, or builds its DAG with ``xpuflow.airflow`` (a flow file does neither)."""
    p = Path(path)
    if p.suffix != ".py" or not p.is_file():
        return False
    try:
        return bool(_IMPORTS_AIRFLOW.search(p.read_text(encoding="utf-8", errors="replace")))
    except OSError:
        return False


def read_dag_file(path: str | os.PathLike[str]) -> tuple[str, list[TaskPod]]:
    """``(DAG ids, task pods)``; task names are ``dag_id.task_id`` when the file holds several DAGs."""
    where = os.fspath(path)
    if not Path(where).is_file():
        raise PipelineFileError(f"DAG file {where!r}: no such file. Fix: check the path.")
    try:
        from airflow.dag_processing.dagbag import DagBag
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
        from kubernetes.client import ApiClient
    except ImportError as e:
        raise PipelineFileError(
            f"DAG file {where!r}: reading it needs Apache Airflow and its cncf-kubernetes provider (cannot import "
            f"{e.name}). Fix: run xpuflow where your DAGs run (pip install 'xpuflow[airflow]')."
        ) from e
    # Airflow logs parsing, import tracebacks and pod building where lint prints its findings and its one-line
    # error; what matters of them is in those. Quiet for the read only.
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return _read(where, DagBag, KubernetesPodOperator, ApiClient())
    finally:
        logging.disable(previous)


def _read(where: str, dagbag: Any, operator: type, client: Any) -> tuple[str, list[TaskPod]]:
    bag = dagbag(dag_folder=where)
    if bag.import_errors:
        first = next(iter(bag.import_errors.values())).strip().splitlines()[-1]
        raise PipelineFileError(f"DAG file {where!r}: Airflow cannot import it: {first[:300]}. Fix: run "
                                f"`python {where}` and correct the error.")
    if not bag.dags:
        raise PipelineFileError(f"DAG file {where!r}: defines no DAG. Fix: lint the file that creates the DAG object.")
    several = len(bag.dags) > 1
    pods = []
    for dag_id, dag in sorted(bag.dags.items()):
        for task in dag.tasks:
            name = f"{dag_id}.{task.task_id}" if several else task.task_id
            operators, total = _operators(task, operator)
            try:
                specs = [client.sanitize_for_serialization(op.build_pod_request_obj(dry_run=True)).get("spec") or {}
                         for op in operators]
            except Exception as e:  # noqa: BLE001 - the operator's own error, reported as a finding's cause
                raise PipelineFileError(f"DAG file {where!r}: task {name!r}: KubernetesPodOperator cannot build its "
                                        f"pod: {type(e).__name__}: {str(e)[:200]}") from e
            pods += _distinct(name, specs, total, mapped=not isinstance(task, operator))
    return ", ".join(sorted(bag.dags)), pods


def _distinct(name: str, specs: list[dict[str, Any]], total: int | None, mapped: bool) -> list[TaskPod]:
    """One TaskPod per distinct pod spec of a task, with how many of its pods have it (plan prices them all)."""
    distinct = [spec for i, spec in enumerate(specs) if spec not in specs[:i]]
    counts = [specs.count(spec) for spec in distinct]
    notes: tuple[str, ...] = ()
    if total is None and mapped:
        notes = (f"mapped over a value an upstream task returns: how many pods run is known when the DAG runs; "
                 f"planned as the {len(specs)} the file's own lists give (at least)",)
    elif total is not None and total > len(specs):  # past the map indexes built to check
        counts[-1] += total - len(specs)
        notes = (f"mapped into {total} pods: the first {len(specs)} are built and checked, the other "
                 f"{total - len(specs)} are planned like the last one",)
    fanout = "map indexes of a mapped task" if mapped else ""
    return [from_pod_spec(name if len(distinct) == 1 else f"{name}[{i}]", spec, notes, pods=count, fanout=fanout)
            for i, (spec, count) in enumerate(zip(distinct, counts))]


def _operators(task: Any, operator: type) -> tuple[list[Any], int | None]:
    """The pod operators a task stands for: itself, or a mapped task's (``.partial().expand()``) as its map
    indexes would be built: one per combination of the values known when the file is parsed (up to
    ``MAX_MAPPED``); values an upstream task returns at run time are left out (the partial arguments decide
    the placement, which is what lint reads). Also how many map indexes the task has, when the file says (None:
    known when the DAG runs)."""
    if isinstance(task, operator):
        return [task], 1
    if not (isinstance(getattr(task, "operator_class", None), type) and issubclass(task.operator_class, operator)):
        return [], 0  # another operator: runs on the worker, not in a pod of its own
    decorated = getattr(task, "op_kwargs_expand_input", None)  # @task.kubernetes(...).expand(x=...): its op_kwargs
    value = getattr(decorated or task.expand_input, "value", None)
    if isinstance(value, dict):  # .expand(**lists): every combination of the literal lists
        known = {k: list(v) for k, v in value.items() if isinstance(v, (list, tuple)) and _known(v)}
        combos = [dict(zip(known, values)) for values in itertools.islice(itertools.product(*known.values()),
                                                                          MAX_MAPPED)]
        total = math.prod(len(v) for v in known.values()) if len(known) == len(value) else None
    elif isinstance(value, (list, tuple)):  # .expand_kwargs([{...}, ...]): an upstream's value in one is left out
        combos = [{k: x for k, x in v.items() if _known(x)} for v in value[:MAX_MAPPED] if isinstance(v, dict)]
        total = len(value)
    else:  # .expand_kwargs(an upstream's list): known when the DAG runs
        combos, total = [], None
    if total == 0:
        return [], 0  # mapped over nothing: Airflow skips the task, no pod runs
    return [task.unmap({"op_kwargs": resolve} if decorated is not None else resolve)
            for resolve in combos or [{}]], total


def _known(value: Any) -> bool:
    """Whether a mapped value is known when the file is parsed: no upstream's XCom (``task.output``) in it."""
    try:
        from airflow.sdk.definitions._internal.mixins import ResolveMixin as late
    except ImportError:  # pragma: no cover - another Airflow layout
        from airflow.sdk.definitions.xcom_arg import XComArg as late
    if isinstance(value, late):
        return False
    if isinstance(value, dict):
        return all(_known(v) for v in value.values())
    return all(_known(v) for v in value) if isinstance(value, (list, tuple)) else True
