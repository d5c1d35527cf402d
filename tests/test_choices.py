"""Cheapest that fits, preferences with fallback, ordered candidates, memory minimums, defaults."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from xpuflow import Cluster, Compute, ComputeError, PlacementError
from xpuflow.podspec import dicts
from xpuflow.catalog import shipped_clusters
from xpuflow.dsl.load import load_flow as flow
from xpuflow.lint import lint
from xpuflow.plan import format_table, plan
from xpuflow.steps import builtin_steps

FLOW_NAMES = ("train_gpu_export_npu", "train_tpu", "rag_index")


def place(cluster: str, compute: Compute):
    return Cluster.load(cluster).place(compute)


# ------------------------------------------------------------------ cheapest per run
def test_one_gpu_takes_a_one_gpu_node_not_an_a100_or_an_eighth_of_a_p4d():
    gke = place("gke", Compute.gpu())
    assert (gke.pool, gke.price_per_hour) == ("gpu-l4-training-ondemand", 0.91)
    assert (gke.runner_up.pool.name, gke.runner_up.price) == ("gpu-a100-training", 3.673)
    eks = place("eks", Compute.gpu())
    assert (eks.instance_type, eks.price_per_hour) == ("g5.2xlarge", 1.212)
    # the p4d runner-up is priced at its share: one GPU of eight
    assert eks.runner_up.pool.instance_type == "p4d.24xlarge"
    assert eks.runner_up.price == pytest.approx(21.96 / 8, abs=1e-3) and eks.runner_up.share == 0.125


def test_a_pod_pays_its_share_of_the_node_by_its_scarcest_resource():
    p = place("gke", Compute.cpu(cpu="2", memory="2Gi"))  # cpu is scarcest: 2 of 7.61 allocatable
    assert p.node_price_per_hour == 0.3885
    assert p.price_per_hour == pytest.approx(0.3885 * 2000 / 7610, abs=1e-4)


def _two_pools(tmp_path, *, exclusive: bool = False):
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: two
        node_pools:
          - {{name: unpriced, cpu: "8", memory: 32Gi}}
          - {{name: priced, cpu: "8", memory: 32Gi, price: {{on_demand: 0.40}}, exclusive: {str(exclusive).lower()}}}
        """))
    return Cluster.load(path)


def test_an_unpriced_pool_never_wins_silently_over_a_priced_one(tmp_path):
    cluster = _two_pools(tmp_path)
    p = cluster.place(Compute.cpu())
    assert p.pool == "priced" and p.runner_up.pool.name == "unpriced"
    assert "runner-up unpriced (on-demand, no price in the profile)" in format_table(cluster, plan(cluster, {"s": Compute.cpu()}))


def test_an_exclusive_pool_charges_the_whole_node(tmp_path):
    assert _two_pools(tmp_path, exclusive=True).place(Compute.cpu()).price_per_hour == 0.40
    assert _two_pools(tmp_path).place(Compute.cpu()).price_per_hour < 0.40


def test_plan_shows_the_chosen_pool_and_the_runner_up_with_prices():
    cluster = Cluster.load("gke")
    text = format_table(cluster, plan(cluster, {"gpu": Compute.gpu()}))
    assert "gpu: gpu-l4-training-ondemand (on-demand, $0.91/h); runner-up gpu-a100-training (on-demand, $3.67/h)" in text


# ------------------------------------------------------------------ preferences with fallback
def test_spot_prefer_tolerates_spot_and_prefers_it_with_an_on_demand_fallback():
    p = place("gke", Compute.gpu(cpu="3", memory="12Gi", spot="prefer"))
    assert [(c.pool.name, c.spot) for c in p.options] == [("gpu-l4-training", True), ("gpu-l4-training-ondemand", False)]
    assert {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in dicts(p.tolerations)
    node = p.affinity.to_dict()["nodeAffinity"]
    spot_term = [{"key": "cloud.google.com/gke-nodepool", "operator": "In", "values": ["gpu-l4-training"]},
                 {"key": "cloud.google.com/gke-spot", "operator": "In", "values": ["true"]}]
    od_term = [{"key": "cloud.google.com/gke-nodepool", "operator": "In", "values": ["gpu-l4-training-ondemand"]}]
    assert node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [
        {"matchExpressions": spot_term}, {"matchExpressions": od_term}]
    assert node["preferredDuringSchedulingIgnoredDuringExecution"] == [
        {"weight": 100, "preference": {"matchExpressions": spot_term}},
        {"weight": 50, "preference": {"matchExpressions": od_term}}]
    assert p.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}


