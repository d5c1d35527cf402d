"""TPU slices: every version x topology x chips-per-host combination checked against the catalog."""

from __future__ import annotations

import re

import pytest

from xpuflow import Cluster, Compute, ComputeError, RenderError
from xpuflow.podspec import dicts
from xpuflow.catalog import catalog
from xpuflow.render import airflow as render_airflow
from xpuflow.render import kfp as render_kfp
from xpuflow.render import kubernetes

CAT = catalog().tpus
ALL_TOPOLOGIES = sorted({t for v in CAT.values() for t in v.topologies} | {"1x2", "3x3", "4x4x2", "16x16x16", "2x2x3"})
INVALID = [(v, t) for v in CAT for t in ALL_TOPOLOGIES if t not in CAT[v].topologies]
VALID = [(v, t) for v in CAT for t in CAT[v].topologies]


def test_tables_cover_every_version():
    assert set(CAT) == {"v4", "v5e", "v5p", "v6e"}
    assert len(INVALID) > 40 and len(VALID) == sum(len(v.topologies) for v in CAT.values())


@pytest.mark.parametrize(("version", "topology"), INVALID, ids=[f"{v}-{t}" for v, t in INVALID])
def test_invalid_topology_lists_the_valid_ones(version, topology):
    valid = ", ".join(CAT[version].topologies)
    with pytest.raises(ComputeError, match=re.escape(f"{version} topology: {valid}")):
        Compute.tpu(version=version, topology=topology)


@pytest.mark.parametrize(("version", "topology"), VALID, ids=[f"{v}-{t}" for v, t in VALID])
def test_valid_topology_shape_is_consistent(version, topology):
    c = Compute.tpu(version=version, topology=topology)
    dims = [int(d) for d in topology.split("x")]
    chips = 1
    for d in dims:
        chips *= d
    assert c.chips == chips and c.chips_per_host * c.hosts == chips
    assert c.chips_per_host in (1, 4, 8)
    assert len(dims) == (3 if version in ("v4", "v5p") else 2)
    # asking for the catalog's chips per host is fine; anything else is refused with the table
    assert Compute.tpu(version=version, topology=topology, chips_per_host=c.chips_per_host) == c
    wrong = 8 if c.chips_per_host != 8 else 4
    with pytest.raises(ComputeError, match=rf"chips_per_host={wrong} .*{version} chips per host by topology: "):
        Compute.tpu(version=version, topology=topology, chips_per_host=wrong)


@pytest.mark.parametrize(("version", "topology"), VALID, ids=[f"{v}-{t}" for v, t in VALID])
def test_every_valid_slice_places_on_gke(version, topology):
    c = Compute.tpu(version=version, topology=topology)
    p = Cluster.load("gke").place(c)
    assert p.limits["google.com/tpu"] == str(c.chips_per_host) and p.hosts == c.hosts
    assert p.node_selector["cloud.google.com/gke-tpu-accelerator"] == CAT[version].accelerator
    assert p.node_selector["cloud.google.com/gke-tpu-topology"] == topology
    assert {"key": "google.com/tpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"} in dicts(p.tolerations)
    assert p.env["PJRT_DEVICE"] == "TPU"
    if c.hosts == 1:
        job = kubernetes.job(p, name="t", image="img")
        assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["google.com/tpu"] == str(c.chips_per_host)
        assert render_airflow.pod_kwargs(p)["container_resources"]["limits"]["google.com/tpu"] == str(c.chips_per_host)
    else:
        for render in (lambda: kubernetes.job(p, name="t", image="img"), lambda: render_airflow.pod_kwargs(p)):
            with pytest.raises(RenderError, match=r"multi_host .*xpuflow\.render\.jobset\.jobset\(\)"):
                render()


def test_kfp_runs_single_host_slices_and_refuses_multi_host_with_what_to_use(tmp_path):
    from kfp import compiler, dsl
    from kfp_compile import noop_step

    gke = Cluster.load("gke")
    single, multi = gke.place(Compute.tpu(version="v6e", topology="2x4")), gke.place(Compute.tpu(version="v6e", topology="4x4"))
    errors = []

    @dsl.pipeline(name="tpu")
    def pipeline():
        render_kfp.apply(noop_step(message="a"), single)
        try:
            render_kfp.apply(noop_step(message="b"), multi)
        except RenderError as e:
            errors.append(str(e))

    compiler.Compiler().compile(pipeline, str(tmp_path / "p.yaml"))
    assert len(errors) == 1 and "JobSet" in errors[0] and "single-host topology" in errors[0]
