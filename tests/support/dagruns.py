"""Run a DAG file's DAG with ``dag.test()`` (Airflow on SQLite) in a child process, once per trigger ``conf``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

_RUN = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
assert not bag.import_errors, bag.import_errors
runs = []
for conf in json.loads(sys.argv[4]):
    run = bag.get_dag(sys.argv[2]).test(run_conf=conf)
    states = {}
    for ti in run.get_task_instances():
        states.setdefault(ti.task_id, []).append(str(ti.state))
    runs.append({"state": str(run.state), "tasks": states, "run_id": run.run_id})
with open(sys.argv[3], "w") as out:
    json.dump(runs, out)
"""


def dag_test(dag_file: Path, dag_id: str, confs: list[dict[str, Any]], env: dict[str, str]) -> tuple[list[dict], str]:
    """Each run's state, task states (task id -> one state per map index) and run id; and the child's log."""
    result = dag_file.parent / f".{dag_id}-runs.json"
    out = subprocess.run([sys.executable, "-c", _RUN, str(dag_file), dag_id, str(result), json.dumps(confs)],
                         env={**env, "AIRFLOW__CORE__DAGS_FOLDER": str(dag_file.parent)},
                         capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    return json.loads(result.read_text()), log
