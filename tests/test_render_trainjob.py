"""TrainJob renderer: multi-node PyTorch TrainJobs validate against the upstream Kubeflow Trainer
CRD schema (v1alpha1), carry the placement unchanged into their pods, and meet Pod Security "restricted"."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import matrix
import pytest
import crd
from pss import violations

from xpuflow import ArgumentError, Cluster, Compute, PlacementError, RenderError, Security
from xpuflow.podspec import dicts
from xpuflow.render import kubernetes, trainjob

ROOT = Path(__file__).resolve().parent.parent
COMMAND = dict(image=matrix.IMAGE, command=["torchrun"], args=["-m", "xpuflow.steps.train"])

# (cluster, case) -> Compute: GPUs on every shipped cluster, one and eight per node, spot where offered
GPU_CASES = {
    ("gke", "gpu"): lambda: Compute.gpu(count=1, timeout=7200),
    ("gke", "gpu-spot"): lambda: Compute.gpu(count=1, spot=True),
    ("gke", "gpu-x8"): lambda: Compute.gpu(model="h100-80gb", count=8, cpu="32", memory="256Gi"),
    ("eks", "gpu"): lambda: Compute.gpu(count=1, timeout=7200),
    ("eks", "gpu-spot"): lambda: Compute.gpu(count=1, spot=True),
    ("eks", "gpu-x8"): lambda: Compute.gpu(model="h100-80gb", count=8),
    ("aks", "gpu"): lambda: Compute.gpu(count=1),
    ("aks", "gpu-spot"): lambda: Compute.gpu(count=1, spot=True, cpu="3", memory="12Gi"),  # a 4-vCPU T4 node
    ("aks", "gpu-x8"): lambda: Compute.gpu(count=8),
    ("generic", "gpu"): lambda: Compute.gpu(count=1),
    ("generic", "gpu-x8"): lambda: Compute.gpu(count=8),
}


def _cel_errors(manifest: dict[str, Any]) -> list[str]:
    """The CRD's x-kubernetes-validations rules that a create can break, mirrored (jsonschema skips CEL)."""
    name, trainer = manifest["metadata"]["name"], manifest["spec"].get("trainer", {})
    out = []
    if not re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", name) or len(name) > 63:
        out.append(f"metadata.name {name!r}")
    if "numProcPerNode" in trainer and not trainer["numProcPerNode"] >= 1:
        out.append("numProcPerNode < 1")
    return out


@pytest.fixture(scope="module")
def crd_schema() -> dict[str, Any]:
    return crd.crd_schema("trainer.kubeflow.org_trainjobs.yaml", trainjob.API_VERSION)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Validator:
    return crd.strict_validator("trainer.kubeflow.org_trainjobs.yaml", trainjob.API_VERSION)


def _assert_valid(validator: jsonschema.Validator, manifest: dict[str, Any]) -> None:
    errors = [f"{e.message} at {list(e.absolute_path)}" for e in validator.iter_errors(manifest)]
    assert not errors + _cel_errors(manifest), errors + _cel_errors(manifest)


def _given(spec: dict[str, Any], key: str) -> Any:
    value = spec.get(key)
    return None if value in ({}, []) else value


