"""A sharded task whose count is a flow parameter: the width of its ``.expand()`` read when the DAG runs.

``embed(...).with_shards(shards)`` (``shards`` a flow parameter) becomes two Airflow tasks: ``<task>-shards``,
a small ``PythonOperator`` that reads the run's ``params`` (a trigger's ``conf`` included) and returns one
value per shard, and the step's operator mapped over that list (``.expand(arguments=...)`` for pods,
``.expand(op_kwargs=...)`` in local mode). A count given at build time (``with_shards(3)``,
``Flow.with_shards``) needs no such task: the list is written into the DAG.

The list task's ``op_kwargs`` are templated like any task's, so the pod arguments it hands on are already
rendered (the DAG params in them filled in) when the mapped pods start.
"""

from __future__ import annotations

import re
from typing import Any

from ..dsl.command import flag
from ..dsl.local import spec_list

__all__ = ["shard_values", "list_task"]


def _count(text: Any, param: str, task: str) -> int:
    """The shard count from the rendered parameter: a whole number from 1 to the mapping limits."""
    from ..steps.io import StepError
    from ..steps.shards import MAX_SHARDS
    from ..errors import invalid

    limit = MAX_SHARDS
    try:
        from airflow.configuration import conf

        limit = min(limit, conf.getint("core", "max_map_length", fallback=limit))
    except ImportError:  # pragma: no cover - only called inside Airflow
        pass
    value = text.strip() if isinstance(text, str) else text
    whole = re.fullmatch(r"(-?[0-9]{1,18})(\.0*)?", value) if isinstance(value, str) else None
    if whole:  # the rendered template of an integer param, shown as the number it was; 3.0 is one to Airflow's
        value = int(whole.group(1))  # Param(type="integer") too (JSON Schema), so a trigger with it is accepted
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    count = value if isinstance(value, int) and not isinstance(value, bool) else None
    if count is None or not 1 <= count <= limit:
        raise StepError(invalid(f"parameter {param}", value, f"a whole number of shards from 1 to {limit}",
                                where=f"task {task!r}",
                                fix=f"trigger the DAG with conf {{\"{param}\": 2}} or leave its default"))
    return count


def shard_values(count: Any, base: Any, param: str, task: str, **_context: Any) -> list[Any]:
    """One value per shard for the mapped operator: ``base`` (a pod's argument list, or a local task's op_kwargs
    dict) with this shard's ``--shard I/N``; an unsharded run (count 1) gets ``base`` as it is."""
    specs = spec_list(_count(count, param, task))
    if isinstance(base, dict):
        return [{**base, "shard": s} for s in specs]
    return [[*base, flag("shard"), s] if s else list(base) for s in specs]


def list_task(dag: Any, t: Any, base: Any) -> Any:
    """The ``<task>-shards`` task of ``t`` (sharded by a flow parameter) returning the values to expand over."""
    from airflow.providers.standard.operators.python import PythonOperator

    name = t.shards_param.name
    return PythonOperator(
        task_id=f"{t.name}-shards",
        python_callable=shard_values,
        op_kwargs={"count": f"{{{{ params[{name!r}] }}}}", "base": base, "param": name, "task": t.name},
        doc_md=f"The `--shard` of each process of `{t.name}`: the DAG run's `{name}` parameter decides how many.",
        dag=dag,
    )