def test_spot_true_requires_and_false_avoids():
    assert place("gke", Compute.cpu(spot=True)).node_selector["cloud.google.com/gke-spot"] == "true"
    avoid = place("eks", Compute.gpu(count=8))
    assert avoid.node_selector["karpenter.sh/capacity-type"] == "on-demand" and avoid.affinity is None
    with pytest.raises(ComputeError, match=r"spot='maybe' is not valid: True .*False .*'prefer'"):
        Compute.gpu(spot="maybe")


def test_prefer_where_a_cluster_has_no_spot_is_plain_on_demand():
    p = place("generic", Compute.gpu(cpu="3", memory="12Gi", spot="prefer"))
    assert len(p.options) == 1 and not p.spot and p.affinity is None


# ------------------------------------------------------------------ ordered candidates, minimums
def test_ordered_candidates_require_in_and_prefer_in_order():
    p = place("gke", Compute.gpu(model=["h100-80gb", "a100-80gb"], cpu="8", memory="64Gi"))
    assert [c.model for c in p.options] == ["h100-80gb", "a100-80gb"]
    terms = p.affinity.to_dict()["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [
        {"key": "cloud.google.com/gke-nodepool", "operator": "In", "values": ["gpu-h100-training", "gpu-a100-80gb-training"]},
        {"key": "cloud.google.com/gke-accelerator", "operator": "In", "values": ["nvidia-h100-80gb", "nvidia-a100-80gb"]},
    ]}]
    weights = [t["weight"] for t in p.affinity.to_dict()["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]]
    assert weights == sorted(weights, reverse=True) and len(weights) == 2
    assert place("gke", Compute.gpu(model=["a100-80gb", "h100-80gb"], cpu="8", memory="64Gi")).pool == "gpu-a100-80gb-training"


def test_a_memory_minimum_resolves_to_the_catalog_models_and_the_cheapest_first():
    c = Compute.gpu(gpu_memory="40Gi", cpu="8", memory="64Gi")
    assert c.accelerator.candidates[:3] == ("a100-40gb", "l40s", "a100-80gb")
    assert "t4" not in c.accelerator.candidates and "l4" not in c.accelerator.candidates
    p = place("gke", c)
    # cheapest first, the unpriced H100 pool last
    assert [(o.pool.name, o.price) for o in p.options] == [
        ("gpu-a100-training", 3.673), ("gpu-a100-80gb-training", 5.0688), ("gpu-h100-training", None)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"model": []}, r"model=\[\] is not valid: one catalog name or a non-empty list"),
    ({"model": ["h100-80gb", "a100"]}, r"model\[1\]='a100' is not valid.*Did you mean 'a100-40gb' or 'a100-80gb'"),
    ({"gpu_memory": "400Gi"}, r"gpu_memory='400Gi' is not valid: at most 180Gi.*b200"),
    ({"model": ["l4", "l4"]}, r"model\[1\]='l4' is not valid: each model once"),
    ({"model": ["a100-40gb", "a100-80gb"], "mig": "1g.5gb"}, r"mig='1g.5gb' .*one GPU model"),
])
def test_bad_candidates_are_refused_clearly(kwargs, message):
    with pytest.raises(ComputeError, match=message) as e:
        Compute.gpu(**kwargs)
    assert "\n" not in str(e.value)


def test_a_list_from_plain_data_is_accepted():
    c = Compute.from_dict({"kind": "gpu", "model": ["h100-80gb", "a100-80gb"]})
    assert c.accelerator.model == ("h100-80gb", "a100-80gb") and hash(c.accelerator)


