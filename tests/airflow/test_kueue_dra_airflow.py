"""Kueue labels and DRA claims on the pod that Airflow's KubernetesPodOperator builds (newest provider).

The pod comes from the operator's own build_pod_request_obj(dry_run=True); the claims reach it
through the pod template the operator merges its own pod over (pod_template_dict).
"""

from __future__ import annotations

import airflow_pods
import kubernetes_validate
import pss
import pytest

from xpuflow import Cluster, Compute, RenderError
from xpuflow.render import airflow as render_airflow
from xpuflow.render import kubernetes

VERSIONS = ("1.34", "1.37")


def _valid(pod: dict) -> None:
    for version in VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)
    assert pss.violations(pod["spec"]) == []


def test_queued_pod_carries_queue_priority_and_topology():
    p = Cluster.load("gke").place(Compute.gpu(model="l4", spot=True, queue="team-a", priority="high",
                                              require_topology="node"))
    pod = airflow_pods.build_pod(p, task_id="train")
    _valid(pod)
    labels = pod["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "team-a" and labels["kueue.x-k8s.io/priority-class"] == "high"
    assert pod["metadata"]["annotations"] == {"kueue.x-k8s.io/podset-required-topology": "kubernetes.io/hostname"}
    # the flavor injects the pool's tolerations; the pod keeps only what the flavor does not add
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"} not in (
        pod["spec"].get("tolerations") or [])


def test_claimed_gpu_reaches_the_pod_through_its_template():
    p = Cluster.load("generic").place(Compute.gpu(model="l4", count=2, claim=True))
    pod = airflow_pods.build_pod(p, task_id="embed_docs")
    _valid(pod)
    (template,) = kubernetes.resource_claim_templates(p, name="embed_docs")
    assert pod["spec"]["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": template["metadata"]["name"]}]
    assert template["metadata"]["name"] == "embed-docs-gpu"
    (container,) = pod["spec"]["containers"]
    assert container["name"] == "base" and container["image"]
    assert container["resources"]["claims"] == [{"name": "gpu"}]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]


def test_claim_needs_the_task_id():
    p = Cluster.load("generic").place(Compute.gpu(model="l4", claim=True))
    with pytest.raises(RenderError, match=r"pass step=<task id>"):
        render_airflow.pod_kwargs(p)


def test_users_pod_template_keeps_the_claims():
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import ApiClient

    p = Cluster.load("generic").place(Compute.gpu(model="l4", claim=True))
    mine = {"metadata": {"labels": {"team": "ml"}}, "spec": {"containers": [{"name": "base"}], "hostname": "embedder"}}
    op = KubernetesPodOperator(**render_airflow.operator_kwargs(
        p, step="embed", task_id="embed", name="embed", namespace="ml", image="img", pod_template_dict=mine))
    pod = ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))
    _valid(pod)
    assert pod["spec"]["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": "embed-gpu"}]
    assert pod["spec"]["hostname"] == "embedder" and pod["metadata"]["labels"]["team"] == "ml"
    clash = {"spec": {"containers": [{"name": "base"}], "resourceClaims": [{"name": "gpu", "resourceClaimName": "x"}]}}
    with pytest.raises(RenderError, match=r"step 'embed': pod_template_dict resourceClaims 'gpu' is also the placement"):
        render_airflow.operator_kwargs(p, step="embed", task_id="embed", pod_template_dict=clash)


def test_first_available_claim_reaches_the_pod():
    p = Cluster.load("generic").place(Compute.gpu(model=["a100-40gb", "l4"], claim=True))
    pod = airflow_pods.build_pod(p, task_id="train")
    _valid(pod)
    (template,) = kubernetes.resource_claim_templates(p, name="train")
    assert [a["name"] for a in template["spec"]["spec"]["devices"]["requests"][0]["firstAvailable"]] == ["a100-40gb", "l4"]
    assert pod["spec"]["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": "train-gpu"}]
    assert pod["spec"]["containers"][0]["resources"]["claims"] == [{"name": "gpu"}]


def test_compiled_dag_claims_from_the_templates_written_beside_it(tmp_path):
    """A user's flow file compiled for Airflow: <dag>.claims.yaml holds the templates the DAG's pods name."""
    import yaml
    from kubernetes.client import ApiClient

    from xpuflow.airflow import build_dag
    from xpuflow.commands.compile import compile_pipeline, dag_claim_templates

    import claimed_flow

    flow_file = claimed_flow.write(tmp_path, model=["a100-40gb", "l4"])
    dag_file = compile_pipeline(str(flow_file), "airflow", "generic", str(tmp_path / "dags" / "claimed.py"))
    claims = dag_claim_templates(str(flow_file), "generic", str(dag_file))
    assert claims == tmp_path / "dags" / "claimed.claims.yaml"
    (template,) = [d for d in yaml.safe_load_all(claims.read_text()) if d]
    for version in VERSIONS:
        kubernetes_validate.validate(template, version, strict=True)
    dag = build_dag(f"{flow_file}:claimed", cluster="generic", mode="cluster")
    pod = ApiClient().sanitize_for_serialization(dag.get_task("train").build_pod_request_obj(dry_run=True))
    _valid(pod)
    assert pod["spec"]["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": template["metadata"]["name"]}]
    assert dag_claim_templates("train_gpu_export_npu", "generic", str(tmp_path / "plain.py")) is None
