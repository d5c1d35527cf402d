"""Cluster profiles: shipped ones load, custom YAML is validated with YAML-path errors."""

from __future__ import annotations

import re

import pytest

from profiles import GOOD

from xpuflow import Cluster, ClusterFileError, Compute
from xpuflow.catalog import catalog, shipped_clusters



def write(tmp_path, text: str):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return path


def test_shipped_profiles_load_and_name_themselves():
    assert set(shipped_clusters()) == {"gke", "eks", "aks", "generic"}
    for name in shipped_clusters():
        cluster = Cluster.load(name)
        assert cluster.name == name
        assert cluster.node_pools


def test_every_shipped_fact_has_a_source_and_date():
    for name in shipped_clusters():
        cluster = Cluster.load(name)
        assert cluster.sources, name
        for src in cluster.sources.values():
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", src["date"]) and src["ref"]
    cat = catalog()
    for entry in [*cat.gpus.values(), *cat.tpus.values(), *cat.npus.values()]:
        assert entry.source in cat.sources, entry


def test_custom_cluster_file_loads_and_places(tmp_path):
    cluster = Cluster.load(write(tmp_path, GOOD))
    placement = cluster.place(Compute.gpu(count=2, model="l4"))
    assert placement.pool == "gpu"
    assert placement.limits["nvidia.com/gpu"] == "2"
    # the GPU pool is untainted, so CPU work is kept off it by the pool label
    cpu = cluster.place(Compute.cpu())
    expr = cpu.affinity.to_dict()["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert expr["matchExpressions"] == [{"key": "example.com/pool", "operator": "NotIn", "values": ["gpu"]}]


BAD = [
    ("missing name", GOOD.replace("name: lab\n", ""), r"cluster\.yaml: name: missing required key"),
    ("missing node_pools", "name: lab\n", r"node_pools: missing required key"),
    ("empty node_pools", "name: lab\nnode_pools: []\n", r"node_pools: expected at least 1 item"),
    ("unknown top key", GOOD + "regoin: x\n", r"regoin: unknown key\. Did you mean 'region'\?"),
    ("unknown pool key", GOOD.replace("    cpu: \"4\"", "    cpus: \"4\""),
     r"node_pools\[0\]\.cpus: unknown key\. Did you mean 'cpu'\?"),
    ("wrong type count", GOOD.replace("count: 2", "count: two"), r"node_pools\[1\]\.gpu\.count: expected a whole number >= 1, found 'two'"),
    ("zero count", GOOD.replace("count: 2", "count: 0"), r"node_pools\[1\]\.gpu\.count: expected a whole number >= 1, found 0"),
    ("label value not string", GOOD.replace("{example.com/pool: gpu}", "{example.com/pool: true}"),
     r"node_pools\[1\]\.labels\.example\.com/pool: expected a string label value, found True .*quote it"),
    ("unknown gpu model", GOOD.replace("model: l4", "model: l40"), r"node_pools\[1\]\.gpu\.model: unknown GPU model 'l40'\. Did you mean 'l40s'\?"),
    ("bad mig", GOOD.replace("model: l4, count: 2", "model: a100-80gb, count: 7, mig: 1g.5gb"),
     r"node_pools\[1\]\.gpu\.mig: '1g\.5gb' is not a MIG profile of a100-80gb"),
    ("bad taint effect", GOOD.replace("labels: {example.com/pool: gpu}", "labels: {example.com/pool: gpu}\n    taints: [{key: a, effect: NoScedule}]"),
     r"node_pools\[1\]\.taints\[0\]\.effect: expected one of NoSchedule, .* Did you mean 'NoSchedule'\?"),
    ("price not a number", GOOD.replace("on_demand: 1.5", "on_demand: cheap"), r"node_pools\[1\]\.price\.on_demand: expected a number"),
    ("two accelerators", GOOD.replace("gpu: {model: l4, count: 2}", "gpu: {model: l4, count: 2}\n    npu: {device: intel-npu, count: 1}"),
     r"node_pools\[1\]: has both 'gpu' and 'npu'"),
    ("tpu bad topology", GOOD.replace("gpu: {model: l4, count: 2}", "tpu: {version: v5e, topologies: [2x2x1]}")
     + "tpu_labels: {accelerator: a, topology: b}\n", r"node_pools\[1\]\.tpu\.topologies\[0\]: '2x2x1' is not a v5e topology"),
    ("duplicate pool", GOOD.replace("- name: gpu", "- name: cpu"), r"node_pools\[1\]\.name: duplicate pool name 'cpu'"),
    ("bad quantity", GOOD.replace('memory: 16Gi', 'memory: 16GB'), r"node_pools\[0\]\.memory: .*16GB"),
    ("untainted pool without identity", GOOD.replace("pool_label: example.com/pool\n", ""),
     r"node_pools\[1\]: an untainted accelerator pool needs a label"),
    ("not yaml", "name: [lab\n", r"not valid YAML"),
    ("not a mapping", "- a\n- b\n", r"<top>: expected a mapping"),
    ("bad pool name", GOOD.replace("- name: gpu", "- name: GPU_Pool"), r"node_pools\[1\]\.name: expected a lowercase DNS label"),
]


@pytest.mark.parametrize(("case", "text", "pattern"), BAD, ids=[b[0] for b in BAD])
def test_bad_cluster_files_point_at_the_yaml_path(tmp_path, case, text, pattern):
    with pytest.raises(ClusterFileError) as info:
        Cluster.load(write(tmp_path, text))
    message = str(info.value)
    assert message.startswith(str(tmp_path / "cluster.yaml")), message
    assert re.search(pattern, message), f"{case}: {message}"
