"""Parity: the same Compute on the same Cluster gives identical requests, limits,
node selector, tolerations and affinity from all three renderers.

Full matrix (every Compute kind x every shipped cluster): the Kubernetes
renderer's Pod spec, the KFP compiled IR, and the pod that Airflow's
KubernetesPodOperator builds (in the Airflow venv) are reduced to the same
shape and compared with the Placement itself.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import matrix
import pytest
import user_project
import yaml
from kfp_compile import compile_tasks
from normalize import from_kfp_ir, from_pod_spec

from xpuflow import Cluster, PlacementError, RenderError
from xpuflow.podspec import dicts
from xpuflow.commands.compile import manifests
from xpuflow.dsl.load import load_flow
from xpuflow.kfp import pipeline
from xpuflow.render import airflow as render_airflow
from xpuflow.render import kubernetes

ROOT = Path(__file__).resolve().parent.parent


def expected(p):
    return {
        "requests": p.requests,
        "limits": p.limits,
        "nodeSelector": p.node_selector,
        "tolerations": sorted(dicts(p.tolerations), key=lambda t: tuple(str(t.get(k)) for k in ("key", "operator", "value", "effect"))),
        "affinity": p.scheduling().get("affinity"),
    }


@pytest.fixture(scope="module")
def kfp_ir(tmp_path_factory):
    cases = matrix.renderable()
    return compile_tasks({f"{c}/{k}": p for c, k, p in cases}, tmp_path_factory.mktemp("parity") / "p.yaml")


def test_full_matrix_parity(kfp_ir, airflow_pods):
    cases = matrix.renderable()
    assert len(cases) == len(airflow_pods) >= 20
    for cluster, case, placement in cases:
        key = f"{cluster}/{case}"
        want = expected(placement)
        k8s = from_pod_spec(kubernetes.pod_spec(placement, image=matrix.IMAGE))
        kfp = from_kfp_ir(kfp_ir, key)
        af = from_pod_spec(airflow_pods[key]["spec"])
        assert k8s == want, f"kubernetes differs for {key}"
        assert kfp == want, f"kfp differs for {key}"
        assert af == want, f"airflow differs for {key}"


def test_matrix_outcomes_are_all_explained():
    """Every cell of the matrix renders, or is refused with a clear error: nothing in between."""
    outcomes = {}
    for cluster, case, result in matrix.cases():
        if isinstance(result, PlacementError):
            assert "Fix:" in str(result) and cluster in str(result)
            outcomes[(cluster, case)] = "not offered"
        elif result.hosts > 1:
            for render in (lambda p: kubernetes.job(p, name="x", image=matrix.IMAGE),
                           lambda p: render_airflow.pod_kwargs(p)):
                with pytest.raises(RenderError, match="multi_host"):
                    render(result)
            outcomes[(cluster, case)] = "multi-host"
        else:
            outcomes[(cluster, case)] = "rendered"
    assert len(outcomes) == len(matrix.CLUSTERS) * len(matrix.COMPUTES)
    assert outcomes[("gke", "tpu-multihost")] == "multi-host"
    assert outcomes[("eks", "tpu")] == "not offered"
    assert outcomes[("aks", "npu")] == "not offered"
    assert outcomes[("generic", "gpu-mig")] == "rendered"


def test_a_user_flow_places_identically_on_every_backend(tmp_path):
    """A user's own steps (CPU, GPU, NPU and a flow default): the KFP pipeline, the Kubernetes Jobs and the Airflow
    DAG's pods of their flow carry the same placement, on two clusters."""
    from kfp import compiler

    from conftest import AIRFLOW_PY

    flow_file = user_project.write_project(tmp_path / "project")
    user_project.importable(tmp_path / "project")
    env = user_project.env(tmp_path / "project", ROOT)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "support"), env["PYTHONPATH"]])
    proc = subprocess.run([str(AIRFLOW_PY), str(ROOT / "tests" / "support" / "airflow_pods.py"), str(tmp_path / "pods.json"),
                           "--flow", str(flow_file), *user_project.CLUSTERS], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    airflow = json.loads((tmp_path / "pods.json").read_text())
    fl = load_flow(str(flow_file))
    kinds = set()
    for cluster in user_project.CLUSTERS:
        cl = Cluster.load(cluster)
        compiler.Compiler().compile(pipeline(fl, cl), str(tmp_path / f"{cluster}.yaml"))
        kfp = list(yaml.safe_load_all((tmp_path / f"{cluster}.yaml").read_text()))
        jobs = list(yaml.safe_load_all(manifests(fl, cl, tmp_path / f"{cluster}-jobs.yaml", "s3://b/r").read_text()))
        for task, job in zip(fl.tasks, [j for j in jobs if j], strict=True):
            placement = cl.place(task.compute)
            kinds.add(placement.kind)
            want = expected(placement)
            assert from_kfp_ir(kfp, task.name.replace("_", "-")) == want, f"kfp differs for {cluster}/{task.name}"
            assert from_pod_spec(job["spec"]["template"]["spec"]) == want, f"kubernetes differs for {cluster}/{task.name}"
            assert from_pod_spec(airflow[f"{cluster}/{task.name}"]["spec"]) == want, f"airflow differs for {cluster}/{task.name}"
    assert kinds == {"cpu", "gpu", "npu"}