def test_lint_and_plan_show_the_candidates_in_order():
    cluster = Cluster.load("gke")
    step = flow("train_gpu_export_npu").with_compute(
        train=Compute.gpu(model=["h100-80gb", "a100-80gb"], cpu="8", memory="64Gi"))
    notes = [f for f in lint(step, cluster) if f.step == "train"]
    assert any("candidates in order: h100-80gb (gpu-h100-training), a100-80gb (gpu-a100-80gb-training)" in f.message
               for f in notes)
    text = format_table(cluster, plan(cluster, step.computes()))
    assert "1. gpu-h100-training" in text and "2. gpu-a100-80gb-training" in text


# ------------------------------------------------------------------ profiles and defaults
def test_the_eks_a10g_node_group_is_selected_by_a_label_its_nodes_have():
    pool = next(p for p in Cluster.load("eks").node_pools if p.name == "gpu-a10g-inference")
    assert pool.labels == {"eks.amazonaws.com/nodegroup": "gpu-a10g-inference"}  # no Karpenter-only label


def test_every_shipped_profile_names_the_source_of_its_labels_and_reservations():
    for name in shipped_clusters():
        sources = Cluster.load(name).sources
        assert {"reservations", "daemonsets"} <= set(sources), name
        assert "node_labels" in sources or name == "generic", name  # generic's labels source is `labels` (GFD)


@pytest.mark.parametrize("cluster_name", shipped_clusters())
def test_every_builtin_default_places_where_its_hardware_exists(cluster_name):
    cluster = Cluster.load(cluster_name)
    for builtin in builtin_steps():
        step, compute = builtin.name, builtin.compute
        try:
            cluster.place(compute)
        except PlacementError as e:
            # only a device the cluster does not have at all: TPUs outside GKE, Intel NPUs outside generic
            assert compute.kind in ("tpu", "npu") and "no node pool offers" in str(e), (step, str(e))


EXAMPLE_FLOW = str(Path(__file__).resolve().parent.parent / "examples" / "my_project" / "my_flow.py")


@pytest.mark.parametrize("cluster_name", shipped_clusters())
@pytest.mark.parametrize("flow_name", [*FLOW_NAMES, EXAMPLE_FLOW])
def test_example_flows_are_lint_clean(flow_name, cluster_name):
    findings = [f for f in lint(flow(flow_name), Cluster.load(cluster_name)) if f.level in ("error", "warning")]
    if flow_name == "train_tpu" and cluster_name != "gke":
        assert [f.message for f in findings if "no tpu pools" not in f.message] == []
    else:
        assert findings == []


def test_lint_cli_on_the_flagship_flow_and_generic():
    proc = subprocess.run([sys.executable, "-m", "xpuflow", "lint", "train_gpu_export_npu", "--cluster", "generic"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 error(s), 0 warning(s)" in proc.stdout


def test_the_spot_hint_names_only_spot_pools_this_compute_could_use():
    a100 = flow("train_gpu_export_npu").with_compute(train=Compute.gpu(model="a100-40gb", cpu="3", memory="12Gi"))
    def hints(cluster):
        return [f for f in lint(a100, Cluster.load(cluster)) if "spot='prefer'" in f.message]
    assert hints("gke") == [] and hints("aks") == []  # their spot GPU pools are L4 / T4, not A100
    assert len(hints("eks")) == 1  # the Karpenter A100 pool runs spot too


def test_plan_json_carries_the_options_and_the_runner_up():
    import json

    from xpuflow.plan import to_json

    cluster = Cluster.load("gke")
    rows = json.loads(to_json(plan(cluster, {"train": Compute.gpu(cpu="3", memory="12Gi", spot="prefer")})))
    placed = rows[0]["placement"]
    assert [(o["pool"], o["spot"], o["price_per_hour"]) for o in placed["options"]] == [
        ("gpu-l4-training", True, 0.27), ("gpu-l4-training-ondemand", False, 0.91)]
    assert placed["runner_up"]["pool"] == "gpu-l4-training-ondemand"
