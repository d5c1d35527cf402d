"""Regression tests from trying xpuflow's Airflow side as an outsider would (a user's project in tmp_path)."""

from __future__ import annotations

from pathlib import Path

import pytest
import user_project

from xpuflow import FlowError
from xpuflow.airflow import build_dag
from xpuflow.dsl.load import load_flow


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return user_project.make(tmp_path_factory)


@pytest.mark.parametrize("root", ["/mnt/shared/xpuflow", "file:///mnt/shared/xpuflow"])
def test_cluster_mode_refuses_a_local_artifact_root(project, root):
    # each task's pod has its own disk: a downstream pod would read a directory that does not exist there
    fl = load_flow(str(project / "flows" / "nightly.py"))
    with pytest.raises(FlowError, match=r"build_dag \(cluster mode\): artifact root=.* an object-store URL"):
        build_dag(fl, cluster="eks", mode="cluster", artifact_root=root)
    assert build_dag(fl, cluster="eks", mode="cluster", artifact_root="s3://acme/x/").tasks  # a URL is fine
