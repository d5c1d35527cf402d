"""`xpuflow lint | plan dags/my_dag.py`: an Airflow user's own DAG file (KubernetesPodOperator tasks
written without xpuflow), parsed by a real DagBag, each pod built by the operator itself."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from xpuflow import Cluster
from xpuflow.cli import main
from xpuflow.errors import PipelineFileError
from xpuflow.inspect import is_inspectable, lint_pods, plan_pods, read

USER_DAG = '''
from datetime import datetime

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from kubernetes.client import models as k8s

GPU = k8s.V1Toleration(key="nvidia.com/gpu", operator="Equal", value="present", effect="NoSchedule")
SPOT = k8s.V1Toleration(key="cloud.google.com/gke-spot", operator="Equal", value="true", effect="NoSchedule")


def resources(cpu, memory, gpus=0):
    limits = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return k8s.V1ResourceRequirements(requests={"cpu": cpu, "memory": memory}, limits=limits)


with DAG("my_training", start_date=datetime(2026, 1, 1), schedule=None):
    start = EmptyOperator(task_id="start")
    prep = KubernetesPodOperator(task_id="prep", image="python:3.11", cmds=["true"],
                                 container_resources=resources("2", "4Gi"),
                                 node_selector={"cloud.google.com/gke-nodepool": "cpu-general"})
    train = KubernetesPodOperator(task_id="train", image="python:3.11", cmds=["true"],
                                  container_resources=resources("4", "16Gi", gpus=1),
                                  node_selector={"cloud.google.com/gke-nodepool": "gpu-l4-training"},
                                  tolerations=[GPU] + ([SPOT] if WITH_SPOT_TOLERATION else []))
    infer = KubernetesPodOperator(task_id="infer", image="python:3.11", cmds=["true"],
                                  container_resources=resources("2", "8Gi", gpus=1),
                                  node_selector={"cloud.google.com/gke-accelerator": GPU_LABEL},
                                  tolerations=[GPU])
    start >> prep >> train >> infer
'''


def dag_file(tmp_path, *, spot_toleration=True, gpu_label="nvidia-l4"):
    path = tmp_path / "my_dag.py"
    path.write_text(f"WITH_SPOT_TOLERATION = {spot_toleration}\nGPU_LABEL = {gpu_label!r}\n" + textwrap.dedent(USER_DAG))
    return path


def test_a_correct_user_dag_lints_clean_and_plans(tmp_path):
    path = dag_file(tmp_path)
    assert is_inspectable(path)
    name, pods = read(path)
    assert name == "my_training" and [p.task for p in pods] == ["prep", "train", "infer"]  # EmptyOperator has no pod
    assert lint_pods(pods, Cluster.load("gke")) == []
    rows = {r.step: r.placement for r in plan_pods(pods, Cluster.load("gke"))}
    assert {k: (p.pool, p.spot) for k, p in rows.items()} == {
        "prep": ("cpu-general", False), "train": ("gpu-l4-training", True), "infer": ("gpu-l4-inference", False)}


def test_each_mistake_in_a_user_dag_is_one_error(tmp_path):
    path = dag_file(tmp_path, spot_toleration=False, gpu_label="nvidia-tesla-v100")
    findings = lint_pods(read(path)[1], Cluster.load("gke"))
    errors = {f.step: f.message for f in findings if f.level == "error"}
    assert len(findings) == len(errors) == 2
    assert "selects node pool 'gpu-l4-training', tainted cloud.google.com/gke-spot=true:NoSchedule" in errors["train"]
    assert "cloud.google.com/gke-accelerator=nvidia-tesla-v100: no node pool of cluster 'gke' has that value" in errors["infer"]


def test_cli_lints_a_dag_file(tmp_path, capsys):
    assert main(["lint", str(dag_file(tmp_path, spot_toleration=False)), "--cluster", "gke", "--backend", "airflow"]) == 1
    assert capsys.readouterr().out.strip().endswith("on gke: 1 error(s), 0 warning(s)")
    assert main(["plan", str(dag_file(tmp_path)), "--cluster", "gke"]) == 0
    assert "gpu-l4-inference" in capsys.readouterr().out


def test_a_dag_file_that_does_not_import_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "broken_dag.py"
    path.write_text("from airflow.sdk import DAG\nraise RuntimeError('boom')\n")
    with pytest.raises(PipelineFileError, match=r"Airflow cannot import it: RuntimeError: boom"):
        read(path)
    assert main(["lint", str(path), "--cluster", "gke"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("cluster", ["gke", "eks"])
def test_xpuflows_own_dag_files_lint_clean(cluster, monkeypatch, capsys):
    monkeypatch.setenv("XPUFLOW_CLUSTER", cluster)
    path = Path(__file__).resolve().parents[2] / "dags" / "train_gpu_export_npu.py"
    assert main(["lint", str(path), "--cluster", cluster]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines() == [f"train_gpu_export_npu ({path}, 4 task(s)) on {cluster}: 0 error(s), 0 warning(s)"]


MAPPED_DAG = '''
from datetime import datetime

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG
from kubernetes.client import models as k8s

GPU = k8s.V1Toleration(key="nvidia.com/gpu", operator="Equal", value="present", effect="NoSchedule")
RES = k8s.V1ResourceRequirements(requests={"cpu": "2", "memory": "8Gi"}, limits={"nvidia.com/gpu": "1"})
HUGE = k8s.V1ResourceRequirements(requests={"cpu": "2", "memory": "900Gi"}, limits={"nvidia.com/gpu": "1"})

with DAG("mapped", start_date=datetime(2026, 1, 1), schedule=None):
    files = PythonOperator(task_id="files", python_callable=lambda: [["a"], ["b"]])
    # a literal fan-out over two accelerators, one of which the cluster does not have
    KubernetesPodOperator.partial(task_id="score", image="python:3.11", cmds=["true"], container_resources=RES,
                                  tolerations=[GPU]).expand(node_selector=[
        {"cloud.google.com/gke-accelerator": "nvidia-l4"}, {"cloud.google.com/gke-accelerator": "nvidia-h300"}])
    # a fan-out over an upstream's list (known when the DAG runs): its pods are built from the partial arguments
    KubernetesPodOperator.partial(task_id="embed", image="python:3.11", cmds=["true"], container_resources=HUGE,
                                  node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"}).expand(
        arguments=files.output)
'''


def test_mapped_pod_tasks_are_linted_not_skipped(tmp_path):
    path = tmp_path / "mapped.py"
    path.write_text(MAPPED_DAG)
    _, pods = read(path)
    assert [p.task for p in pods] == ["score[0]", "score[1]", "embed"]
    errors = {f.step: f.message for f in lint_pods(pods, Cluster.load("gke")) if f.level == "error"}
    assert set(errors) == {"embed", "score[1]"}, errors
    assert "nvidia-h300" in errors["score[1]"]  # the map index that can never schedule
    assert "fits no node" in errors["embed"]  # 900Gi on an L4 node (its GPU toleration GKE's admission adds)
