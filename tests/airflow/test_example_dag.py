"""The Airflow user's example DAG parses in a DagBag and its pods carry the placement."""

from __future__ import annotations

from pathlib import Path

from airflow.dag_processing.dagbag import DagBag
from kubernetes.client import ApiClient

from xpuflow import Cluster, Compute

ROOT = Path(__file__).resolve().parents[2]


def test_example_dag_parses_and_places(tmp_path, monkeypatch):
    monkeypatch.setenv("XPUFLOW_CLUSTER", "gke")
    bag = DagBag(dag_folder=str(ROOT / "examples" / "airflow_my_dag.py"))
    assert bag.import_errors == {}
    dag = bag.dags["my_nightly_training"]  # from the parse; get_dag() would read the metadata DB
    train = dag.get_task("train")
    pod = ApiClient().sanitize_for_serialization(train.build_pod_request_obj(dry_run=True))
    want = Cluster.load("gke").place(Compute.gpu(count=1, model="l4", spot=True, memory="24Gi", retries=3))
    assert pod["spec"]["nodeSelector"] == want.node_selector
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 30 and train.retries == 3
    assert train.pool == "xpuflow-gpu-gke"
    evaluate = dag.get_task("evaluate")  # made by xpuflow.airflow.task from the step's declaration
    pod = ApiClient().sanitize_for_serialization(evaluate.build_pod_request_obj(dry_run=True))
    assert pod["spec"]["containers"][0]["command"] == ["xpuflow", "step", "evaluate"]
    assert pod["spec"]["nodeSelector"] == Cluster.load("gke").place(Compute.cpu(cpu="1", memory="2Gi")).node_selector
    assert evaluate.upstream_task_ids == {"train"}
