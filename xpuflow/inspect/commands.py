"""``xpuflow lint | plan FILE`` for a compiled KFP pipeline or an Airflow DAG file (what the CLI calls)."""

from __future__ import annotations

import sys

from ..cluster import Cluster
from ..plan import format_table, to_json
from . import lint_pods, plan_pods, read
from .dagfile import is_dag_file

__all__ = ["lint_file", "plan_file"]


def lint_file(path: str, cluster_name: str, backend: str = "kfp") -> int:
    """Lint ``path``; a DAG file's tasks run on Airflow, whatever ``backend`` says."""
    if is_dag_file(path):
        backend = "airflow"
    cluster = Cluster.load(cluster_name)
    name, pods = read(path)
    findings = lint_pods(pods, cluster, backend)
    for f in findings:
        print(f)
    errors = sum(f.level == "error" for f in findings)
    print(f"{name} ({path}, {len(pods)} task(s)) on {cluster_name}: {errors} error(s), "
          f"{len(findings) - errors} warning(s)")
    return 1 if errors else 0


def plan_file(path: str, cluster_name: str, output: str = "table", strict: bool = False) -> int:
    cluster = Cluster.load(cluster_name)
    _, pods = read(path)
    rows = plan_pods(pods, cluster)
    sys.stdout.write(format_table(cluster, rows) if output == "table" else to_json(rows) + "\n")
    return 1 if strict and any(r.problem for r in rows) else 0
