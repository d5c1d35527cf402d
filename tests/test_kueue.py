"""Kueue: queue and priority labels, topology-aware scheduling annotations and the cluster's Kueue set-up,
on every backend; every object validates (core kinds with kubernetes-validate strict, the rest against their CRDs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import crd
import kubernetes_validate
import pytest
import yaml
from kfp_compile import compile_tasks
from pss import violations

from xpuflow import ArgumentError, Cluster, Compute, ComputeError, PlacementError
from xpuflow.podspec import dicts
from xpuflow.errors import ClusterFileError
from xpuflow.render import airflow as render_airflow
from xpuflow.render import jobset, kubernetes, kueue, trainjob

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ("1.34", "1.37")
IMAGE = dict(image="ghcr.io/me/train@sha256:" + "0" * 64, command=["xpuflow", "step", "train"])
QUEUE = "kueue.x-k8s.io/queue-name"
PRIORITY = "kueue.x-k8s.io/priority-class"
REQUIRED = "kueue.x-k8s.io/podset-required-topology"
PREFERRED = "kueue.x-k8s.io/podset-preferred-topology"
KINDS = {  # kind -> CRD file kept in tests/schemas
    "WorkloadPriorityClass": "kueue.x-k8s.io_workloadpriorityclasses.json",
    "Topology": "kueue.x-k8s.io_topologies.json",
    "ResourceFlavor": "kueue.x-k8s.io_resourceflavors.json",
    "ClusterQueue": "kueue.x-k8s.io_clusterqueues.json",
    "LocalQueue": "kueue.x-k8s.io_localqueues.json",
}


@pytest.fixture(scope="module")
def gke() -> Cluster:
    return Cluster.load("gke")


def _core_valid(manifest: dict) -> None:
    for version in VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


def _crd_valid(manifest: dict, filename: str) -> None:
    errors = list(crd.strict_validator(filename, manifest["apiVersion"]).iter_errors(manifest))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


# --------------------------------------------------------------------------- Job and Pod
def test_queued_job_carries_the_labels_and_is_created_suspended(gke):
    p = gke.place(Compute.gpu(model="l4", spot=True, queue="team-a", priority="high"))
    job = kubernetes.job(p, name="train", namespace="ml", **IMAGE)
    _core_valid(job)
    assert job["metadata"]["labels"][QUEUE] == "team-a" and job["metadata"]["labels"][PRIORITY] == "high"
    assert job["spec"]["suspend"] is True
    template = job["spec"]["template"]
    assert QUEUE not in template["metadata"]["labels"]  # Kueue queues the Job, not its pods
    assert "annotations" not in template["metadata"]  # one pod: the profile's slice default does not apply
    assert violations(template["spec"]) == []


def test_unqueued_job_is_unchanged(gke):
    job = kubernetes.job(gke.place(Compute.gpu(model="l4", spot=True)), name="train", **IMAGE)
    assert "suspend" not in job["spec"] and not {QUEUE, PRIORITY} & set(job["metadata"]["labels"])


def test_plain_pod_is_its_own_workload_and_gets_an_asked_for_level(gke):
    p = gke.place(Compute.cpu(queue="team-b", require_topology="node"))
    pod = kubernetes.pod(p, name="prep", namespace="ml", **IMAGE)
    _core_valid(pod)
    assert pod["metadata"]["labels"][QUEUE] == "team-b"
    assert pod["metadata"]["annotations"] == {REQUIRED: "kubernetes.io/hostname"}


# --------------------------------------------------------------------------- flavors that inject
@pytest.mark.parametrize("compute", [
    Compute.cpu(spot=True, queue="team-a"),
    Compute.gpu(model="l4", spot=True, queue="team-a"), Compute.gpu(model="a100-40gb", queue="team-a"),
    Compute.tpu(version="v5e", topology="4x4", spot=True, queue="team-a"),
], ids=["cpu-spot", "l4-spot", "a100", "tpu-spot"])
def test_pods_do_not_carry_what_their_flavor_injects(gke, compute):
    p = gke.place(compute)
    (flavor,) = [d for d in kueue.setup(gke) if d["kind"] == "ResourceFlavor" and d["metadata"]["name"] == p.pool]
    injected = flavor["spec"].get("tolerations", [])
    assert injected, "these pools are tainted: their flavor injects the tolerations"
    assert not [t for t in dicts(p.tolerations) if t in injected]
    for key, value in flavor["spec"].get("nodeLabels", {}).items():  # Kueue picks the flavor that agrees
        assert p.node_selector.get(key, value) == value
    unqueued = gke.place(compute.replace(queue=None))
    assert [t for t in dicts(unqueued.tolerations) if t not in injected] == dicts(p.tolerations)
    assert p.node_selector == unqueued.node_selector


def test_without_injection_pods_keep_their_tolerations(tmp_path):
    cluster = _profile(tmp_path, flavors_inject=False)
    p = cluster.place(Compute.gpu(model="l4", queue="team-a"))
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in dicts(p.tolerations)
    (flavor,) = [d for d in kueue.setup(cluster) if d["kind"] == "ResourceFlavor" and d["metadata"]["name"] == "l4"]
    assert flavor["spec"] == {}


# --------------------------------------------------------------------------- JobSet and TrainJob
def test_multi_host_tpu_slice_is_one_workload_in_one_node_pool(gke):
    p = gke.place(Compute.tpu(version="v5e", topology="4x4", queue="team-a", priority="low"))
    m = jobset.jobset(p, name="train", namespace="ml", **IMAGE)
    _crd_valid(m, "jobset.x-k8s.io_jobsets.json")
    assert (m["metadata"]["labels"][QUEUE], m["metadata"]["labels"][PRIORITY]) == ("team-a", "low")
    assert m["spec"]["suspend"] is True
    template = m["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    assert template["metadata"]["annotations"] == {REQUIRED: "cloud.google.com/gke-nodepool"}
    _core_valid({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train-slice-0"},
                 "spec": m["spec"]["replicatedJobs"][0]["template"]["spec"]})


def test_single_host_slice_gets_no_default_topology(gke):
    m = jobset.jobset(gke.place(Compute.tpu(version="v5e", topology="2x4", queue="team-a")), name="train", **IMAGE)
    assert "annotations" not in m["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["metadata"]


def test_compute_level_overrides_the_profile_default(gke):
    p = gke.place(Compute.tpu(version="v6e", topology="8x8", queue="team-a", prefer_topology="node"))
    m = jobset.jobset(p, name="train", **IMAGE)
    assert m["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["metadata"]["annotations"] == {
        PREFERRED: "kubernetes.io/hostname"}


@pytest.mark.parametrize(("nodes", "annotated"), [(4, True), (1, False)])
def test_multi_node_trainjob_prefers_one_node_pool(gke, nodes, annotated):
    p = gke.place(Compute.gpu(model="h100-80gb", count=8, cpu="32", memory="256Gi", queue="team-b", priority="high"))
    m = trainjob.trainjob(p, name="train", num_nodes=nodes, **IMAGE)
    _crd_valid(m, "trainer.kubeflow.org_trainjobs.json")
    assert (m["metadata"]["labels"][QUEUE], m["metadata"]["labels"][PRIORITY]) == ("team-b", "high")
    assert m["spec"]["suspend"] is True
    patch = m["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    meta = patch["template"]["spec"]["template"]["metadata"]
    assert meta.get("annotations") == ({PREFERRED: "cloud.google.com/gke-nodepool"} if annotated else None)


# --------------------------------------------------------------------------- KFP and Airflow
def test_kfp_task_pods_carry_the_queue_labels(gke, tmp_path):
    placements = {"train": gke.place(Compute.gpu(model="l4", spot=True, queue="team-a", priority="high",
                                                 prefer_topology="nodepool")),
                  "plain": gke.place(Compute.cpu())}
    docs = compile_tasks(placements, tmp_path / "pipeline.yaml")
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    metas = [e.get("podMetadata", {}) for e in executors.values()]
    queued = [m for m in metas if QUEUE in m.get("labels", {})]
    assert len(queued) == 1
    assert queued[0]["labels"][PRIORITY] == "high"
    assert queued[0]["annotations"] == {PREFERRED: "cloud.google.com/gke-nodepool"}


def test_kfp_placing_again_takes_off_the_queue(gke, tmp_path):
    from kfp import compiler, dsl
    from kfp_compile import noop_step

    from xpuflow.render import kfp as render_kfp

    def platform(name, *placements):
        @dsl.pipeline(name=name)
        def pipeline():
            task = noop_step(message="x")
            for p in placements:
                render_kfp.apply(task, p)

        compiler.Compiler().compile(pipeline, str(tmp_path / f"{name}.yaml"))
        docs = list(yaml.safe_load_all((tmp_path / f"{name}.yaml").read_text()))
        (executor,) = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
        return executor

    queued = gke.place(Compute.cpu(queue="team-a", priority="low", require_topology="node"))
    plain = gke.place(Compute.cpu())
    assert QUEUE in platform("queued", queued)["podMetadata"]["labels"]
    assert platform("twice", queued, plain) == platform("once", plain)


def test_airflow_pod_kwargs_carry_the_queue_labels(gke):
    kwargs = render_airflow.pod_kwargs(gke.place(Compute.gpu(model="l4", spot=True, queue="team-a",
                                                              require_topology="node")), step="train")
    assert kwargs["labels"][QUEUE] == "team-a"
    assert kwargs["annotations"] == {REQUIRED: "kubernetes.io/hostname"}


# --------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(("compute", "message"), [
    (Compute.gpu(model="l4", spot=True, queue="team-c"),
     r"cluster 'gke' .*queue='team-c' is not valid: a LocalQueue of kueue.local_queues: team-a, team-b\. "
     r"Did you mean 'team-b'\?"),
    (Compute.cpu(queue="team-a", priority="urgent"),
     r"priority='urgent' is not valid: a WorkloadPriorityClass of kueue.priorities: high, low"),
    (Compute.tpu(version="v5e", topology="4x4", queue="team-a", require_topology="rack"),
     r"require_topology='rack' is not valid: a level of kueue.topology.levels: nodepool, node"),
    (Compute.tpu(version="v5p", topology="2x2x2", queue="team-a"),
     r"may land on pool 'tpu-v5p', which has no quota in kueue.quotas .* Kueue would never admit it"),
], ids=["unknown-queue", "unknown-priority", "unknown-level", "no-quota"])
def test_profile_refuses_what_it_lacks(gke, compute, message):
    with pytest.raises(PlacementError, match=message):
        gke.place(compute)


def test_queue_on_a_cluster_without_kueue_is_refused():
    with pytest.raises(PlacementError, match=r"cluster 'aks' .*queue='team-a' is not valid: the profile has no kueue: "):
        Cluster.load("aks").place(Compute.cpu(queue="team-a"))


@pytest.mark.parametrize(("options", "message"), [
    (dict(queue="Team A"), r"Compute.cpu: queue='Team A' is not valid: the name of a Kueue LocalQueue"),
    (dict(priority="high"), r"priority='high' is not valid: set together with queue="),
    (dict(queue="a", require_topology="node", prefer_topology="node"), r"prefer_topology='node' is not valid: unset"),
    (dict(claim=True), r"claim=True is not valid: False for a CPU step"),
])
def test_compute_refuses_bad_options(options, message):
    with pytest.raises(ComputeError, match=message):
        Compute.cpu(**options)


def _profile(tmp_path: Path, **kueue_section) -> Cluster:
    data = {
        "name": "lab",
        "node_pools": [
            {"name": "cpu", "cpu": "16", "memory": "64Gi"},
            {"name": "l4", "cpu": "8", "memory": "32Gi", "gpu": {"model": "l4", "count": 2},
             "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"}, "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
        ],
        "kueue": {"local_queues": ["team-a"], "quotas": {"cpu": {"nodes": 2}, "l4": {"nodes": 3}}, **kueue_section},
    }
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data))
    return Cluster.load(str(path))


@pytest.mark.parametrize(("section", "message"), [
    (dict(quotas={"l40": {"nodes": 1}}), r"kueue.quotas.l40: no node pool named 'l40'\. Did you mean 'l4'\?"),
    (dict(quotas={"cpu": {}}), r"kueue.quotas.cpu: no quota for cpu: nodes is not set"),
    (dict(quotas={"cpu": {"nodes": 1, "memory": "64GB"}}), r"kueue.quotas.cpu.memory: .*no 'B' suffix"),
    (dict(topology={"levels": {"node": "kubernetes.io/hostname"}, "gpu": {"required": "rack"}}),
     r"kueue.topology.gpu.required: 'rack' is not a level of kueue.topology.levels \(node\)"),
    (dict(topology={"levels": {"node": "kubernetes.io/hostname"}, "gpu": {"required": "node", "preferred": "node"}}),
     r"kueue.topology.gpu: has both 'required' and 'preferred'"),
    (dict(flavors_inject="yes"), r"kueue.flavors_inject: expected true or false"),
    (dict(local_queues=[]), r"kueue.local_queues: expected at least 1 item"),
], ids=["unknown-pool", "no-nodes", "bad-quantity", "unknown-level", "two-modes", "not-bool", "no-queues"])
def test_bad_kueue_sections_are_refused_with_their_path(tmp_path, section, message):
    with pytest.raises(ClusterFileError, match=message):
        _profile(tmp_path, **section)


# --------------------------------------------------------------------------- the cluster's set-up
def test_setup_validates_against_the_kueue_crds(gke):
    docs = kueue.setup(gke)
    for doc in docs:
        _crd_valid(doc, KINDS[doc["kind"]])
    kinds = [d["kind"] for d in docs]
    assert kinds.count("ResourceFlavor") == len(gke.node_pools)
    assert kinds.count("LocalQueue") == 2 and kinds.count("ClusterQueue") == 1
    (cq,) = [d for d in docs if d["kind"] == "ClusterQueue"]
    (group,) = cq["spec"]["resourceGroups"]
    assert group["coveredResources"] == ["cpu", "memory", "nvidia.com/gpu", "google.com/tpu"]
    quotas = {f["name"]: {r["name"]: r["nominalQuota"] for r in f["resources"]} for f in group["flavors"]}
    assert quotas["gpu-l4-training"] == {"cpu": "64", "memory": "256Gi", "nvidia.com/gpu": "8", "google.com/tpu": "0"}
    assert quotas["tpu-v5e"]["google.com/tpu"] == "64" and "tpu-v5p" not in quotas
    flavors = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "ResourceFlavor"}
    assert flavors["tpu-v5e"]["nodeLabels"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice"}
    assert flavors["tpu-v5e"]["topologyName"] == "gke-node-pool" and "topologyName" not in flavors["cpu-general"]
    assert all(d["metadata"]["namespace"] == "ml" and d["spec"]["clusterQueue"] == "ml-batch"
               for d in docs if d["kind"] == "LocalQueue")


def test_unlabeled_pools_come_last_so_they_never_take_a_labeled_pools_work(tmp_path):
    cluster = _profile(tmp_path)
    (cq,) = [d for d in kueue.setup(cluster) if d["kind"] == "ClusterQueue"]
    assert [f["name"] for f in cq["spec"]["resourceGroups"][0]["flavors"]] == ["l4", "cpu"]


def test_crd_validation_can_fail(gke):
    (cq,) = [d for d in kueue.setup(gke) if d["kind"] == "ClusterQueue"]
    cq["spec"]["resourceGroups"][0]["flavors"][0]["quota"] = 1  # unknown field
    with pytest.raises(AssertionError):
        _crd_valid(cq, KINDS["ClusterQueue"])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xpuflow.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_cli_writes_the_setup_and_a_refusal_keeps_the_previous_file(tmp_path):
    out = tmp_path / "kueue.yaml"
    done = _cli("kueue", "--cluster", "gke", "-o", str(out))
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(out.read_text()) if d]
    assert docs == kueue.setup(Cluster.load("gke"))
    before = out.read_text()
    refused = _cli("kueue", "--cluster", "aks", "-o", str(out))
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "the profile has no kueue: section" in refused.stderr
    assert out.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["kueue.yaml"]


def test_pod_group_is_admitted_together(gke):
    p = gke.place(Compute.gpu(model="l4", spot=True, queue="team-a"))
    pods = kubernetes.pod_group(p, name="embed", size=3, namespace="ml", labels={"team": "ml"}, **IMAGE)
    assert [m["metadata"]["name"] for m in pods] == ["embed-0", "embed-1", "embed-2"]
    for m in pods:
        _core_valid(m)
        assert m["metadata"]["labels"]["kueue.x-k8s.io/pod-group-name"] == "embed"
        assert m["metadata"]["labels"][QUEUE] == "team-a" and m["metadata"]["labels"]["team"] == "ml"
        assert m["metadata"]["annotations"] == {"kueue.x-k8s.io/pod-group-total-count": "3",
                                                PREFERRED: "cloud.google.com/gke-nodepool"}
    from xpuflow import RenderError

    with pytest.raises(RenderError, match=r"pod group 'embed': Kueue admits a pod group through a LocalQueue"):
        kubernetes.pod_group(gke.place(Compute.gpu(model="l4", spot=True)), name="embed", size=3, **IMAGE)
    with pytest.raises(ArgumentError, match=r"pod group 'embed': size=0 is not valid"):
        kubernetes.pod_group(p, name="embed", size=0, **IMAGE)


def test_every_pool_a_step_may_land_on_needs_a_quota(gke, tmp_path):
    p = gke.place(Compute.gpu(model=["h100-80gb", "a100-40gb"], queue="team-a"))
    assert [o.pool.name for o in p.options] == ["gpu-h100-training", "gpu-a100-training"]
    assert not [t for t in p.tolerations if t.key == "nvidia.com/gpu"]  # both flavors inject it
    cluster = _profile(tmp_path, quotas={"cpu": {"nodes": 1}})
    with pytest.raises(PlacementError, match=r"may land on pool 'l4', which has no quota in kueue.quotas \(cpu\)"):
        cluster.place(Compute.gpu(model="l4", queue="team-a"))
