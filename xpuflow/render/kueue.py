"""Kueue: the labels and annotations a queued step carries, and a cluster's Kueue set-up (``kueue.x-k8s.io/v1beta2``).

    from xpuflow.render import kueue
    kueue.object_labels(placement)           # {'kueue.x-k8s.io/queue-name': 'team-a', ...}
    kueue.setup(Cluster.load("gke"))         # ResourceFlavors, ClusterQueue, LocalQueues, ...

A Job, JobSet or TrainJob carries the queue-name (and priority-class) label on its
own metadata and is created suspended: Kueue admits the whole object, all its pods
together, as one Workload, and unsuspends it. A plain pod (KFP task, Airflow
KubernetesPodOperator) carries the labels itself; pods of one group are admitted
together through the pod-group label and total-count annotation. Topology-aware
scheduling is a pod-template annotation (required or preferred level), set on steps
of several pods from the profile's default for the accelerator, and on every pod
when the Compute asks for a level itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..placement import Placement
from ..podspec import dicts

if TYPE_CHECKING:
    from ..cluster import Cluster, NodePool

__all__ = [
    "API_VERSION", "QUEUE_LABEL", "PRIORITY_LABEL", "GROUP_LABEL", "GROUP_TOTAL", "TOPOLOGY_ANNOTATIONS",
    "object_labels", "pod_annotations", "group_metadata", "setup", "flavor_labels",
]

API_VERSION = "kueue.x-k8s.io/v1beta2"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
GROUP_TOTAL = "kueue.x-k8s.io/pod-group-total-count"
TOPOLOGY_ANNOTATIONS = {
    "required": "kueue.x-k8s.io/podset-required-topology",
    "preferred": "kueue.x-k8s.io/podset-preferred-topology",
}


# --------------------------------------------------------------------------- one step
def object_labels(placement: Placement) -> dict[str, str]:
    """The queue-name and priority-class labels of a queued step (on the Job/JobSet/TrainJob, or a plain pod)."""
    k = placement.kueue
    if k is None:
        return {}
    return {QUEUE_LABEL: k.queue, **({PRIORITY_LABEL: k.priority} if k.priority else {})}


def pod_annotations(placement: Placement, pods: int) -> dict[str, str]:
    """The TAS annotation for a pod template of ``pods`` pods (the profile's default applies to several pods)."""
    k = placement.kueue
    if k is None or k.topology is None or (pods < 2 and not k.topology_always):
        return {}
    mode, label = k.topology
    return {TOPOLOGY_ANNOTATIONS[mode]: label}


def group_metadata(group: str, total: int) -> tuple[dict[str, str], dict[str, str]]:
    """Labels and annotations that make ``total`` plain pods one Kueue pod group, admitted together."""
    return {GROUP_LABEL: group}, {GROUP_TOTAL: str(total)}


def queued(obj: dict[str, Any], placement: Placement) -> dict[str, Any]:
    """Add the queue labels to a Job/JobSet/TrainJob and create it suspended (Kueue unsuspends it on admission)."""
    labels = object_labels(placement)
    if labels:
        obj["metadata"]["labels"].update(labels)
        obj["spec"]["suspend"] = True
    return obj


# --------------------------------------------------------------------------- the cluster's set-up
def flavor_labels(cluster: Cluster, pool: NodePool) -> dict[str, str]:
    """Node labels that identify ``pool``: its own labels, plus the TPU accelerator label for a TPU pool."""
    labels = dict(pool.labels)
    if pool.accelerator and pool.accelerator.kind == "tpu" and cluster.tpu_labels:
        from ..catalog import catalog

        labels[cluster.tpu_labels["accelerator"]] = catalog().tpus[pool.accelerator.name].accelerator
    return labels


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/managed-by": "xpuflow"}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _flavor(cluster: Cluster, pool: NodePool) -> dict[str, Any]:
    k = cluster.kueue
    assert k is not None
    spec: dict[str, Any] = {}
    if k.flavors_inject:
        labels = flavor_labels(cluster, pool)
        if labels:
            spec["nodeLabels"] = labels
        if pool.taints:
            spec["tolerations"] = dicts(t.toleration() for t in pool.taints)
    if k.topology and pool.accelerator and pool.accelerator.kind in k.slices:
        spec["topologyName"] = k.topology
    return {"apiVersion": API_VERSION, "kind": "ResourceFlavor", "metadata": _meta(pool.name), "spec": spec}


def setup(cluster: Cluster) -> list[dict[str, Any]]:
    """The cluster's Kueue objects from its profile, in the order to apply them.

    WorkloadPriorityClasses, the Topology (with TAS), a ResourceFlavor per node pool,
    one ClusterQueue with the quotas of the pools that have one (one resource group covering every
    resource; flavors that identify their pool by labels first, so a step's node
    selector picks its own pool's flavor), and the LocalQueues.
    """
    from ..errors import ClusterFileError
    from ..kueue import pool_resources

    k = cluster.kueue
    if k is None:
        raise ClusterFileError(f"cluster {cluster.name!r} ({cluster.source}): the profile has no kueue: section. "
                               "Fix: add one (local_queues, quotas, ...; docs/kueue-dra.md).")
    docs: list[dict[str, Any]] = [
        {"apiVersion": API_VERSION, "kind": "WorkloadPriorityClass", "metadata": _meta(name), "value": value}
        for name, value in k.priorities.items()
    ]
    if k.topology:
        docs.append({"apiVersion": API_VERSION, "kind": "Topology", "metadata": _meta(k.topology),
                     "spec": {"levels": [{"nodeLabel": label} for label in k.levels.values()]}})
    every = sorted(cluster.node_pools, key=lambda p: not flavor_labels(cluster, p))  # stable: unlabeled pools last
    docs += [_flavor(cluster, p) for p in every]
    pools = [p for p in every if p.name in k.quotas]
    covered: list[str] = []
    for p in pools:
        covered += [r for r in pool_resources(p) if r not in covered]
    flavors = [
        {"name": p.name, "resources": [{"name": r, "nominalQuota": k.quotas[p.name].get(r, "0")} for r in covered]}
        for p in pools
    ]
    spec: dict[str, Any] = {"namespaceSelector": {}, "resourceGroups": [{"coveredResources": covered, "flavors": flavors}]}
    docs.append({"apiVersion": API_VERSION, "kind": "ClusterQueue", "metadata": _meta(k.cluster_queue), "spec": spec})
    docs += [
        {"apiVersion": API_VERSION, "kind": "LocalQueue", "metadata": _meta(q, k.namespace),
         "spec": {"clusterQueue": k.cluster_queue}}
        for q in k.local_queues
    ]
    return docs
