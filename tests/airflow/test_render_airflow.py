"""Airflow renderer, in the Airflow venv against the newest cncf-kubernetes provider.

Pods are built with KubernetesPodOperator's own build_pod_request_obj(dry_run=True)
and validated like the Kubernetes renderer's output.
"""

from __future__ import annotations

import inspect

import airflow_pods
import kubernetes_validate
import matrix
import pss
import pytest
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

from xpuflow import Cluster, Compute, RenderError
from xpuflow.render import airflow as render_airflow

VERSIONS = ("1.31", "1.33", "1.35")


@pytest.fixture(scope="module")
def pods():
    return airflow_pods.all_pods()


def test_every_argument_we_pass_exists_on_the_operator():
    # pins the edge: the provider once renamed `resources` to `container_resources`
    accepted = set(inspect.signature(KubernetesPodOperator.__init__).parameters)
    accepted |= {"retries"}  # BaseOperator
    for _, _, placement in matrix.renderable():
        assert set(render_airflow.pod_kwargs(placement)) <= accepted


@pytest.mark.parametrize("version", VERSIONS)
def test_built_pods_pass_strict_validation(pods, version):
    for key, pod in pods.items():
        kubernetes_validate.validate(pod, version, strict=True)


def test_built_pods_are_restricted(pods):
    for key, pod in pods.items():
        assert pss.violations(pod["spec"]) == [], key


def test_built_pod_carries_the_placement():
    compute = Compute.gpu(model="l4", spot=True, timeout=5400, retries=2, priority_class="batch-high", grace_period=60)
    placement = Cluster.load("gke").place(compute)
    op_kwargs = render_airflow.operator_kwargs(placement, step="train")
    assert op_kwargs["retries"] == 2
    pod = airflow_pods.build_pod(placement, task_id="train")
    spec = pod["spec"]
    container = spec["containers"][0]
    assert container["resources"] == {"requests": placement.requests, "limits": placement.limits}
    assert spec["nodeSelector"] == placement.node_selector
    assert spec["priorityClassName"] == "batch-high"
    assert spec["terminationGracePeriodSeconds"] == 60
    assert spec["activeDeadlineSeconds"] == 5400
    assert spec["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}}]
    assert container["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert spec["automountServiceAccountToken"] is False
    assert pod["metadata"]["labels"]["xpuflow.io/node-pool"] == "gpu-l4-training"


def test_cpu_affinity_reaches_the_pod():
    placement = Cluster.load("aks").place(Compute.cpu())
    pod = airflow_pods.build_pod(placement, task_id="prep")
    assert pod["spec"]["affinity"] == placement.affinity


def test_multi_host_is_refused():
    placement = Cluster.load("gke").place(Compute.tpu(version="v6e", topology="4x4"))
    with pytest.raises(RenderError, match=r"step 'train': KubernetesPodOperator cannot express multi_host"):
        render_airflow.operator_kwargs(placement, step="train")


def test_plain_kwargs_need_no_kubernetes_client():
    kwargs = render_airflow.pod_kwargs(Cluster.load("eks").place(Compute.npu(device="aws-inferentia2")))
    assert kwargs["container_resources"]["limits"]["aws.amazon.com/neuron"] == "1"
    assert kwargs["tolerations"] == [{"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"}]
