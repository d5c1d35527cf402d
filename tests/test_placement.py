"""Placement: pool choice, requests/limits, selectors, tolerations, affinity, cost."""

from __future__ import annotations

import pytest

from xpuflow import Cluster, Compute, Placement
from xpuflow.podspec import dicts

RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": False,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def place(cluster: str, compute: Compute) -> Placement:
    return Cluster.load(cluster).place(compute)


def test_gke_spot_l4_training_whole_placement():
    p = place("gke", Compute.gpu(count=1, model="l4", spot=True, timeout=3600, retries=3))
    assert p.to_dict() == {
        "cluster": "gke",
        "pool": "gpu-l4-training",
        "kind": "gpu",
        "hardware": "1x nvidia l4",
        "instance_type": "g2-standard-8",
        "spot": True,
        "hosts": 1,
        "resources": {
            "requests": {"cpu": "4", "memory": "16Gi"},
            "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
        },
        "nodeSelector": {
            "cloud.google.com/gke-nodepool": "gpu-l4-training",
            "cloud.google.com/gke-accelerator": "nvidia-l4",
            "cloud.google.com/gke-spot": "true",
        },
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"},
            {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
        ],
        "env": {"XPUFLOW_COMPUTE_KIND": "gpu", "XPUFLOW_NODE_POOL": "gpu-l4-training", "XPUFLOW_GPU_MEMORY_GIB": "24"},
        "labels": {"xpuflow.io/compute": "gpu", "xpuflow.io/node-pool": "gpu-l4-training"},
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}}],
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        "podSecurityContext": RESTRICTED_POD,
        "containerSecurityContext": RESTRICTED_CONTAINER,
        "timeout": 3600,
        "retries": 3,
        "priorityClassName": None,
        "terminationGracePeriodSeconds": 30,
        "price_per_hour": 0.27,  # the whole one-GPU node: the GPU is its scarcest resource
        "node_price_per_hour": 0.27,
        "options": [{"pool": "gpu-l4-training", "spot": True, "model": "l4", "price_per_hour": 0.27,
                     "node_price_per_hour": 0.27, "share": 1.0}],
        "runner_up": None,
    }


def test_cheapest_fitting_pool_wins_and_unpriced_pools_come_last():
    # on-demand L4 (0.91/h) over A100 (3.673/h) and H100 (no price in the catalog)
    assert place("gke", Compute.gpu()).pool == "gpu-l4-training-ondemand"
    # one GPU: a one-GPU g5.2xlarge (1.212/h), not an eighth of a p4d.24xlarge (21.96/8 = 2.745/h)
    assert place("eks", Compute.gpu()).pool == "gpu-a10g-training"
    assert place("eks", Compute.cpu()).pool == "cpu-small"
    # too big for t3.large (2 cpu): the m5.2xlarge group
    assert place("eks", Compute.cpu(cpu="4", memory="8Gi")).pool == "cpu-general"
    assert place("eks", Compute.gpu(count=4)).pool == "gpu-a100-training"


def test_training_and_inference_use_separate_pools():
    assert place("gke", Compute.gpu(model="l4", purpose="inference")).pool == "gpu-l4-inference"
    assert place("gke", Compute.gpu(model="l4", spot=True)).pool == "gpu-l4-training"
    assert place("aks", Compute.gpu(purpose="inference", cpu="3", memory="12Gi")).pool == "gput4"
    assert place("aks", Compute.gpu()).pool == "gput4train"


def test_aks_cpu_work_is_kept_off_untainted_gpu_pools():
    p = place("aks", Compute.cpu())
    assert p.tolerations == ()
    assert p.affinity.to_dict() == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.azure.com/agentpool",
                                "operator": "NotIn",
                                "values": ["gput4", "gput4train", "gpua10", "gpua100", "gpua100x8"],
                            }
                        ]
                    }
                ]
            }
        }
    }
    # tainted pools need no affinity; GPU work needs none either
    assert place("gke", Compute.cpu()).affinity is None
    assert place("aks", Compute.gpu()).affinity is None


