"""Dynamic Resource Allocation: ResourceClaimTemplates and the pods that claim from them, on every backend.

Templates, Jobs and Pods validate with kubernetes-validate strict on 1.34 and 1.37
(resource.k8s.io/v1); JobSets against the JobSet CRD. KFP and TrainJob are refused.
"""

from __future__ import annotations

import re
from pathlib import Path

import crd
import kubernetes_validate
import pytest
from pss import violations

from xpuflow import Cluster, Compute, PlacementError, RenderError
from xpuflow.render import jobset, kubernetes, trainjob
from xpuflow.render import kfp as render_kfp

VERSIONS = ("1.34", "1.37")
IMAGE = dict(image="ghcr.io/me/train@sha256:" + "0" * 64, command=["xpuflow", "step", "train"])
PRODUCT = "device.attributes['gpu.nvidia.com'].productName"


@pytest.fixture(scope="module")
def generic() -> Cluster:
    return Cluster.load("generic")


def _valid(*manifests: dict) -> None:
    for m in manifests:
        for version in VERSIONS:
            kubernetes_validate.validate(m, version, strict=True)


def test_gpu_claim_renders_an_exact_count_template_and_the_pod_refers_to_it(generic):
    p = generic.place(Compute.gpu(model="l4", count=2, claim=True))
    (template,) = kubernetes.resource_claim_templates(p, name="train", namespace="ml")
    job = kubernetes.job(p, name="train", namespace="ml", **IMAGE)
    _valid(template, job)
    assert (template["apiVersion"], template["kind"], template["metadata"]["name"]) == (
        "resource.k8s.io/v1", "ResourceClaimTemplate", "train-gpu")
    (request,) = template["spec"]["spec"]["devices"]["requests"]
    assert request["name"] == "gpu"
    exactly = request["exactly"]
    assert (exactly["deviceClassName"], exactly["allocationMode"], exactly["count"]) == ("gpu.nvidia.com", "ExactCount", 2)
    (selector,) = exactly["selectors"]
    assert selector["cel"]["expression"].startswith(PRODUCT)
    pod = job["spec"]["template"]["spec"]
    assert pod["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": "train-gpu"}]
    resources = pod["containers"][0]["resources"]
    assert resources["claims"] == [{"name": "gpu"}]
    assert "nvidia.com/gpu" not in resources["limits"] and "nvidia.com/gpu" not in resources["requests"]
    assert pod["nodeSelector"] == generic.place(Compute.gpu(model="l4", count=2)).node_selector  # still its pool
    assert violations(pod) == []


def _patterns(expression: str) -> list[str]:
    """The regular expressions of a model selector (RE2; these use nothing Python's re reads differently)."""
    return [bytes(m, "utf-8").decode("unicode_escape") for m in re.findall(r"matches\('((?:[^'\\]|\\.)*)'\)", expression)]


@pytest.mark.parametrize(("model", "matches", "misses"), [
    ("l4", ["NVIDIA L4"], ["NVIDIA L40S", "NVIDIA L40"]),
    ("l40s", ["NVIDIA L40S"], ["NVIDIA L4", "NVIDIA L40"]),
    ("a10", ["NVIDIA A10"], ["NVIDIA A100-SXM4-40GB", "NVIDIA A10G"]),
    ("a100-40gb", ["NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB"], ["NVIDIA A100-SXM4-80GB", "NVIDIA A10"]),
    ("h100-80gb", ["NVIDIA H100 80GB HBM3"], ["NVIDIA H100 NVL", "NVIDIA H200"]),
    ("t4", ["Tesla T4"], ["NVIDIA L4"]),
])
def test_model_selectors_match_whole_words_of_the_product_name(model, matches, misses):
    p = Cluster.load("generic") if model in ("l4", "a100-40gb") else _profile_with_every_nvidia_model()
    claim = p.place(Compute.gpu(model=model, claim=True)).claims[0]
    (expression,) = claim.requests[0].selectors
    patterns = _patterns(expression)
    assert patterns, expression
    assert all(all(re.search(pat, name.lower()) for pat in patterns) for name in matches)
    assert not any(all(re.search(pat, name.lower()) for pat in patterns) for name in misses)


