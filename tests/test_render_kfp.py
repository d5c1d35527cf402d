"""KFP renderer: assertions on the compiled IR (the YAML), not on Python objects."""

from __future__ import annotations

import pytest
from kfp import compiler, dsl
from kfp_compile import compile_tasks, noop_step
from normalize import from_kfp_ir

from xpuflow import Cluster, Compute, RenderError, Security
from xpuflow.podspec import dicts
from xpuflow.render import kfp as render_kfp


def executor_of(docs, name):
    pipeline = docs[0]
    for task in pipeline["root"]["dag"]["tasks"].values():
        if task["taskInfo"]["name"] == name:
            label = pipeline["components"][task["componentRef"]["name"]]["executorLabel"]
            platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"][label]
            return pipeline["deploymentSpec"]["executors"][label]["container"], platform, task
    raise KeyError(name)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    gke, aks = Cluster.load("gke"), Cluster.load("aks")
    placements = {
        "train": gke.place(Compute.gpu(model="l4", spot=True, cpu="6", memory="24Gi", timeout=3600, retries=2)),
        "prep": aks.place(Compute.cpu(cpu="500m", memory="1Gi", memory_limit="2Gi")),
        "tpu": gke.place(Compute.tpu(version="v6e", topology="2x2")),
    }
    return compile_tasks(placements, tmp_path_factory.mktemp("kfp") / "pipeline.yaml")