def _pod(manifest: dict[str, Any]) -> dict[str, Any]:
    """The runtimePatches PodTemplate patch for the ``node`` replicated job."""
    (patch,) = manifest["spec"]["runtimePatches"]
    assert patch["manager"] == trainjob.MANAGER
    (job,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert job["name"] == "node"
    return job["template"]["spec"]["template"]


@pytest.mark.parametrize("num_nodes", [1, 4])
@pytest.mark.parametrize(("cluster", "case"), list(GPU_CASES), ids=[f"{c}/{k}" for c, k in GPU_CASES])
def test_gpu_trainjob_validates_on_every_gpu_cluster(validator, cluster, case, num_nodes):
    p = Cluster.load(cluster).place(GPU_CASES[cluster, case]())
    manifest = trainjob.trainjob(p, name="train", namespace="ml", num_nodes=num_nodes, **COMMAND)
    _assert_valid(validator, manifest)
    trainer = manifest["spec"]["trainer"]
    resource, count = p.accelerator
    assert trainer["numNodes"] == num_nodes and trainer["numProcPerNode"] == count
    assert trainer["resourcesPerNode"] == p.resources()
    assert trainer["resourcesPerNode"]["limits"][resource] == str(count)
    assert resource not in trainer["resourcesPerNode"]["requests"]  # extended resources: limits only
    assert manifest["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime", "name": "torch-distributed",
    }
    assert trainer["image"] == matrix.IMAGE and trainer["command"] == ["torchrun"]
    assert ("activeDeadlineSeconds" in manifest["spec"]) == (p.timeout is not None)


@pytest.mark.parametrize("cluster", matrix.CLUSTERS)
@pytest.mark.parametrize("spot", [False, True])
def test_cpu_trainjob_has_no_processes_per_gpu(validator, cluster, spot):
    try:
        p = Cluster.load(cluster).place(Compute.cpu(cpu="2", memory="4Gi", spot=spot))
    except PlacementError:  # generic offers no spot CPU pool
        assert cluster == "generic" and spot
        return
    manifest = trainjob.trainjob(p, name="prep", num_nodes=2, **COMMAND)
    _assert_valid(validator, manifest)
    assert "numProcPerNode" not in manifest["spec"]["trainer"]
    assert manifest["spec"]["trainer"]["resourcesPerNode"] == {
        "requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "4Gi"},
    }
    pod = _pod(manifest)["spec"]
    assert pod.get("affinity") == p.scheduling().get("affinity") and pod.get("tolerations", []) == dicts(p.tolerations)
    assert "volumes" not in pod and "volumeMounts" not in pod["containers"][0]  # CPU work gets no /dev/shm


@pytest.mark.parametrize(("cluster", "case"), [*GPU_CASES, ("aks", "cpu"), ("generic", "cpu"), ("gke", "cpu-spot")])
def test_pods_get_exactly_the_placement_and_what_the_job_renderer_gives(cluster, case):
    build = GPU_CASES.get((cluster, case)) or (lambda: Compute.cpu(spot=case == "cpu-spot"))
    p = Cluster.load(cluster).place(build())
    manifest = trainjob.trainjob(p, name="train", num_nodes=4, labels={"team": "ml"}, env={"EXTRA": "1"}, **COMMAND)
    patch = _pod(manifest)
    pod, container = patch["spec"], patch["spec"]["containers"][0]
    assert pod.get("nodeSelector", {}) == p.node_selector
    assert pod.get("tolerations", []) == dicts(p.tolerations)
    assert pod.get("affinity") == p.scheduling().get("affinity")
    assert pod["securityContext"] == p.pod_security_context.to_dict()
    assert container == {
        "name": "node",
        "securityContext": p.container_security_context.to_dict(),
        **({"volumeMounts": dicts(p.volume_mounts)} if p.volume_mounts else {}),
    }
    assert pod.get("volumes", []) == dicts(p.volumes)
    assert patch["metadata"]["labels"] == {**p.labels, "team": "ml"} == manifest["metadata"]["labels"]
    # the same pieces the Job renderer puts in its pod spec (parity across renderers)
    job = kubernetes.job(p, name="train", env={"EXTRA": "1"}, **COMMAND)["spec"]["template"]["spec"]
    pod_keys = ("nodeSelector", "tolerations", "affinity", "securityContext", "volumes")
    for key in (*pod_keys, "terminationGracePeriodSeconds"):
        assert pod.get(key) == _given(job, key), key  # the patch leaves empty selectors/tolerations to the runtime
    for key in ("securityContext", "volumeMounts"):
        assert container.get(key) == job["containers"][0].get(key), key
    assert manifest["spec"]["trainer"]["env"] == job["containers"][0]["env"]
    assert manifest["spec"]["trainer"]["resourcesPerNode"] == job["containers"][0]["resources"]


def test_spot_tolerations_and_selector_reach_the_pods(validator):
    for cluster in ("gke", "eks", "aks"):
        p = Cluster.load(cluster).place(Compute.gpu(count=1, spot=True, cpu="3", memory="12Gi"))
        manifest = trainjob.trainjob(p, name="train", num_nodes=4, **COMMAND)
        _assert_valid(validator, manifest)
        pod = _pod(manifest)["spec"]
        assert pod["nodeSelector"] == p.node_selector
        assert pod.get("tolerations", []) == dicts(p.tolerations)
    gke = _pod(trainjob.trainjob(Cluster.load("gke").place(Compute.gpu(spot=True)), name="t", num_nodes=2, **COMMAND))
    assert {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in (
        gke["spec"]["tolerations"]
    )
    assert gke["spec"]["nodeSelector"]["cloud.google.com/gke-spot"] == "true"
    eks = _pod(trainjob.trainjob(Cluster.load("eks").place(Compute.gpu(spot=True)), name="t", num_nodes=2, **COMMAND))
    assert eks["spec"]["nodeSelector"]["karpenter.sh/capacity-type"] == "spot"


def test_whole_trainjob_for_a_spot_gpu_step(validator):
    compute = Compute.gpu(count=1, spot=True, timeout=3600, grace_period=45, ephemeral_storage="100Gi",
                          security=Security(read_only_root_filesystem=True))
    p = Cluster.load("eks").place(compute)
    queue = {"kueue.x-k8s.io/queue-name": "gpu"}
    manifest = trainjob.trainjob(p, name="finetune", namespace="ml", num_nodes=2, labels=queue,
                                 env={"NCCL_DEBUG": "WARN"}, image=matrix.IMAGE, command=["torchrun"],
                                 args=["train.py"])
    _assert_valid(validator, manifest)
    labels = {"xpuflow.io/compute": "gpu", "xpuflow.io/node-pool": "gpu-a10g-training", **queue}
    sizes = {"cpu": "4", "memory": "16Gi", "ephemeral-storage": "100Gi"}
    assert manifest == {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "finetune", "namespace": "ml", "labels": labels},
        "spec": {
            "runtimeRef": {
                "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime", "name": "torch-distributed",
            },
            "trainer": {
                "image": matrix.IMAGE,
                "command": ["torchrun"],
                "args": ["train.py"],
                "env": [
                    {"name": "XPUFLOW_COMPUTE_KIND", "value": "gpu"},
                    {"name": "XPUFLOW_NODE_POOL", "value": "gpu-a10g-training"},
                    {"name": "XPUFLOW_GPU_MEMORY_GIB", "value": "24"},
                    {"name": "NCCL_DEBUG", "value": "WARN"},
                ],
                "numNodes": 2,
                "resourcesPerNode": {"requests": sizes, "limits": {**sizes, "nvidia.com/gpu": "1"}},
                "numProcPerNode": 1,
            },
            "runtimePatches": [{
                "manager": "xpuflow.io/placement",
                "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [{
                    "name": "node",
                    "template": {"spec": {"template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "nodeSelector": {
                                "karpenter.sh/nodepool": "gpu-a10g-training",
                                "karpenter.k8s.aws/instance-gpu-name": "a10g",
                                "karpenter.sh/capacity-type": "spot",
                            },
                            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "true",
                                             "effect": "NoSchedule"}],
                            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                                "seccompProfile": {"type": "RuntimeDefault"}},
                            "containers": [{
                                "name": "node",
                                "securityContext": {"allowPrivilegeEscalation": False,
                                                    "capabilities": {"drop": ["ALL"]},
                                                    "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                                                    "seccompProfile": {"type": "RuntimeDefault"}},
                                "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
                            }],
                            "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}}],
                            "terminationGracePeriodSeconds": 45,
                        },
                    }}},
                }]}}},
            }],
            "activeDeadlineSeconds": 3600,
        },
    }


