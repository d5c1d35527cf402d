"""Airflow renderer, in the Airflow venv against the newest cncf-kubernetes provider.

Pods are built with KubernetesPodOperator's own build_pod_request_obj(dry_run=True)
and validated like the Kubernetes renderer's output.
"""

from __future__ import annotations

import inspect

import airflow_pods
import kubernetes_validate
import matrix
import pss
import pytest
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

from xpuflow import Cluster, Compute, RenderError
from xpuflow.podspec import dicts
from xpuflow.render import airflow as render_airflow

VERSIONS = ("1.31", "1.33", "1.35")


@pytest.fixture(scope="module")
def pods():
    return airflow_pods.all_pods()


def test_every_argument_we_pass_exists_on_the_operator():
    # pins the edge: the provider once renamed `resources` to `container_resources`
    accepted = set(inspect.signature(KubernetesPodOperator.__init__).parameters)
    accepted |= {"retries"}  # BaseOperator
    for _, _, placement in matrix.renderable():
        assert set(render_airflow.pod_kwargs(placement)) <= accepted


@pytest.mark.parametrize("version", VERSIONS)
def test_built_pods_pass_strict_validation(pods, version):
    for key, pod in pods.items():
        kubernetes_validate.validate(pod, version, strict=True)


def test_built_pods_are_restricted(pods):
    for key, pod in pods.items():
        assert pss.violations(pod["spec"]) == [], key


def test_built_pod_carries_the_placement():
    compute = Compute.gpu(model="l4", spot=True, timeout=5400, retries=2, priority_class="batch-high", grace_period=60)
    placement = Cluster.load("gke").place(compute)
    op_kwargs = render_airflow.operator_kwargs(placement, step="train")
    assert op_kwargs["retries"] == 2
    pod = airflow_pods.build_pod(placement, task_id="train")
    spec = pod["spec"]
    container = spec["containers"][0]
    assert container["resources"] == {"requests": placement.requests, "limits": placement.limits}
    assert spec["nodeSelector"] == placement.node_selector
    assert spec["priorityClassName"] == "batch-high"
    assert spec["terminationGracePeriodSeconds"] == 60
    assert spec["activeDeadlineSeconds"] == 5400
    assert spec["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}}]
    assert container["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert spec["automountServiceAccountToken"] is False
    assert pod["metadata"]["labels"]["xpuflow.io/node-pool"] == "gpu-l4-training"


def test_cpu_affinity_reaches_the_pod():
    placement = Cluster.load("aks").place(Compute.cpu())
    pod = airflow_pods.build_pod(placement, task_id="prep")
    assert pod["spec"]["affinity"] == placement.affinity.to_dict()


def test_multi_host_is_refused():
    placement = Cluster.load("gke").place(Compute.tpu(version="v6e", topology="4x4"))
    with pytest.raises(RenderError, match=r"step 'train': KubernetesPodOperator cannot express multi_host"):
        render_airflow.operator_kwargs(placement, step="train")


def test_plain_kwargs_need_no_kubernetes_client():
    kwargs = render_airflow.pod_kwargs(Cluster.load("eks").place(Compute.npu(device="aws-inferentia2")))
    assert kwargs["container_resources"]["limits"]["aws.amazon.com/neuron"] == "1"
    assert kwargs["tolerations"] == [{"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"}]


# ------------------------------------------------------------- a user's own operator arguments
def _pod(**kwargs):
    from kubernetes.client import ApiClient

    op = KubernetesPodOperator(**kwargs)
    return op, ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))


def _user_kwargs(k8s):
    return dict(
        task_id="train", name="train", namespace="ml", image=matrix.IMAGE, cmds=["true"],
        tolerations=[k8s.V1Toleration(key="team", operator="Equal", value="ml", effect="NoSchedule")],
        labels={"team": "ml"}, annotations={"owner": "me"},
        volumes=[k8s.V1Volume(name="data", empty_dir=k8s.V1EmptyDirVolumeSource())],
        volume_mounts=[k8s.V1VolumeMount(name="data", mount_path="/data")],
        env_vars={"MY_VAR": "1", "XPUFLOW_NODE_POOL": "mine"},
        node_selector={"team": "ml"},
    )


