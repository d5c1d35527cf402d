"""Kubernetes renderer: manifests pass kubernetes-validate (strict) on several minor versions."""

from __future__ import annotations

import copy

import kubernetes_validate
import matrix
import pytest
from manifests import rendered

from xpuflow import Cluster, Compute, RenderError
from xpuflow.podspec import dicts
from xpuflow.render import kubernetes

# The issue asks for at least three Kubernetes minor versions, 1.31 or newer.
VERSIONS = ("1.31", "1.33", "1.35")
MANIFESTS = rendered()


def test_matrix_renders_every_offered_kind_on_every_cluster():
    kinds = {(c, p.kind) for c, _, p in matrix.renderable()}
    for cluster, offered in matrix.KINDS_OFFERED.items():
        assert {k for c, k in kinds if c == cluster} == offered, cluster
    assert len(MANIFESTS) >= 40


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_pass_strict_schema_validation(version):
    for key, manifest in MANIFESTS.items():
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as e:  # pragma: no cover - the failure path
            pytest.fail(f"{key} on {version}: {e.message} at {list(e.path)}")


def test_strict_validation_can_fail():
    bad = copy.deepcopy(MANIFESTS["gke/gpu-training/job"])
    bad["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[0], strict=True)


def test_job_carries_every_setting():
    compute = Compute.gpu(model="l4", spot=True, timeout=7200, retries=2, priority_class="batch-high",
                          grace_period=60, ephemeral_storage="50Gi")
    p = Cluster.load("gke").place(compute)
    job = kubernetes.job(p, name="train", image=matrix.IMAGE, command=["xpuflow", "step", "train"])
    spec = job["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    assert spec["backoffLimit"] == 2 and spec["activeDeadlineSeconds"] == 7200
    assert pod["priorityClassName"] == "batch-high" and pod["terminationGracePeriodSeconds"] == 60
    assert pod["nodeSelector"] == p.node_selector and pod["tolerations"] == dicts(p.tolerations)
    assert c["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi", "ephemeral-storage": "50Gi"},
        "limits": {"cpu": "4", "memory": "16Gi", "ephemeral-storage": "50Gi", "nvidia.com/gpu": "1"},
    }
    assert c["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}}]
    assert {"name": "XPUFLOW_COMPUTE_KIND", "value": "gpu"} in c["env"]
    assert job["metadata"]["labels"]["xpuflow.io/node-pool"] == "gpu-l4-training"
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    for version in VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)


def test_rendering_is_pure_and_repeatable():
    p = Cluster.load("aks").place(Compute.cpu())
    a = kubernetes.pod(p, name="x", image=matrix.IMAGE)
    a["spec"]["nodeSelector"]["mutated"] = "yes"
    b = kubernetes.pod(p, name="x", image=matrix.IMAGE)
    assert "mutated" not in b["spec"]["nodeSelector"] and "mutated" not in p.node_selector


def test_multi_host_slice_is_refused_not_flattened():
    p = Cluster.load("gke").place(Compute.tpu(version="v5p", topology="2x2x2"))
    with pytest.raises(RenderError, match=r"step 'train': a Kubernetes Job cannot express multi_host .*JobSet"):
        kubernetes.job(p, name="train", image=matrix.IMAGE)


def test_pod_cannot_retry():
    p = Cluster.load("gke").place(Compute.cpu(retries=2))
    with pytest.raises(RenderError, match=r"cannot express retries .*render a Job"):
        kubernetes.pod(p, name="prep", image=matrix.IMAGE)


def test_user_env_may_not_contradict_the_placement():
    p = Cluster.load("gke").place(Compute.tpu(version="v5e", topology="1x1"))
    pod = kubernetes.pod(p, name="t", image=matrix.IMAGE, env={"EXTRA": "1"})
    assert {"name": "EXTRA", "value": "1"} in pod["spec"]["containers"][0]["env"]
    with pytest.raises(RenderError, match=r"env\['PJRT_DEVICE'\]='CPU' conflicts"):
        kubernetes.pod(p, name="t", image=matrix.IMAGE, env={"PJRT_DEVICE": "CPU"})
