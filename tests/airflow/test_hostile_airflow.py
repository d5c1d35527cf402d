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


INIT_DAG = '''
from datetime import datetime
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import DAG
from kubernetes.client import models as k8s

GPU = [k8s.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]
POOL = {"cloud.google.com/gke-nodepool": "gpu-l4-training-ondemand"}
WARM = k8s.V1Pod(spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base")], init_containers=[
    k8s.V1Container(name="warm", image="x", resources=k8s.V1ResourceRequirements(requests={"cpu": "INIT_CPU"}))]))
with DAG("init_heavy", start_date=datetime(2026, 1, 1), schedule=None):
    KubernetesPodOperator(task_id="train", image="python:3.11", cmds=["true"], full_pod_spec=WARM,
                          container_resources=k8s.V1ResourceRequirements(requests={"cpu": "4", "memory": "16Gi"},
                                                                         limits={"nvidia.com/gpu": "1"}),
                          node_selector=POOL, tolerations=GPU)
    KubernetesPodOperator(task_id="limits_only", image="python:3.11", cmds=["true"],
                          container_resources=k8s.V1ResourceRequirements(limits={"cpu": "2", "memory": "4Gi"}),
                          node_selector={"cloud.google.com/gke-nodepool": "cpu-general"})
'''


def test_lint_counts_init_containers_and_every_container_of_a_dag_pod(tmp_path):
    # only the first container was read: an init container asking more than any node has (the pod stays Pending)
    # linted clean, and a container with limits only (requests default to them) was called BestEffort
    from xpuflow import Cluster
    from xpuflow.inspect import lint_pods, read

    path = tmp_path / "init_heavy.py"
    path.write_text(INIT_DAG.replace("INIT_CPU", "500"))
    _, pods = read(path)
    train, limits_only = pods
    assert train.requests == {"cpu": "500", "memory": "16Gi", "nvidia.com/gpu": "1"}  # a request defaults to its limit
    assert limits_only.requests == {"cpu": "2", "memory": "4Gi"}
    findings = lint_pods(pods, Cluster.load("gke"))
    assert [(f.level, f.step) for f in findings] == [("error", "train")], findings
    assert "requests cpu=500, memory=16Gi, which fits no node" in findings[0].message
    path.write_text(INIT_DAG.replace("INIT_CPU", "1"))  # a small init container: the containers' sum counts
    assert [f for f in lint_pods(read(path)[1], Cluster.load("gke")) if f.level != "info"] == []


@pytest.mark.parametrize("mode", ["cluster", "local"])
def test_one_step_as_a_task_refuses_arguments_its_pod_would_drop(project, mode):
    # fit(model="s3://mine") became `--model s3://mine --model <root>/...`: the user's output silently ignored
    from acme_ml.steps import fit
    from airflow.sdk import DAG

    from xpuflow.airflow import task

    with DAG("mine", schedule=None) as dag:
        with pytest.raises(FlowError, match=r"task 'fit': model= is an Output of fit"):
            task(fit, dag=dag, cluster="eks", mode=mode, data="s3://acme/prep", model="s3://acme/mine")
        with pytest.raises(FlowError, match=r"task 'fit': argument='epoch' is not valid"):
            task(fit, dag=dag, cluster="eks", mode=mode, data="s3://acme/prep", epoch=3)
        with pytest.raises(FlowError, match=r"task 'fit': input\(s\) data not given"):
            task(fit, dag=dag, cluster="eks", mode=mode)
        assert task(fit, dag=dag, cluster="eks", mode=mode, data="s3://acme/prep", scale="{{ params.s }}")


@pytest.mark.parametrize(("image", "pattern"), [
    ({"cuda": "registry.example/me/train:1"}, r"image='cuda' is not valid: a key of the mapping: a compute kind"),
    ({"gpu": "registry.example/me/train:1", "gpuu": "x/y:1"}, r"image='gpuu' is not valid"),
    ("", r"image='' is not valid: an image reference"),
])
def test_an_image_mapping_key_that_is_not_a_compute_kind_is_refused(project, image, pattern):
    # image={"cuda": ...} (xpuflow's own name for the GPU image class) left the GPU task on the default image
    fl = load_flow(str(project / "flows" / "nightly.py"))
    with pytest.raises(FlowError, match=pattern):
        build_dag(fl, cluster="eks", mode="cluster", artifact_root="s3://acme/x", image=image)
    dag = build_dag(fl, cluster="eks", mode="cluster", artifact_root="s3://acme/x",
                    image={"gpu": "registry.example/me/train:1"})
    assert dag.get_task("fit").image == "registry.example/me/train:1"