def test_the_users_own_kwargs_merge_with_the_placement():
    from kubernetes.client import models as k8s

    placement = Cluster.load("gke").place(Compute.gpu(model="l4", spot=True))
    _, pod = _pod(**render_airflow.operator_kwargs(placement, step="train", **_user_kwargs(k8s)))
    spec, container = pod["spec"], pod["spec"]["containers"][0]
    assert spec["nodeSelector"] == {**placement.node_selector, "team": "ml"}
    assert spec["tolerations"] == [*dicts(placement.tolerations), {"key": "team", "operator": "Equal", "value": "ml",
                                                            "effect": "NoSchedule"}]
    assert {v["name"] for v in spec["volumes"]} == {"dshm", "data"}
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/dev/shm", "/data"}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MY_VAR"] == "1" and env["XPUFLOW_NODE_POOL"] == "mine"  # yours wins on the same name
    assert env["XPUFLOW_COMPUTE_KIND"] == "gpu"
    assert pod["metadata"]["labels"]["team"] == "ml" and pod["metadata"]["labels"]["xpuflow.io/compute"] == "gpu"
    assert pod["metadata"]["annotations"]["owner"] == "me"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pss.violations(spec) == []


def test_the_users_affinity_is_combined_with_the_placements():
    from kubernetes.client import models as k8s

    placement = Cluster.load("aks").place(Compute.cpu())  # keeps off untainted GPU pools with NotIn
    term = k8s.V1NodeSelectorTerm(match_expressions=[
        k8s.V1NodeSelectorRequirement(key="topology.kubernetes.io/zone", operator="In", values=["eastus-1"])])
    mine = k8s.V1Affinity(
        node_affinity=k8s.V1NodeAffinity(required_during_scheduling_ignored_during_execution=k8s.V1NodeSelector(
            node_selector_terms=[term])),
        pod_anti_affinity=k8s.V1PodAntiAffinity(preferred_during_scheduling_ignored_during_execution=[
            k8s.V1WeightedPodAffinityTerm(weight=1, pod_affinity_term=k8s.V1PodAffinityTerm(
                topology_key="kubernetes.io/hostname"))]))
    _, pod = _pod(**render_airflow.operator_kwargs(placement, task_id="prep", image=matrix.IMAGE, affinity=mine))
    affinity = pod["spec"]["affinity"]
    (term_out,) = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    ours = placement.affinity.to_dict()["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term_out["matchExpressions"] == [{"key": "topology.kubernetes.io/zone", "operator": "In",
                                             "values": ["eastus-1"]}, *ours[0]["matchExpressions"]]
    assert affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 1


CONFLICTS = [
    ("selector", {"node_selector": {"cloud.google.com/gke-nodepool": "cpu-general"}},
     r"step 'train': node_selector\['cloud.google.com/gke-nodepool'\]='cpu-general' contradicts the placement's"),
    ("shm", {"volume_mounts": [{"name": "myshm", "mountPath": "/dev/shm"}]},
     r"volume mount mountPath '/dev/shm' is defined by the placement .* Compute\(..., shm=None\)"),
    ("resources", {"container_resources": {"limits": {"cpu": "1"}}},
     r"container_resources=.* would replace the Compute's .* Fix: size the task in its Compute"),
]


@pytest.mark.parametrize(("case", "kwargs", "pattern"), CONFLICTS, ids=[c[0] for c in CONFLICTS])
def test_contradicting_kwargs_are_refused_in_one_line(case, kwargs, pattern):
    placement = Cluster.load("gke").place(Compute.gpu(model="l4", spot=True))
    with pytest.raises(RenderError, match=pattern):
        render_airflow.operator_kwargs(placement, step="train", **kwargs)


def test_env_vars_as_a_list_keep_value_from():
    from kubernetes.client import models as k8s

    secret = k8s.V1EnvVar(name="TOKEN", value_from=k8s.V1EnvVarSource(
        secret_key_ref=k8s.V1SecretKeySelector(name="s", key="token")))
    placement = Cluster.load("gke").place(Compute.cpu())
    kwargs = render_airflow.operator_kwargs(placement, env_vars=[secret, k8s.V1EnvVar(name="XPUFLOW_NODE_POOL", value="x")])
    by_name = {e.name: e for e in kwargs["env_vars"]}
    assert by_name["TOKEN"].value_from.secret_key_ref.key == "token"
    assert by_name["XPUFLOW_NODE_POOL"].value == "x" and by_name["XPUFLOW_COMPUTE_KIND"].value == "cpu"


