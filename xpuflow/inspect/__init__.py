"""Lint and plan what users already have: compiled KFP pipelines and Airflow DAG files.

    xpuflow lint pipeline.yaml --cluster gke     # a compiled KFP pipeline (IR), written with or without xpuflow
    xpuflow plan pipeline.yaml --cluster gke
    xpuflow lint dags/my_dag.py --cluster gke    # KubernetesPodOperator tasks (where Airflow is installed)

Readers turn each file into neutral per-task pod requirements (:class:`TaskPod`);
:mod:`.checks` holds them against a ``Cluster`` the way kube-scheduler would.
"""

from __future__ import annotations

import os
from pathlib import Path

from .checks import lint_pods, plan_pods
from .dagfile import is_dag_file, read_dag_file
from .kfp_ir import read_ir
from .pod import TaskPod

__all__ = ["TaskPod", "read", "lint_pods", "plan_pods", "read_ir", "read_dag_file", "is_inspectable", "IR_SUFFIXES"]

IR_SUFFIXES = (".yaml", ".yml", ".json")


def is_inspectable(path: str | os.PathLike[str]) -> bool:
    """A compiled pipeline (by suffix) or a DAG file that imports Airflow."""
    return Path(path).suffix in IR_SUFFIXES or is_dag_file(path)


def read(path: str | os.PathLike[str]) -> tuple[str, list[TaskPod]]:
    """``(name, task pods)`` of a compiled KFP pipeline or an Airflow DAG file."""
    return read_ir(path) if Path(path).suffix in IR_SUFFIXES else read_dag_file(path)