def test_generic_cpu_work_is_kept_off_gpu_feature_discovery_nodes():
    p = place("generic", Compute.cpu())
    assert p.node_selector == {}
    terms = p.affinity.to_dict()["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "NotIn", "values": ["true"]}]}]


def test_spot_on_aks_and_karpenter_capacity_type_on_eks():
    aks = place("aks", Compute.gpu(spot=True, cpu="3", memory="12Gi"))
    assert aks.pool == "gput4spot"
    assert aks.node_selector["kubernetes.azure.com/scalesetpriority"] == "spot"
    assert {"key": "kubernetes.azure.com/scalesetpriority", "operator": "Equal", "value": "spot", "effect": "NoSchedule"} in dicts(aks.tolerations)
    assert len(aks.tolerations) == 1  # pool taint and cluster spot toleration are the same one
    on_demand = place("eks", Compute.gpu(count=8))
    spot = place("eks", Compute.gpu(count=8, spot=True))
    assert on_demand.node_selector["karpenter.sh/capacity-type"] == "on-demand"
    assert spot.node_selector["karpenter.sh/capacity-type"] == "spot"
    assert on_demand.price_per_hour == 21.96 and spot.price_per_hour is None
    assert on_demand.node_price_per_hour == 21.96


def test_mig_resource_names_follow_the_cluster_strategy():
    gke = place("gke", Compute.gpu(model="a100-40gb", mig="1g.5gb", purpose="inference", cpu="1", memory="4Gi"))
    assert gke.accelerator == ("nvidia.com/gpu", 1)  # GKE: single strategy + partition label
    assert gke.node_selector["cloud.google.com/gke-gpu-partition-size"] == "1g.5gb"
    generic = place("generic", Compute.gpu(model="a100-40gb", mig="1g.5gb", count=2, purpose="inference", cpu="1", memory="4Gi"))
    assert generic.accelerator == ("nvidia.com/mig-1g.5gb", 2)  # GPU Operator mixed strategy
    assert generic.limits["nvidia.com/mig-1g.5gb"] == "2"


def test_tpu_single_host():
    p = place("gke", Compute.tpu(version="v5e", topology="2x4"))
    assert p.limits["google.com/tpu"] == "8" and "google.com/tpu" not in p.requests
    assert p.node_selector == {
        "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
        "cloud.google.com/gke-tpu-topology": "2x4",
    }
    assert dicts(p.tolerations) == [{"key": "google.com/tpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}]
    assert p.env["PJRT_DEVICE"] == "TPU"
    assert p.instance_type == "ct5lp-hightpu-8t"
    assert p.price_per_hour == pytest.approx(8 * 1.20)
    assert p.hosts == 1


def test_tpu_multi_host_is_represented():
    p = place("gke", Compute.tpu(version="v5e", topology="4x8", spot=True))
    assert p.hosts == 8
    assert p.accelerator == ("google.com/tpu", 4)  # chips per host, one pod per host
    assert p.instance_type == "ct5lp-hightpu-4t"
    assert p.node_selector["cloud.google.com/gke-spot"] == "true"
    assert p.price_per_hour == pytest.approx(8 * 4 * 0.63)


def test_npu_extended_resources_and_labels():
    expected = {
        "intel-npu": ("npu.intel.com/accel", "intel.feature.node.kubernetes.io/npu"),
        "aws-inferentia2": ("aws.amazon.com/neuron", "karpenter.k8s.aws/instance-accelerator-name"),
        "qualcomm-ai100": ("qualcomm.com/qaic", "qualcomm.com/qaic"),
        "ascend-310": ("huawei.com/Ascend310", "accelerator"),
        "ascend-910": ("huawei.com/Ascend910", "accelerator"),
    }
    for device, (resource, label) in expected.items():
        p = place("generic", Compute.npu(device=device))
        assert p.limits[resource] == "1" and label in p.node_selector, device
        assert any(t.key == resource for t in p.tolerations), device
    assert place("eks", Compute.npu(device="aws-inferentia2")).pool == "inferentia2"


def test_every_placement_is_restricted_by_default():
    for cluster in ("gke", "eks", "aks", "generic"):
        p = place(cluster, Compute.cpu())
        assert p.restricted and p.pod_security_context.to_dict() == RESTRICTED_POD
        assert p.container_security_context.to_dict() == RESTRICTED_CONTAINER


def test_placement_is_deterministic():
    a = place("gke", Compute.gpu(spot=True)).to_dict()
    b = place("gke", Compute.gpu(spot=True)).to_dict()
    assert a == b


def test_spot_placements_get_a_grace_period_that_covers_a_checkpoint():
    # the train step's checkpoint must fit GKE Spot's 15 s window; tests/test_train.py measures it
    for cluster in ("gke", "eks", "aks"):
        assert place(cluster, Compute.gpu(spot=True, cpu="3", memory="12Gi")).grace_period == 30
        assert place(cluster, Compute.gpu(spot="prefer", cpu="3", memory="12Gi")).grace_period == 30
        assert place(cluster, Compute.gpu()).grace_period is None
    assert place("gke", Compute.gpu(spot=True, grace_period=60)).grace_period == 60  # explicit wins


def test_gpu_placements_tell_the_step_how_much_gpu_memory_it_has():
    assert place("aks", Compute.gpu(model="a100-80gb")).env["XPUFLOW_GPU_MEMORY_GIB"] == "80"  # A100 80GB pool
    assert place("aks", Compute.gpu()).env["XPUFLOW_GPU_MEMORY_GIB"] == "16"  # the T4 it lands on
    mig = place("gke", Compute.gpu(model="a100-40gb", mig="1g.5gb", purpose="inference", cpu="1", memory="4Gi"))
    assert mig.env["XPUFLOW_GPU_MEMORY_GIB"] == "5"  # one 1g.5gb slice
    assert "XPUFLOW_GPU_MEMORY_GIB" not in place("gke", Compute.cpu()).env
