"""The nodes a cluster profile describes, as the scheduler sees them: labels, taints, capacity.

One ``Node`` per pool, capacity (on-demand / spot) and TPU topology, with the labels
such a node carries: the pool's own, the spot selector or capacity label, the TPU
accelerator/topology labels and the instance type. Matching follows kube-scheduler's
NodeSelector, NodeAffinity (required terms), TaintToleration and resource-fit rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..cluster import Cluster, NodePool, Taint
from ..quantity import Quantity, parse_cpu, parse_memory

__all__ = ["Node", "nodes", "WELL_KNOWN", "selector_matches", "terms_match", "untolerated", "offers", "fits",
           "quantity"]

# labels every node carries whose values a profile does not list: a selector on them is not checked
WELL_KNOWN = ("kubernetes.io/os", "kubernetes.io/arch", "kubernetes.io/hostname", "topology.kubernetes.io/zone",
              "topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/zone",
              "failure-domain.beta.kubernetes.io/region", "beta.kubernetes.io/os", "beta.kubernetes.io/arch")
_INSTANCE_TYPE = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")


@dataclass(frozen=True)
class Node:
    pool: NodePool
    spot: bool
    topology: str | None  # TPU slice topology, else None
    labels: dict[str, str]
    taints: tuple[Taint, ...] = ()
    chips_per_host: int = 0
    hosts: int = 1
    machine_type: str | None = None

    @property
    def describe(self) -> str:
        what = f"{self.pool.name} ({'spot' if self.spot else 'on-demand'}"
        return what + (f", {self.topology})" if self.topology else ")")


def nodes(cluster: Cluster) -> list[Node]:
    from ..catalog import catalog

    # spot nodes carry the taints the profile's spot tolerations are for
    spot_taints = tuple(Taint(t.key, t.effect, t.value) for t in cluster.spot_tolerations)  # type: ignore[arg-type]
    out = []
    for pool in cluster.node_pools:
        acc = pool.accelerator
        topologies: tuple[str | None, ...] = acc.topologies if acc and acc.kind == "tpu" else (None,)
        for capacity in pool.capacity:
            spot = capacity == "spot"
            for topology in topologies:
                labels = dict(pool.labels)
                if spot:
                    labels.update(cluster.spot_selector)
                if cluster.capacity_label:
                    labels[cluster.capacity_label["key"]] = cluster.capacity_label["spot" if spot else "on_demand"]
                chips, hosts, machine = 0, 1, pool.instance_type
                if topology is not None and acc is not None and cluster.tpu_labels:
                    shape = catalog().tpus[acc.name].shape(topology)
                    labels[cluster.tpu_labels["accelerator"]] = shape.accelerator
                    labels[cluster.tpu_labels["topology"]] = topology
                    chips, hosts, machine = shape.chips_per_host, shape.hosts, shape.machine_type
                if machine:
                    labels.update({key: machine for key in _INSTANCE_TYPE})
                taints = pool.taints + (spot_taints if spot else ())
                out.append(Node(pool, spot, topology, labels, tuple(dict.fromkeys(taints)), chips, hosts, machine))
    return out


def selector_matches(selector: dict[str, str], node: Node) -> bool:
    return all(node.labels.get(k) == v for k, v in selector.items() if k in node.labels or k not in WELL_KNOWN)


def _expression(e: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = e.get("key", ""), e.get("operator", "In"), [str(v) for v in e.get("values") or []]
    if key in WELL_KNOWN and key not in labels:
        return True  # not described by the profile: cannot tell, assume it matches
    have = labels.get(key)
    if op == "In":
        return have in values
    if op == "NotIn":
        return have not in values
    if op == "Exists":
        return have is not None
    if op == "DoesNotExist":
        return have is None
    if op in ("Gt", "Lt") and have is not None and values:
        try:
            return int(have) > int(values[0]) if op == "Gt" else int(have) < int(values[0])
        except ValueError:
            return False
    return False


def terms_match(terms: tuple[tuple[dict[str, Any], ...], ...], node: Node) -> bool:
    """Required node affinity: no terms, or any term whose expressions all hold."""
    return not terms or any(all(_expression(e, node.labels) for e in term) for term in terms)


def _tolerates(t: dict[str, Any], taint: Taint) -> bool:
    if t.get("effect") and t["effect"] != taint.effect:
        return False
    if not t.get("key"):
        return t.get("operator") == "Exists"
    if t["key"] != taint.key:
        return False
    if t.get("operator", "Equal") == "Exists":
        return True
    return str(t.get("value") or "") == (taint.value or "")


def untolerated(tolerations: tuple[dict[str, Any], ...], node: Node) -> list[Taint]:
    """The node's scheduling taints that no toleration matches (PreferNoSchedule never blocks)."""
    return [taint for taint in node.taints
            if taint.effect != "PreferNoSchedule" and not any(_tolerates(t, taint) for t in tolerations)]


def quantity(kind: str, text: str) -> Quantity | None:
    try:
        return (parse_cpu if kind == "cpu" else parse_memory)(kind, text)
    except ValueError:
        return None


def offers(extended: dict[str, str], node: Node) -> bool:
    """The node has every extended resource asked for, in that number (a TPU host: exactly its chips)."""
    acc = node.pool.accelerator
    for resource, count in extended.items():
        if acc is None or acc.resource != resource or not count.isdigit():
            return False
        if (int(count) != node.chips_per_host) if acc.kind == "tpu" else (int(count) > acc.count):
            return False
    return True


def fits(requests: dict[str, str], node: Node) -> bool:
    """The requests fit what one node allocates to a pod (capacity less reservations and DaemonSets)."""
    alloc = node.pool.allocatable
    if alloc is None:
        return True
    for kind, room in (("cpu", alloc.cpu_m / 1000), ("memory", alloc.memory)):
        asked = quantity(kind, requests[kind]) if kind in requests else None
        if asked is not None and asked.value > room:
            return False
    return True