def test_gpu_task_ir(compiled):
    container, platform, task = executor_of(compiled, "train")
    res = container["resources"]
    assert (res["resourceCpuRequest"], res["resourceCpuLimit"]) == ("6", "6")
    assert (res["resourceMemoryRequest"], res["resourceMemoryLimit"]) == ("24Gi", "24Gi")
    assert res["accelerator"]["resourceType"] == "nvidia.com/gpu" and res["accelerator"]["resourceCount"] == "1"
    assert platform["nodeSelector"]["labels"] == {
        "cloud.google.com/gke-nodepool": "gpu-l4-training",
        "cloud.google.com/gke-accelerator": "nvidia-l4",
        "cloud.google.com/gke-spot": "true",
    }
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"} in platform["tolerations"]
    assert {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in platform["tolerations"]
    assert platform["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "6Gi", "volumeName": "dshm"}]
    assert platform["activeDeadlineSeconds"] == "3600"
    assert platform["securityContext"] == {"runAsUser": "10001", "runAsGroup": "10001", "runAsNonRoot": True}
    assert platform["podMetadata"]["labels"] == {"xpuflow.io/compute": "gpu", "xpuflow.io/node-pool": "gpu-l4-training"}
    assert task["retryPolicy"]["maxRetryCount"] == 2
    assert {"name": "XPUFLOW_COMPUTE_KIND", "value": "gpu"} in container["env"]


def test_cpu_task_ir_with_affinity(compiled):
    container, platform, _ = executor_of(compiled, "prep")
    res = container["resources"]
    assert (res["resourceCpuRequest"], res["resourceMemoryRequest"], res["resourceMemoryLimit"]) == ("500m", "1Gi", "2Gi")
    assert "accelerator" not in res
    assert platform["nodeAffinity"] == [
        {"matchExpressions": [{"key": "kubernetes.azure.com/agentpool", "operator": "NotIn",
                               "values": ["gput4", "gput4train", "gpua10", "gpua100", "gpua100x8"]}]}
    ]
    assert "weight" not in platform["nodeAffinity"][0]  # required, not preferred


def test_tpu_task_ir(compiled):
    container, platform, _ = executor_of(compiled, "tpu")
    assert container["resources"]["accelerator"]["resourceType"] == "google.com/tpu"
    assert container["resources"]["accelerator"]["resourceCount"] == "4"
    assert platform["nodeSelector"]["labels"] == {
        "cloud.google.com/gke-tpu-accelerator": "tpu-v6e-slice",
        "cloud.google.com/gke-tpu-topology": "2x2",
    }
    assert {"name": "PJRT_DEVICE", "value": "TPU"} in container["env"]


def test_normalised_ir_matches_placement(compiled):
    p = Cluster.load("gke").place(Compute.tpu(version="v6e", topology="2x2"))
    assert from_kfp_ir(compiled, "tpu") == {
        "requests": p.requests,
        "limits": p.limits,
        "nodeSelector": p.node_selector,
        "tolerations": dicts(p.tolerations),
        "affinity": None,
    }


REFUSED = [
    ("priority class", Compute.cpu(priority_class="high"), r"KFP cannot express priority_class"),
    ("grace period", Compute.gpu(grace_period=60), r"KFP cannot express grace_period"),
    ("ephemeral storage", Compute.cpu(ephemeral_storage="20Gi"), r"KFP cannot express ephemeral_storage"),
    ("read-only root", Compute.cpu(security=Security(read_only_root_filesystem=True)), r"read_only_root_filesystem"),
    ("privilege escalation", Compute.cpu(security=Security(allow_privilege_escalation=True)), r"container_security_beyond_identity"),
    ("multi-host", Compute.tpu(version="v5e", topology="4x4"), r"KFP cannot express multi_host .*single-host topology"),
]


@pytest.mark.parametrize(("case", "compute", "pattern"), REFUSED, ids=[r[0] for r in REFUSED])
def test_kfp_refuses_what_it_cannot_express(case, compute, pattern, tmp_path):
    placement = Cluster.load("gke").place(compute)
    seen = []

    @dsl.pipeline(name="refused")
    def pipeline():
        task = noop_step(message="x")
        with pytest.raises(RenderError, match=pattern):
            render_kfp.apply(task, placement)
        seen.append(task.container_spec.resources)  # nothing was set before refusing
        seen.append(dict(task.platform_config))

    compiler.Compiler().compile(pipeline, str(tmp_path / "p.yaml"))
    assert seen == [None, {}]


# ------------------------------------------------------------------ placing twice replaces
def _compile_one(tmp_path, name, *placements, before=None):
    """One task placed with each of ``placements`` in turn; returns (container, platform, task) of the IR."""
    path = tmp_path / f"{name}.yaml"

    @dsl.pipeline(name=name)
    def pipeline():
        task = noop_step(message="x").set_display_name("t")
        if before:
            before(task)
        for p in placements:
            render_kfp.apply(task, p)

    compiler.Compiler().compile(pipeline, str(path))
    import yaml

    return executor_of(list(yaml.safe_load_all(path.read_text())), "t")


def test_placing_twice_gives_exactly_the_second_placement(tmp_path):
    gke = Cluster.load("gke")
    first = gke.place(Compute.gpu(model="l4", spot=True, timeout=600, retries=3))
    second = gke.place(Compute.gpu(model="a100-40gb", memory="32Gi"))
    twice = _compile_one(tmp_path, "twice", first, second)
    once = _compile_one(tmp_path, "once", second)
    assert twice[0] == once[0]  # resources and env
    assert twice[1] == once[1]  # selector, tolerations, /dev/shm, labels, security, timeout
    assert twice[2].get("retryPolicy") == once[2].get("retryPolicy")
    assert "cloud.google.com/gke-spot" not in twice[1]["nodeSelector"]["labels"]
    assert len(twice[1]["emptyDirMounts"]) == 1


def test_replacing_gpu_with_cpu_drops_the_accelerator(tmp_path):
    gke = Cluster.load("gke")
    container, platform, _ = _compile_one(tmp_path, "tocpu", gke.place(Compute.gpu(model="l4", spot=True)),
                                          gke.place(Compute.cpu()))
    assert "accelerator" not in container["resources"]
    assert "tolerations" not in platform and "emptyDirMounts" not in platform
    assert platform["nodeSelector"]["labels"] == {"cloud.google.com/gke-nodepool": "cpu-general"}


def test_replacing_keeps_the_users_own_settings(tmp_path):
    from kfp import kubernetes

    def own(task):
        kubernetes.add_toleration(task, key="team", operator="Equal", value="ml", effect="NoSchedule")
        kubernetes.add_node_selector(task, label_key="team", label_value="ml")
        task.set_env_variable("MY_VAR", "1")

    gke = Cluster.load("gke")
    _, platform, _ = _compile_one(tmp_path, "own", gke.place(Compute.gpu(model="l4", spot=True)),
                                  gke.place(Compute.gpu(model="a100-40gb")), before=own)
    assert {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in platform["tolerations"]
    assert platform["nodeSelector"]["labels"]["team"] == "ml"
    assert len(platform["tolerations"]) == 2