def test_every_matrix_case_renders_or_is_refused(validator):
    rendered, refused = 0, set()
    for cluster, case, p in matrix.cases():
        if isinstance(p, Exception):
            continue
        if p.kind in ("tpu", "npu") or p.retries:
            with pytest.raises(RenderError, match=r"JobSet|kubernetes\.job|trainjob_retries"):
                trainjob.trainjob(p, name=case, num_nodes=2, **COMMAND)
            refused.add(p.kind if p.kind in ("tpu", "npu") else "retries")
            continue
        manifest = trainjob.trainjob(p, name=case, namespace="ml", num_nodes=2, **COMMAND)
        _assert_valid(validator, manifest)
        assert not violations(_pod(manifest)["spec"]), f"{cluster}/{case}"
        rendered += 1
    assert rendered >= 15 and refused == {"tpu", "npu", "retries"}


def test_pods_meet_pod_security_restricted_and_the_check_can_fail():
    p = Cluster.load("gke").place(Compute.gpu(model="h100-80gb", count=8))
    assert p.restricted and violations(_pod(trainjob.trainjob(p, name="t", num_nodes=4, **COMMAND))["spec"]) == []
    loose = Cluster.load("gke").place(Compute.gpu(security=Security(allow_privilege_escalation=True,
                                                                     drop_capabilities=())))
    found = violations(_pod(trainjob.trainjob(loose, name="t", num_nodes=4, **COMMAND))["spec"])
    assert not loose.restricted
    assert found == [
        "node: allowPrivilegeEscalation must be false explicitly", "node: capabilities.drop must include ALL",
    ]


