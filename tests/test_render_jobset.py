"""JobSet renderer: TPU slices validate against the upstream JobSet CRD schema (v1alpha2),
their Job against Kubernetes' own schema, and their pods meet Pod Security "restricted"."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import matrix
import pytest
from crd import strict_validator
from pss import violations

from xpuflow import ArgumentError, Cluster, Compute, RenderError
from xpuflow.render import jobset, kubernetes

ROOT = Path(__file__).resolve().parent.parent
K8S_VERSION = "1.33"
COMMAND = dict(image=matrix.IMAGE, command=["xpuflow"], args=["step", "train"])

# (version, topology) -> (hosts, chips per host)
SLICES = {
    ("v5e", "4x4"): (4, 4),
    ("v5p", "2x2x2"): (2, 4),
    ("v6e", "8x16"): (32, 4),
    ("v5e", "2x4"): (1, 8),
}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Validator:
    return strict_validator("jobset.x-k8s.io_jobsets.yaml", jobset.API_VERSION)


def _place(version: str, topology: str, **options: Any):
    return Cluster.load("gke").place(Compute.tpu(version=version, topology=topology, **options))


def _job_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """The replicated job's template as the batch/v1 Job that JobSet creates from it."""
    template = manifest["spec"]["replicatedJobs"][0]["template"]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train-slice-0"}, "spec": template["spec"]}