def _profile_with_every_nvidia_model(tmp_path: Path | None = None, **extra) -> Cluster:
    pools = [{"name": m.replace(".", "-"), "gpu": {"model": m, "count": 1}, "purpose": ["training"],
              "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]}
             for m in ("t4", "l4", "l40s", "a10", "a100-40gb", "h100-80gb")]
    data = {"name": "lab", "node_pools": [{"name": "cpu"}, *pools],
            "dra": {"gpu": {"nvidia": {"device_class": "gpu.nvidia.com", "product_attribute": "productName",
                                       "memory_capacity": "memory", **extra}}}}
    return Cluster.from_dict(data, source="lab.yaml")


def test_profile_can_name_exact_product_names():
    cluster = _profile_with_every_nvidia_model(products={"h100-80gb": "NVIDIA H100 80GB HBM3"})
    (expression,) = cluster.place(Compute.gpu(model="h100-80gb", claim=True)).claims[0].requests[0].selectors
    assert expression == f"{PRODUCT} == 'NVIDIA H100 80GB HBM3'"


def test_any_model_claims_the_class_without_a_selector(generic):
    p = generic.place(Compute.gpu(count=1, claim=True))
    (template,) = kubernetes.resource_claim_templates(p, name="train")
    _valid(template)
    assert "selectors" not in template["spec"]["spec"]["devices"]["requests"][0]["exactly"]


def test_mig_slice_is_claimed_from_the_mig_class(generic):
    p = generic.place(Compute.gpu(model="a100-40gb", mig="1g.5gb", count=2, purpose="inference", claim=True))
    (template,) = kubernetes.resource_claim_templates(p, name="serve")
    pod = kubernetes.pod(p, name="serve", **IMAGE)
    _valid(template, pod)
    exactly = template["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    assert exactly["deviceClassName"] == "mig.nvidia.com" and exactly["count"] == 2
    assert exactly["selectors"] == [{"cel": {"expression": "device.attributes['gpu.nvidia.com'].profile == '1g.5gb'"}}]
    assert "nvidia.com/mig-1g.5gb" not in pod["spec"]["containers"][0]["resources"]["limits"]
    assert pod["spec"]["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": "serve-gpu"}]


def _tpu_cluster() -> Cluster:
    return Cluster.from_dict({
        "name": "tpu-lab",
        "tpu_labels": {"accelerator": "cloud.google.com/gke-tpu-accelerator", "topology": "cloud.google.com/gke-tpu-topology"},
        "node_pools": [{"name": "cpu"}, {"name": "v5e", "tpu": {"version": "v5e", "topologies": ["4x4"]},
                                         "taints": [{"key": "google.com/tpu", "value": "present", "effect": "NoSchedule"}]}],
        "dra": {"tpu": {"v5e": {"device_class": "tpu.google.com"}}},
    }, source="tpu-lab.yaml")


def test_each_host_of_a_multi_host_slice_claims_its_own_chips():
    p = _tpu_cluster().place(Compute.tpu(version="v5e", topology="4x4", claim=True))
    (template,) = kubernetes.resource_claim_templates(p, name="train")
    m = jobset.jobset(p, name="train", **IMAGE)
    errors = list(crd.strict_validator("jobset.x-k8s.io_jobsets.json", jobset.API_VERSION).iter_errors(m))
    assert not errors, [e.message for e in errors]
    job = m["spec"]["replicatedJobs"][0]["template"]["spec"]
    _valid(template, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train-slice-0"}, "spec": job})
    exactly = template["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    assert (exactly["deviceClassName"], exactly["count"]) == ("tpu.google.com", 4)  # chips of one host
    assert job["parallelism"] == 4 and job["template"]["spec"]["resourceClaims"][0]["resourceClaimTemplateName"] == "train-tpu"
    assert "google.com/tpu" not in job["template"]["spec"]["containers"][0]["resources"]["limits"]


# --------------------------------------------------------------------------- refusals
def test_claim_without_a_dra_class_is_refused_naming_the_cluster():
    with pytest.raises(PlacementError, match=r"cluster 'gke' .*claim=True is not valid: .*no DeviceClass for GPUs of "
                       r"vendor 'nvidia' \(the profile has no dra: section\)\. Fix: add dra.gpu.nvidia.device_class"):
        Cluster.load("gke").place(Compute.gpu(model="l4", spot=True, claim=True))
    with pytest.raises(PlacementError, match=r"cluster 'generic' .*vendor 'amd' \(it declares gpu.nvidia.com, mig.nvidia.com\)"):
        Cluster.load("generic").place(Compute.gpu(vendor="amd", claim=True))


def test_kfp_refuses_a_claim_naming_kfp_kubernetes(generic):
    from kfp import dsl
    from kfp_compile import noop_step

    p = generic.place(Compute.gpu(model="l4", claim=True))
    with pytest.raises(RenderError, match=r"step 'train': KFP cannot express claims .*kfp-kubernetes \(2.17\) has no DRA "
                       r"support: no pod resourceClaims"):
        @dsl.pipeline(name="p")
        def pipeline():
            render_kfp.apply(noop_step(message="x"), p, step="train")


def test_trainjob_refuses_a_claim(generic):
    p = generic.place(Compute.gpu(model="l4", claim=True))
    with pytest.raises(RenderError, match=r"TrainJob cannot express trainjob_claims .*no pod resourceClaims in runtimePatches"):
        trainjob.trainjob(p, name="train", num_nodes=2, **IMAGE)


def test_pod_spec_needs_the_step_name_of_its_templates(generic):
    with pytest.raises(RenderError, match=r"pass claims_of=<step name>"):
        kubernetes.pod_spec(generic.place(Compute.gpu(model="l4", claim=True)), **IMAGE)


def test_no_claims_no_templates(generic):
    assert kubernetes.resource_claim_templates(generic.place(Compute.gpu(model="l4")), name="train") == []


def test_compile_for_k8s_writes_each_template_before_its_job(tmp_path):
    """A user's own flow file, outside xpuflow, compiled by the CLI for an on-prem cluster with NVIDIA's DRA driver."""
    import subprocess
    import sys

    import yaml

    import claimed_flow

    claimed_flow.write(tmp_path, model="l4", count=2)
    out = tmp_path / "jobs.yaml"
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "xpuflow.cli", "compile", str(tmp_path / "claimed.py"), "--backend",
                           "k8s", "--cluster", "generic", "-o", str(out)], capture_output=True, text=True, cwd=root,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(out.read_text()) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Job", "claimed-0-preprocess"), ("ResourceClaimTemplate", "claimed-1-train-gpu"), ("Job", "claimed-1-train")]
    _valid(*docs)
    pod = docs[2]["spec"]["template"]["spec"]
    assert pod["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": "claimed-1-train-gpu"}]
    assert docs[1]["spec"]["spec"]["devices"]["requests"][0]["exactly"]["count"] == 2
    no_dra = yaml.safe_load((root / "xpuflow" / "catalog" / "clusters" / "generic.yaml").read_text())
    del no_dra["dra"]
    no_dra["name"] = "plugins-only"
    (tmp_path / "plugins-only.yaml").write_text(yaml.safe_dump(no_dra))
    refused = subprocess.run([sys.executable, "-m", "xpuflow.cli", "compile", str(tmp_path / "claimed.py"), "--backend",
                              "k8s", "--cluster", str(tmp_path / "plugins-only.yaml"), "-o", str(out)],
                             capture_output=True, text=True, cwd=root, timeout=300)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "cluster 'plugins-only'" in refused.stderr and "claim=True is not valid" in refused.stderr
    assert [d for d in yaml.safe_load_all(out.read_text()) if d] == docs  # the earlier good output is kept
    dag = subprocess.run([sys.executable, "-m", "xpuflow.cli", "compile", str(tmp_path / "claimed.py"), "--backend",
                          "airflow", "--cluster", "generic", "-o", str(tmp_path / "dags" / "claimed.py")],
                         capture_output=True, text=True, cwd=root, timeout=300)
    assert dag.returncode == 0, dag.stderr
    assert f"wrote {tmp_path / 'dags' / 'claimed.claims.yaml'} (the DRA ResourceClaimTemplates" in dag.stdout
    (template,) = [d for d in yaml.safe_load_all((tmp_path / "dags" / "claimed.claims.yaml").read_text()) if d]
    assert template["metadata"]["name"] == "train-gpu"  # the Airflow task id, as the DAG's pod names it


# --------------------------------------------------------------------------- ordered candidates: firstAvailable
def test_ordered_candidates_become_first_available_subrequests(generic):
    p = generic.place(Compute.gpu(model=["h100-80gb", "a100-40gb", "l4"], count=2, claim=True))
    (template,) = kubernetes.resource_claim_templates(p, name="train")
    job = kubernetes.job(p, name="train", **IMAGE)
    pod = kubernetes.pod(p, name="train", **IMAGE)
    _valid(template, job, pod)
    (request,) = template["spec"]["spec"]["devices"]["requests"]
    assert request["name"] == "gpu" and "exactly" not in request
    alternatives = request["firstAvailable"]
    # the profile has no H100 pool: the alternatives are the candidates the cluster offers, in the user's order
    assert [a["name"] for a in alternatives] == ["a100-40gb", "l4"]
    for a in alternatives:
        assert (a["deviceClassName"], a["allocationMode"], a["count"]) == ("gpu.nvidia.com", "ExactCount", 2)
    assert "40gb" in alternatives[0]["selectors"][0]["cel"]["expression"]
    assert "l4" in alternatives[1]["selectors"][0]["cel"]["expression"]
    assert job["spec"]["template"]["spec"]["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": "train-gpu"}]
    assert p.claims[0].describe() == "gpu: 2x gpu.nvidia.com [a100-40gb] | 2x gpu.nvidia.com [l4] (first available)"