def test_schema_validation_can_fail(validator, crd_schema):
    good = trainjob.trainjob(Cluster.load("gke").place(Compute.gpu()), name="train", num_nodes=4, **COMMAND)
    _assert_valid(validator, good)
    plain = jsonschema.Draft7Validator(crd_schema)

    as_string = copy.deepcopy(good)
    as_string["spec"]["trainer"]["numNodes"] = "4"
    with pytest.raises(jsonschema.ValidationError, match=r"'4' is not of type 'integer'"):
        plain.validate(as_string)
    negative = copy.deepcopy(good)
    negative["spec"]["trainer"]["numNodes"] = -1
    with pytest.raises(jsonschema.ValidationError, match=r"minimum"):
        plain.validate(negative)
    no_runtime = copy.deepcopy(good)
    del no_runtime["spec"]["runtimeRef"]["name"]
    with pytest.raises(jsonschema.ValidationError, match=r"'name' is a required property"):
        validator.validate(no_runtime)

    # The CRD's schema alone lets unknown fields through (the API server would prune them, or refuse them
    # under strict field validation); the strict form used here refuses them, as kubectl does by default.
    typo = copy.deepcopy(good)
    _pod(typo)["spec"]["nodeSelectors"] = _pod(typo)["spec"].pop("nodeSelector")
    plain.validate(typo)
    with pytest.raises(jsonschema.ValidationError, match=r"'nodeSelectors' was unexpected"):
        validator.validate(typo)


