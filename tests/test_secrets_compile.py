"""The documented secret variable reaches every compiled form, by reference only.

``XPUFLOW_PGVECTOR_SECRET=<secret>`` when ``rag_index`` is compiled gives its index task
the Secret's key ``dsn`` as XPUFLOW_PGVECTOR_DSN: a ``secretAsEnv`` in the KFP IR, a
``secretKeyRef`` in the Kubernetes Job, and ``secret_env=`` written into the generated
Airflow DAG file (so the DAG processor needs no such variable; tests/airflow reads the
pods). A DSN set in the environment at compile time never enters any output or message.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

SECRET = "rag-db"
PASSWORD = "hunter2-never-in-output"
DSN = f"postgresql://indexer:{PASSWORD}@db.internal:5432/rag"


def compile_rag(tmp_path: Path, backend: str, suffix: str, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / f"rag_index.{suffix}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("XPUFLOW_PGVECTOR")}
    proc = subprocess.run([sys.executable, "-m", "xpuflow", "compile", "rag_index", "--backend", backend,
                           "--cluster", "gke", "-o", str(out)], capture_output=True, text=True,
                          env={**clean, **env}, timeout=300)
    assert PASSWORD not in proc.stdout + proc.stderr
    return proc, out


def executors_with_secrets(ir: dict) -> dict[str, list]:
    executors = ir["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return {name: spec["secretAsEnv"] for name, spec in executors.items() if spec.get("secretAsEnv")}


def test_kfp_index_task_reads_the_dsn_from_the_secret(tmp_path):
    proc, out = compile_rag(tmp_path, "kfp", "yaml", XPUFLOW_PGVECTOR_SECRET=SECRET, XPUFLOW_PGVECTOR_DSN=DSN)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert PASSWORD not in text
    docs = list(yaml.safe_load_all(text))
    secrets = executors_with_secrets(docs[1])
    assert list(secrets) == ["exec-index"], secrets
    (entry,) = secrets["exec-index"]
    assert entry["secretName"] == SECRET
    assert entry["keyToEnv"] == [{"envVar": "XPUFLOW_PGVECTOR_DSN", "secretKey": "dsn"}]


def test_kfp_without_the_variable_has_no_secret(tmp_path):
    proc, out = compile_rag(tmp_path, "kfp", "yaml")
    assert proc.returncode == 0, proc.stderr
    assert executors_with_secrets(list(yaml.safe_load_all(out.read_text()))[1]) == {}


def test_k8s_index_job_reads_the_dsn_from_the_secret(tmp_path):
    proc, out = compile_rag(tmp_path, "k8s", "yaml", XPUFLOW_PGVECTOR_SECRET=SECRET, XPUFLOW_PGVECTOR_DSN=DSN)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert PASSWORD not in text
    jobs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(text) if d and d["kind"] == "Job"}
    refs = {name: [e for e in job["spec"]["template"]["spec"]["containers"][0]["env"] if "valueFrom" in e]
            for name, job in jobs.items()}
    assert {name for name, r in refs.items() if r} == {"rag-index-2-index"}, refs
    assert refs["rag-index-2-index"] == [
        {"name": "XPUFLOW_PGVECTOR_DSN", "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "dsn"}}}]
    kubernetes_validate.validate(jobs["rag-index-2-index"], "1.35", strict=True)


def test_airflow_dag_file_carries_the_secret_reference(tmp_path):
    proc, out = compile_rag(tmp_path, "airflow", "py", XPUFLOW_PGVECTOR_SECRET=SECRET, XPUFLOW_PGVECTOR_DSN=DSN)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert PASSWORD not in text
    call = next(n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "build_dag")
    keywords = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    assert keywords["secret_env"] == {"index": {"XPUFLOW_PGVECTOR_DSN": (SECRET, "dsn")}}


def test_airflow_dag_file_without_the_variable_has_none(tmp_path):
    proc, out = compile_rag(tmp_path, "airflow", "py")
    assert proc.returncode == 0, proc.stderr
    assert "secret_env" not in out.read_text()


@pytest.mark.parametrize("secret", ["Rag DB", "rag_db", "-rag", "x" * 254])
def test_a_secret_name_kubernetes_would_refuse_is_one_line(tmp_path, secret):
    proc, out = compile_rag(tmp_path, "k8s", "yaml", XPUFLOW_PGVECTOR_SECRET=secret, XPUFLOW_PGVECTOR_DSN=DSN)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "with_secret_env(XPUFLOW_PGVECTOR_DSN)" in proc.stderr and "lowercase DNS subdomain" in proc.stderr
    assert not out.exists()


def test_secret_env_in_a_manifest_cannot_shadow_a_plain_variable():
    from xpuflow import Cluster, Compute, RenderError
    from xpuflow.render import kubernetes

    placement = Cluster.load("gke").place(Compute.cpu())
    with pytest.raises(RenderError, match=r"secret_env\['TOKEN'\]: TOKEN is also a plain env variable"):
        kubernetes.job(placement, name="t", image="i", env={"TOKEN": "x"}, secret_env={"TOKEN": ("s", "k")})
