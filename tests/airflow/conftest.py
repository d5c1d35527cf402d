"""Fixtures of the Airflow tests (Airflow venv)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xpuflow.airflow import MODE_ENV

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory) -> dict[str, str]:
    """A temporary AIRFLOW_HOME with an initialised SQLite metadata DB; local mode; outputs under it."""
    home = tmp_path_factory.mktemp("airflow_home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        MODE_ENV: "local",
        "XPUFLOW_LOCAL_ROOT": str(home / "runs"),
    }
    out = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, text=True,
                         check=False, timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return env