@pytest.mark.parametrize(("where", "field"), [("pod", "priorityClassName"), ("job", "backoffLimit")])
def test_what_is_refused_has_no_field_in_the_patch(validator, where, field):
    """priority_class and retries are refused because the runtimePatches API really has no place for them."""
    manifest = trainjob.trainjob(Cluster.load("gke").place(Compute.gpu()), name="train", num_nodes=2, **COMMAND)
    job = manifest["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    (job["template"]["spec"]["template"]["spec"] if where == "pod" else job["template"]["spec"])[field] = 3
    with pytest.raises(jsonschema.ValidationError, match=rf"'{field}' was unexpected"):
        validator.validate(manifest)


def test_cel_mirror_can_fail():
    manifest = trainjob.trainjob(Cluster.load("gke").place(Compute.gpu()), name="train", num_nodes=2, **COMMAND)
    manifest["metadata"]["name"], manifest["spec"]["trainer"]["numProcPerNode"] = "Train", 0
    assert _cel_errors(manifest) == ["metadata.name 'Train'", "numProcPerNode < 1"]


@pytest.mark.parametrize(
    ("compute", "cluster", "pattern"),
    [
        (lambda: Compute.tpu(version="v5e", topology="2x4"), "gke",
         r"step 'train': a Kubeflow TrainJob on runtime 'torch-distributed' runs PyTorch on GPU or CPU nodes, "
         r"not .*\(tpu\) on cluster 'gke'.*Fix: render the TPU slice as a JobSet with "
         r"xpuflow\.render\.jobset\.jobset\(\)"),
        (lambda: Compute.tpu(version="v5p", topology="2x2x2"), "gke", r"not .*\(tpu\).*JobSet"),
        (lambda: Compute.npu(device="aws-inferentia2"), "eks", r"not .*\(npu\).*Fix: render the step as a Job"),
        (lambda: Compute.gpu(retries=2), "gke",
         r"step 'train': a Kubeflow TrainJob cannot express trainjob_retries .*failurePolicy\.maxRestarts"),
        (lambda: Compute.gpu(priority_class="batch-high"), "gke", r"cannot express priority_class .*PriorityClass"),
        (lambda: Compute.cpu(priority_class="batch-high", retries=1), "aks",
         r"cannot express priority_class, trainjob_retries"),
    ],
    ids=["tpu-single-host", "tpu-multi-host", "npu", "retries", "priority-class", "both"],
)
def test_refusals(compute, cluster, pattern):
    p = Cluster.load(cluster).place(compute())
    with pytest.raises(RenderError, match=pattern):
        trainjob.trainjob(p, name="train", num_nodes=2, **COMMAND)


@pytest.mark.parametrize(
    ("num_nodes", "shown"),
    [(0, "0"), (-1, "-1"), (1.5, r"1\.5"), (2.0, r"2\.0"), ("2", "'2'"), (True, "True"), (None, "None")],
)
def test_bad_num_nodes_is_refused(num_nodes, shown):
    p = Cluster.load("gke").place(Compute.gpu())
    pattern = rf"^step 'train': num_nodes={shown} is not valid: a whole number of nodes >= 1\. Fix: pass num_nodes=1"
    with pytest.raises(ArgumentError, match=pattern):
        trainjob.trainjob(p, name="train", num_nodes=num_nodes, **COMMAND)


@pytest.mark.parametrize(("name", "num_nodes"), [("Train", 1), ("1train", 1), ("train_job", 1), ("x" * 60, 1),
                                                 ("x" * 53, 1000)])
def test_bad_name_is_refused(name, num_nodes):
    p = Cluster.load("gke").place(Compute.gpu())
    with pytest.raises(ArgumentError, match=r"^TrainJob: name='.*' is not valid: a lowercase DNS label"):
        trainjob.trainjob(p, name=name, num_nodes=num_nodes, **COMMAND)
    if num_nodes > 1:  # the same name fits with fewer nodes: 'x' * 53 + '-node-0-99' is 63 characters
        assert trainjob.trainjob(p, name=name, num_nodes=100, **COMMAND)["metadata"]["name"] == name


def test_user_env_joins_and_may_not_contradict_the_placement():
    p = Cluster.load("aks").place(Compute.gpu())
    manifest = trainjob.trainjob(p, name="t", num_nodes=2, env={"NCCL_DEBUG": "INFO"}, **COMMAND)
    assert {"name": "NCCL_DEBUG", "value": "INFO"} in manifest["spec"]["trainer"]["env"]
    with pytest.raises(RenderError, match=r"env\['XPUFLOW_COMPUTE_KIND'\]='cpu' conflicts"):
        trainjob.trainjob(p, name="t", num_nodes=2, env={"XPUFLOW_COMPUTE_KIND": "cpu"}, **COMMAND)


def test_rendering_is_pure_and_repeatable():
    p = Cluster.load("gke").place(Compute.gpu(spot=True))
    a = trainjob.trainjob(p, name="t", num_nodes=2, **COMMAND)
    _pod(a)["spec"]["nodeSelector"]["mutated"] = "yes"
    _pod(a)["spec"]["tolerations"].clear()
    a["spec"]["trainer"]["resourcesPerNode"]["limits"]["cpu"] = "99"
    b = trainjob.trainjob(p, name="t", num_nodes=2, **COMMAND)
    assert "mutated" not in _pod(b)["spec"]["nodeSelector"] and "mutated" not in p.node_selector
    assert _pod(b)["spec"]["tolerations"] == dicts(p.tolerations) and p.limits["cpu"] == "4"


def test_runtime_can_be_named():
    p = Cluster.load("generic").place(Compute.gpu(count=8))
    manifest = trainjob.trainjob(p, name="t", num_nodes=2, runtime="torch-distributed-nccl", **COMMAND)
    assert manifest["spec"]["runtimeRef"]["name"] == "torch-distributed-nccl"


def test_documented_examples_run(validator):
    """The example in docs/compute.md and the module docstring render a valid TrainJob."""
    section = (ROOT / "docs" / "compute.md").read_text().split("## Multi-node training (Kubeflow Trainer)")[1]
    docstring = trainjob.__doc__.split("\n\n")[1]
    for code in (section.split("```python\n")[1].split("```")[0], "\n".join(ln[4:] for ln in docstring.splitlines())):
        namespace: dict[str, Any] = {}
        exec(code.replace("...", "0" * 64), namespace)
        _assert_valid(validator, namespace["manifest"])
        assert namespace["manifest"]["spec"]["trainer"]["numNodes"] == 4
