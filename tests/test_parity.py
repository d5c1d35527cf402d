"""Parity: the same Compute on the same Cluster gives identical requests, limits,
node selector, tolerations and affinity from all three renderers.

Full matrix (every Compute kind x every shipped cluster): the Kubernetes
renderer's Pod spec, the KFP compiled IR, and the pod that Airflow's
KubernetesPodOperator builds (in the Airflow venv) are reduced to the same
shape and compared with the Placement itself.
"""

from __future__ import annotations

import matrix
import pytest
from kfp_compile import compile_tasks
from normalize import from_kfp_ir, from_pod_spec

from xpuflow import PlacementError, RenderError
from xpuflow.render import airflow as render_airflow
from xpuflow.render import kubernetes


def expected(p):
    return {
        "requests": p.requests,
        "limits": p.limits,
        "nodeSelector": p.node_selector,
        "tolerations": sorted(p.tolerations, key=lambda t: tuple(str(t.get(k)) for k in ("key", "operator", "value", "effect"))),
        "affinity": p.affinity,
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