def test_memory_minimum_selects_on_the_devices_memory(generic):
    p = generic.place(Compute.gpu(gpu_memory="20Gi", claim=True))
    (template,) = kubernetes.resource_claim_templates(p, name="embed")
    _valid(template)
    alternatives = template["spec"]["spec"]["devices"]["requests"][0]["firstAvailable"]
    assert [a["name"] for a in alternatives] == [o.model for o in p.options]
    memory = "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('20Gi')) >= 0"
    assert all(a["selectors"][-1] == {"cel": {"expression": memory}} for a in alternatives)


def test_one_offered_candidate_is_an_exact_request(generic):
    p = generic.place(Compute.gpu(model=["h100-80gb", "l4"], claim=True))
    (template,) = kubernetes.resource_claim_templates(p, name="train")
    assert template["spec"]["spec"]["devices"]["requests"][0]["exactly"]["selectors"][0]["cel"]["expression"].count("l4")


def test_npu_claim_uses_the_devices_class_and_count():
    cluster = Cluster.from_dict({
        "name": "edge",
        "node_pools": [{"name": "cpu"}, {"name": "npu", "npu": {"device": "intel-npu", "count": 2},
                                         "taints": [{"key": "npu.intel.com/accel", "effect": "NoSchedule"}]}],
        "dra": {"npu": {"intel-npu": {"device_class": "npu.intel.com"}}},
    }, source="edge.yaml")
    p = cluster.place(Compute.npu(device="intel-npu", count=2, claim=True))
    (template,) = kubernetes.resource_claim_templates(p, name="validate")
    pod = kubernetes.pod(p, name="validate", **IMAGE)
    _valid(template, pod)
    assert template["spec"]["spec"]["devices"]["requests"][0] == {
        "name": "npu", "exactly": {"deviceClassName": "npu.intel.com", "allocationMode": "ExactCount", "count": 2}}
    assert not [r for r in pod["spec"]["containers"][0]["resources"]["limits"] if "npu" in r]
    with pytest.raises(PlacementError, match=r"cluster 'edge' .*no DeviceClass for NPU device 'aws-inferentia2'"):
        Cluster.from_dict({**{"name": "edge", "dra": {"npu": {"intel-npu": {"device_class": "npu.intel.com"}}}},
                           "node_pools": [{"name": "cpu"}, {"name": "inf", "npu": {"device": "aws-inferentia2", "count": 1},
                                                            "taints": [{"key": "aws.amazon.com/neuron", "effect": "NoSchedule"}]}]},
                          source="edge.yaml").place(Compute.npu(device="aws-inferentia2", claim=True))
