"""A DAG file compiled with XPUFLOW_PGVECTOR_SECRET set reads the DSN from that Secret, even where the
DAG processor has no such variable (the reference is written into the file; the value never is)."""

from __future__ import annotations

from airflow.dag_processing.dagbag import DagBag
from kubernetes.client import ApiClient

from xpuflow.airflow import MODE_ENV, write_dag_file


def test_the_compiled_secret_reference_reaches_the_index_pod(tmp_path, monkeypatch):
    monkeypatch.setenv("XPUFLOW_PGVECTOR_SECRET", "rag-db")
    monkeypatch.setenv("XPUFLOW_PGVECTOR_DSN", "postgresql://u:hunter2@db/rag")
    path = write_dag_file("rag_index", "gke", tmp_path / "dags" / "rag_index.py")
    assert "hunter2" not in path.read_text()
    monkeypatch.delenv("XPUFLOW_PGVECTOR_SECRET")  # the DAG processor's environment
    monkeypatch.delenv("XPUFLOW_PGVECTOR_DSN")
    monkeypatch.setenv(MODE_ENV, "cluster")
    bag = DagBag(dag_folder=str(path.parent))
    assert bag.import_errors == {}
    dag = bag.dags["rag_index"]
    ops = {t: dag.get_task(t) for t in ("chunk", "embed", "index")}
    ops["embed"] = ops["embed"].unmap({"arguments": ["--shard", "0/2"]})  # mapped: its shards come from a parameter
    pods = {t: ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True)) for t, op in ops.items()}
    refs = {t: [e for e in p["spec"]["containers"][0].get("env") or [] if "valueFrom" in e] for t, p in pods.items()}
    assert refs == {"chunk": [], "embed": [], "index": [
        {"name": "XPUFLOW_PGVECTOR_DSN", "valueFrom": {"secretKeyRef": {"name": "rag-db", "key": "dsn"}}}]}
