"""Allocatable: every shipped pool's node, computed here again from the published formulas.

The formulas below are written out from the providers' pages (not imported from
xpuflow) so that a slip in ``catalog/reservations.yaml`` or ``xpuflow/allocatable.py``
shows up as a difference:

- GKE (cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes): CPU 6% of the
  first core, 1% of the next, 0.5% of the next 2, 0.25% above 4; memory 25% of the first
  4 GiB, 20% of the next 4, 10% of the next 8, 6% of the next 112, 2% above 128 GiB;
  eviction 100 MiB.
- EKS (amazon-eks-ami nodeadm): the same CPU bands; memory 11 MiB x max pods + 255 MiB,
  max pods = ENIs x (IPv4 addresses per ENI - 1) + 2; eviction 100 MiB.
- AKS (learn.microsoft.com/azure/aks/node-resource-reservations): CPU by core count
  60/100/140/180/260/420/740m for 1/2/4/8/16/32/64 cores; memory min(20 MiB x max pods
  + 50 MiB, 25%); eviction 100 MiB.
"""

from __future__ import annotations

import importlib.resources

import pytest
import yaml

from xpuflow import Cluster, Compute, PlacementError
from xpuflow.catalog import shipped_clusters
from xpuflow.dsl.load import load_flow as flow
from xpuflow.lint import lint

FLOW_NAMES = ("train_gpu_export_npu", "train_tpu", "rag_index")

MI = 2**20
GI = 2**30

# ENIs and IPv4 addresses per ENI (EC2 DescribeInstanceTypes, as amazon-eks-ami's instance-info.jsonl lists them)
ENIS = {"t3.large": (3, 12), "m5.2xlarge": (4, 15), "g5.xlarge": (4, 15), "g5.2xlarge": (4, 15),
        "p4d.24xlarge": (15, 50), "p5.48xlarge": (2, 50), "inf2.xlarge": (4, 15)}


def bands(total: float, widths: list[float | None], fractions: list[float]) -> float:
    out, start = 0.0, 0.0
    for width, fraction in zip(widths, fractions):
        end = total if width is None else min(total, start + width)
        out += max(0.0, end - start) * fraction
        start = end
    return out


def gke(cores: float, mem_gib: float) -> tuple[float, float]:
    cpu_m = bands(cores, [1, 1, 2, None], [0.06, 0.01, 0.005, 0.0025]) * 1000
    mem_mib = bands(mem_gib, [4, 4, 8, 112, None], [0.25, 0.20, 0.10, 0.06, 0.02]) * 1024 + 100
    return cpu_m, mem_mib


def eks(cores: float, mem_gib: float, instance: str) -> tuple[float, float]:
    enis, ips = ENIS[instance]
    max_pods = enis * (ips - 1) + 2
    cpu_m = bands(cores, [1, 1, 2, None], [0.06, 0.01, 0.005, 0.0025]) * 1000
    return cpu_m, 11 * max_pods + 255 + 100


def aks(cores: int, mem_gib: float, max_pods: int) -> tuple[float, float]:
    table = {1: 60, 2: 100, 4: 140, 8: 180, 16: 260, 32: 420, 64: 740}
    cpu_m = table.get(cores, 140 + 10 * (cores - 4))  # every published point above 4 cores is on this line
    return cpu_m, min(20 * max_pods + 50, mem_gib * 1024 * 0.25) + 100


def profile(name: str) -> dict:
    text = importlib.resources.files("xpuflow.catalog").joinpath("clusters", f"{name}.yaml").read_text()
    return yaml.safe_load(text)


def size(text: str) -> float:
    """cpu in millicores or memory in MiB, for the few suffixes the profiles use."""
    for suffix, factor in (("Ti", 1024 * 1024), ("Gi", 1024), ("Mi", 1), ("m", 1)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text) * 1000


@pytest.mark.parametrize("name", ["gke", "eks", "aks", "generic"])
def test_every_pool_allocatable_matches_the_published_formula(name):
    raw = profile(name)
    pools = {p.name: p for p in Cluster.load(name).node_pools}
    checked = 0
    for p in raw["node_pools"]:
        if "cpu" not in p:
            continue  # TPU pools give no host size
        cores, mem_gib = float(p["cpu"]), size(p["memory"]) / 1024
        if name == "gke":
            res_cpu, res_mem = gke(cores, mem_gib)
        elif name == "eks":
            res_cpu, res_mem = eks(cores, mem_gib, p["instance_type"])
        elif name == "aks":
            res_cpu, res_mem = aks(int(cores), mem_gib, raw["reservations"]["max_pods"])
        else:  # generic states its own: kube-reserved + system-reserved + eviction, as written in the profile
            r = raw["reservations"]
            res_cpu = size(r["kube_reserved"]["cpu"]) + size(r["system_reserved"]["cpu"])
            res_mem = size(r["kube_reserved"]["memory"]) + size(r["system_reserved"]["memory"]) + size(r["eviction"])
        kind = next((k for k in ("gpu", "tpu", "npu") if k in p), "cpu")
        ds = p.get("daemonsets") or raw["daemonsets"][kind]
        want_cpu = cores * 1000 - res_cpu - size(ds["cpu"])
        want_mem = mem_gib * 1024 - res_mem - size(ds["memory"])
        got = pools[p["name"]].allocatable
        assert abs(got.cpu_m - want_cpu) <= 1, (p["name"], got.cpu_m, want_cpu)
        assert abs(got.memory / MI - want_mem) <= 1, (p["name"], got.memory / MI, want_mem)
        checked += 1
    assert checked >= 7