def test_retries_only_when_the_compute_sets_them():
    from airflow.sdk import DAG

    gke = Cluster.load("gke")
    with DAG("retries", schedule=None, default_args={"retries": 4}):
        default = KubernetesPodOperator(task_id="a", image=matrix.IMAGE,
                                        **render_airflow.operator_kwargs(gke.place(Compute.cpu())))
        own = KubernetesPodOperator(task_id="b", image=matrix.IMAGE,
                                    **render_airflow.operator_kwargs(gke.place(Compute.cpu(retries=2))))
    assert (default.retries, own.retries) == (4, 2)


def test_the_xcom_sidecar_is_restricted_too():
    placement = Cluster.load("gke").place(Compute.gpu(model="l4", spot=True))
    _, pod = _pod(task_id="t", image=matrix.IMAGE, do_xcom_push=True, **render_airflow.operator_kwargs(placement))
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert names == ["base", "airflow-xcom-sidecar"]
    assert pss.violations(pod["spec"]) == []
    kubernetes_validate.validate(pod, VERSIONS[-1], strict=True)



USER_ZONE_DAG = """
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import DAG
from xpuflow import Cluster, Compute
from xpuflow.render import airflow as ra

placement = Cluster.load("gke").place(Compute.gpu(model="l4", spot="prefer"))
zone = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
    {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-central1-a"]}]}]}}}
with DAG(dag_id="zone_dag", schedule=None) as dag:
    KubernetesPodOperator(**ra.operator_kwargs(placement, step="train", task_id="train", image="x/y:1",
                                               cmds=["true"], affinity=zone))
"""


def test_the_users_affinity_keeps_the_placements_alternatives_and_preferences(tmp_path):
    # spot="prefer" on gke: two required terms (spot pool OR on-demand pool) and preferred terms ranking them.
    # A user's zone term is joined with EACH of them (all ANDed into one term, no node matched: Pending
    # forever), and the preference for spot survives the user's affinity (dropped, the cost was silently higher).
    from xpuflow.inspect import lint_pods, read

    placement = Cluster.load("gke").place(Compute.gpu(model="l4", spot="prefer"))
    ours = placement.affinity.to_dict()["nodeAffinity"]
    placed = ours["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(placed) == 2
    dag = tmp_path / "zone_dag.py"
    dag.write_text(USER_ZONE_DAG)
    _, (pod,) = read(dag)
    assert [f for f in lint_pods([pod], Cluster.load("gke")) if f.level == "error"] == []
    zone = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-central1-a"]}
    mine = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [zone]}]}}}
    _, built = _pod(**render_airflow.operator_kwargs(placement, step="train", task_id="train", image=matrix.IMAGE,
                                                     affinity=mine))
    node = built["spec"]["affinity"]["nodeAffinity"]
    terms = node["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [zone, *t["matchExpressions"]]} for t in placed]
    preferred = "preferredDuringSchedulingIgnoredDuringExecution"
    assert node[preferred] == ours[preferred]


@pytest.mark.parametrize(("cluster", "case"), [("gke", "gpu-prefer-spot"), ("eks", "gpu-prefer-spot"),
                                               ("gke", "gpu-candidates"), ("gke", "gpu-min-memory"),
                                               ("aks", "cpu-prefer-spot")])
def test_preferences_reach_the_operator_pod_whole(pods, cluster, case):
    """spot='prefer', ordered candidates and gpu_memory: KPO's pod carries the required and the preferred
    node affinity exactly as placed (weights and order included), and passes strict validation."""
    placement = next(p for c, k, p in matrix.renderable() if (c, k) == (cluster, case))
    pod = pods[f"{cluster}/{case}"]
    node_affinity = pod["spec"]["affinity"]["nodeAffinity"]
    assert node_affinity == placement.affinity.to_dict()["nodeAffinity"]
    assert node_affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 100
    kubernetes_validate.validate(pod, VERSIONS[-1], strict=True)
