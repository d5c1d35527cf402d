from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_PY = ROOT / ".venv-airflow" / "bin" / "python"


@pytest.fixture(scope="session")
def airflow_pods(tmp_path_factory) -> dict:
    """The matrix's pods as Airflow's KubernetesPodOperator builds them, from the Airflow venv.

    kfp 2.17 and the newest cncf-kubernetes provider cannot share a venv, so this
    runs a helper under .venv-airflow (built by `make test`). Missing venv = failure.
    """
    if not AIRFLOW_PY.exists():
        pytest.fail(f"{AIRFLOW_PY} is missing: run `make test` (or `make venv-airflow`) to build it")
    out = tmp_path_factory.mktemp("airflow") / "pods.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "support"), str(ROOT)])}
    proc = subprocess.run(
        [str(AIRFLOW_PY), str(ROOT / "tests" / "support" / "airflow_pods.py"), str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> Path:
    """The embedded digits data set, preprocessed once for the whole session (read-only for tests)."""
    from xpuflow.steps.preprocess import preprocess

    out = tmp_path_factory.mktemp("digits")
    preprocess(output=str(out))
    return out


@pytest.fixture(scope="session")
def docs(tmp_path_factory) -> Path:
    """The corpus shipped in the package, chunked once (read-only for tests)."""
    from xpuflow.steps.rag.chunk import chunk

    out = tmp_path_factory.mktemp("chunks")
    chunk(output=str(out))
    return out


@pytest.fixture(scope="session")
def encoder():
    from xpuflow.steps.rag.encoder import load_encoder

    return load_encoder()


@pytest.fixture(scope="session")
def vectors(docs, encoder, tmp_path_factory) -> Path:
    """The shipped corpus embedded once, in shards of 8 chunks (read-only for tests)."""
    from xpuflow.steps.rag.embed import embed

    out = tmp_path_factory.mktemp("embeddings")
    embed(data=str(docs), output=str(out), shard_size=8)
    return out


@pytest.fixture(scope="session")
def pg() -> str:
    """A PostgreSQL + pgvector server for the session: a connection string with a password, for a role of its own
    (the Unix socket trusts it either way; the password is there to check that it never reaches an output)."""
    import psycopg
    from pgserver import postgres_server

    with postgres_server() as superuser:
        with psycopg.connect(superuser, autocommit=True) as conn:
            conn.execute("CREATE ROLE indexer LOGIN SUPERUSER PASSWORD 's3cret-pw'")
        yield superuser.replace("postgresql://postgres@", "postgresql://indexer:s3cret-pw@")