def _check_valid(validator: jsonschema.Validator, manifest: dict[str, Any]) -> None:
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    try:
        kubernetes_validate.validate(_job_of(manifest), K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:  # pragma: no cover - the failure path
        pytest.fail(f"embedded Job: {e.message} at {list(e.path)}")
    assert violations(_job_of(manifest)["spec"]["template"]["spec"]) == []


@pytest.mark.parametrize(("version", "topology"), list(SLICES), ids=[f"{v}-{t}" for v, t in SLICES])
def test_slice_renders_one_pod_per_host(validator, version, topology):
    hosts, per_host = SLICES[(version, topology)]
    p = _place(version, topology)
    assert (p.hosts, p.accelerator) == (hosts, ("google.com/tpu", per_host))
    m = jobset.jobset(p, name="train", namespace="ml", **COMMAND)
    _check_valid(validator, m)

    assert (m["apiVersion"], m["kind"]) == ("jobset.x-k8s.io/v1alpha2", "JobSet")
    annotations = m["metadata"]["annotations"]
    assert annotations == {"alpha.jobset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool"}
    assert m["metadata"]["namespace"] == "ml" and m["metadata"]["labels"]["xpuflow.io/node-pool"] == p.pool
    assert m["spec"]["network"] == {"enableDNSHostnames": True}
    (rj,) = m["spec"]["replicatedJobs"]
    assert (rj["name"], rj["replicas"]) == ("slice", 1)
    job = rj["template"]["spec"]
    assert job["parallelism"] == job["completions"] == hosts and job["completionMode"] == "Indexed"
    assert job["parallelism"] * per_host == p.compute.chips
    pod = job["template"]["spec"]
    c = pod["containers"][0]
    assert c["resources"]["limits"]["google.com/tpu"] == str(per_host)
    assert pod["nodeSelector"]["cloud.google.com/gke-tpu-accelerator"] == p.compute.accelerator.shape.accelerator
    assert pod["nodeSelector"]["cloud.google.com/gke-tpu-topology"] == topology
    tpu_taint = {"key": "google.com/tpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    assert tpu_taint in pod["tolerations"]
    assert {"name": "PJRT_DEVICE", "value": "TPU"} in c["env"]
    assert job["template"]["metadata"]["labels"] == m["metadata"]["labels"]


def test_pod_template_is_the_kubernetes_pod_spec():
    p = _place("v5e", "4x4", priority_class="batch-high", grace_period=60, ephemeral_storage="50Gi")
    m = jobset.jobset(p, name="train", env={"EXTRA": "1"}, **COMMAND)
    pod = m["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod == kubernetes.pod_spec(p, env={"EXTRA": "1"}, **COMMAND)
    assert pod["priorityClassName"] == "batch-high" and pod["terminationGracePeriodSeconds"] == 60


def test_spot_slice_selects_and_tolerates_spot_nodes(validator):
    p = _place("v5e", "4x4", spot=True)
    m = jobset.jobset(p, name="train", **COMMAND)
    _check_valid(validator, m)
    pod = m["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["cloud.google.com/gke-spot"] == "true"
    spot = {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    assert spot in pod["tolerations"]


def test_retries_restart_the_whole_slice_and_timeout_bounds_each_run(validator):
    p = _place("v5p", "2x2x2", retries=3, timeout=3600)
    m = jobset.jobset(p, name="train", **COMMAND)
    _check_valid(validator, m)
    job = m["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert m["spec"]["failurePolicy"] == {"maxRestarts": 3}
    assert job["backoffLimit"] == 0 and job["activeDeadlineSeconds"] == 3600
    plain = jobset.jobset(_place("v5p", "2x2x2"), name="train", ttl_seconds_after_finished=None, **COMMAND)
    assert plain["spec"]["failurePolicy"] == {"maxRestarts": 0} and "ttlSecondsAfterFinished" not in plain["spec"]
    assert "activeDeadlineSeconds" not in plain["spec"]["replicatedJobs"][0]["template"]["spec"]


def test_every_tpu_placement_of_the_matrix_renders(validator):
    tpus = [(c, k, p) for c, k, p in matrix.cases() if not isinstance(p, Exception) and p.kind == "tpu"]
    assert {k for _, k, _ in tpus} == {"tpu", "tpu-multihost", "tpu-prefer-spot"}
    for _, case, p in tpus:
        _check_valid(validator, jobset.jobset(p, name=case, namespace="ml", **COMMAND))


@pytest.mark.parametrize("compute", [Compute.gpu(model="l4", spot=True), Compute.cpu()], ids=["gpu", "cpu"])
def test_non_tpu_placement_is_refused(compute):
    p = Cluster.load("gke").place(compute)
    refusal = r"step 'train': a JobSet here renders TPU slices only.*kubernetes\.job.*trainjob"
    with pytest.raises(RenderError, match=refusal):
        jobset.jobset(p, name="train", image=matrix.IMAGE)


@pytest.mark.parametrize("name", ["Train", "1train", "train_x", "t" * 53])
def test_names_that_cannot_become_pod_hostnames_are_refused(name):
    with pytest.raises(ArgumentError, match=r"JobSet: name=.* at most 63 characters"):
        jobset.jobset(_place("v6e", "8x16"), name=name, image=matrix.IMAGE)
    jobset.jobset(_place("v6e", "8x16"), name="t" * 52, image=matrix.IMAGE)  # t*52-slice-0-31: 63 characters


def test_single_pod_renderers_point_to_the_jobset_renderer():
    p = _place("v5e", "4x4")
    with pytest.raises(RenderError, match=r"JobSet.*xpuflow\.render\.jobset\.jobset\(\).*single-host topology"):
        kubernetes.job(p, name="train", image=matrix.IMAGE)


def test_rendering_is_pure():
    p = _place("v5e", "4x4")
    a = jobset.jobset(p, name="train", **COMMAND)
    a["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["nodeSelector"]["mutated"] = "yes"
    a["metadata"]["labels"]["mutated"] = "yes"
    b = jobset.jobset(p, name="train", **COMMAND)
    assert b == jobset.jobset(p, name="train", **COMMAND)
    assert "mutated" not in p.node_selector and "mutated" not in p.labels and "mutated" not in b["metadata"]["labels"]


@pytest.mark.parametrize(
    "breakage",
    [
        lambda m: m["spec"]["replicatedJobs"][0].__setitem__("replicas", "1"),  # wrong type
        lambda m: m["spec"]["failurePolicy"].__setitem__("restartStrategy", "Sometimes"),  # not in the enum
        lambda m: m["spec"]["network"].__setitem__("enableDNSHostname", True),  # unknown field (typo)
        lambda m: m["spec"]["replicatedJobs"][0].pop("template"),  # required
    ],
    ids=["replicas-type", "enum", "unknown-field", "required"],
)
def test_schema_validation_can_fail(validator, breakage):
    good = jobset.jobset(_place("v5e", "4x4"), name="train", **COMMAND)
    assert not list(validator.iter_errors(good))
    bad = copy.deepcopy(good)
    breakage(bad)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)


def test_importing_the_renderer_imports_nothing_heavy():
    code = "import sys, json, xpuflow.render.jobset; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not {"kfp", "airflow", "kubernetes", "torch"} & set(json.loads(out)), out