def test_published_examples():
    # AKS's own example: 8 GB, 30 max pods -> 650 MB kube-reserved + 100 MB eviction
    assert aks(2, 8, 30)[1] == 750
    # t3.large on EKS: 35 pods -> 640 MiB + 100 MiB; 70m of 2 cores
    assert eks(2, 8, "t3.large") == (pytest.approx(70), 740)
    eks_small = Cluster.load("eks").node_pools[2]
    assert eks_small.instance_type == "t3.large"
    assert eks_small.allocatable.node_cpu_m == 1930 and eks_small.allocatable.node_memory == (8192 - 740) * MI


def test_the_issue_cases_are_placed_on_nodes_they_fit():
    eks_cluster, aks_cluster = Cluster.load("eks"), Cluster.load("aks")
    # preprocess and export (2 CPU) no longer go to a t3.large (2 vCPU: 1.73 CPU left)
    for step in ("preprocess", "export"):
        assert eks_cluster.place(flow("train_gpu_export_npu").task(step).compute).instance_type != "t3.large"
    # 4 CPU on a 4-vCPU GPU node is refused with the numbers
    with pytest.raises(PlacementError, match=r"allocatable.*cpu=4, memory=16Gi requested.*'gput4spot'.*3410m cpu"):
        aks_cluster.place(Compute.gpu(cpu="4", memory="16Gi", spot=True))
    with pytest.raises(PlacementError, match=r"allocatable.*'gpu-a10g-inference' \(g5\.xlarge: 4 cpu, 16Gi\) has 3620m cpu"):
        eks_cluster.place(Compute.gpu(cpu="4", memory="16Gi", purpose="inference"))


@pytest.mark.parametrize("cluster_name", shipped_clusters())
@pytest.mark.parametrize("flow_name", FLOW_NAMES)
def test_no_placement_that_cannot_fit_a_node(flow_name, cluster_name):
    cluster = Cluster.load(cluster_name)
    for spec in flow(flow_name).tasks:
        try:
            p = cluster.place(spec.compute)
        except PlacementError as e:
            assert "no tpu pools" in str(e) or "Fix:" in str(e)
            continue
        for option in p.options:
            alloc = option.pool.allocatable
            if alloc is None:
                continue
            assert spec.compute.cpu_request.value * 1000 <= alloc.cpu_m, (spec.name, option.pool.name)
            assert spec.compute.memory_request.value <= alloc.memory, (spec.name, option.pool.name)


def test_lint_flags_a_step_that_cannot_fit_with_the_numbers():
    big = flow("rag_index").with_compute(embed=Compute.gpu(purpose="inference", cpu="6", memory="12Gi"))
    errors = [f for f in lint(big, Cluster.load("eks")) if f.level == "error"]
    assert len(errors) == 1 and errors[0].step == "embed"
    assert "allocatable" in errors[0].message and "cpu=6" in errors[0].message and "3620m cpu" in errors[0].message


def test_measured_allocatable_replaces_the_formula(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nreservations: {formula: gke}\n"
        "node_pools:\n"
        "  - {name: a, cpu: '8', memory: 32Gi, allocatable: {cpu: 7910m, memory: 29Gi},"
        " daemonsets: {cpu: 410m, memory: 1Gi}}\n"
    )
    alloc = Cluster.load(path).node_pools[0].allocatable
    assert (alloc.cpu_m, alloc.memory, alloc.basis) == (7500, 28 * GI, "measured")


def test_a_node_with_nothing_left_is_refused(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("name: tiny\nnode_pools:\n  - {name: a, cpu: 500m, memory: 1Gi, daemonsets: {cpu: 600m, memory: 100Mi}}\n")
    with pytest.raises(Exception, match=r"node_pools\[0\]\.cpu: a node of 500m cpu / 1Gi leaves nothing allocatable"):
        Cluster.load(path)
