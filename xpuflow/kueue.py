"""Kueue in a cluster profile, and what one placement asks of it.

The profile's ``kueue:`` section (docs/kueue-dra.md) names the LocalQueues steps
may submit to, the WorkloadPriorityClasses, whether each pool's ResourceFlavor
injects the pool's node labels and tolerations, the quota of each pool, and the
topology levels for topology-aware scheduling (TAS) with a default level per
accelerator kind for slices that span several pods.

``Compute(queue=..., priority=..., require_topology=..., prefer_topology=...)``
is checked here against the profile when the step is placed; the result is a
``KueuePlacement`` on ``Placement.kueue``. Renderers read it through
:mod:`xpuflow.render.kueue`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import ClusterFileError, ComputeError, PlacementError, did_you_mean, invalid
from .podspec import Toleration

if TYPE_CHECKING:
    from .cluster import Cluster, NodePool
    from .compute import Compute

__all__ = ["KueueProfile", "KueuePlacement", "profile", "resolve", "check_compute_options", "pool_resources",
           "check_quota"]

_LABEL_VALUE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MODES = ("required", "preferred")


@dataclass(frozen=True)
class KueueProfile:
    """A cluster's Kueue set-up, read from its profile's ``kueue:`` section."""

    namespace: str
    cluster_queue: str
    local_queues: tuple[str, ...]
    priorities: dict[str, int]
    flavors_inject: bool
    quotas: dict[str, dict[str, str]]  # pool -> resource -> quantity text
    topology: str | None  # the Topology object's name; None without TAS
    levels: dict[str, str]  # level name -> node label, highest first
    slices: dict[str, tuple[str, str]]  # accelerator kind -> (mode, level name), for multi-pod steps


@dataclass(frozen=True)
class KueuePlacement:
    """What Kueue reads from one step: queue, priority, TAS request and the tolerations its flavor injects."""

    queue: str
    priority: str | None
    topology: tuple[str, str] | None  # (required | preferred, node label)
    topology_always: bool  # asked for on the Compute (every pod); else only for steps of several pods
    injected_tolerations: tuple[Toleration, ...]  # the flavor adds these; pods do not carry them

    def describe(self) -> str:
        """One line for `xpuflow plan` / `lint`: ``queue team-a, priority high, TAS required cloud...``."""
        out = f"queue {self.queue}"
        if self.priority:
            out += f", priority {self.priority}"
        if self.topology:
            out += f", {self.topology[0]} topology {self.topology[1]}" + ("" if self.topology_always else " (multi-pod)")
        return out


# --------------------------------------------------------------------------- Compute options
def check_compute_options(c: Compute, where: str) -> None:
    """The Kueue and DRA options of a ``Compute``, checked when it is built (before any cluster)."""
    for name in ("queue", "priority"):
        value = getattr(c, name)
        if value is not None and not (isinstance(value, str) and len(value) <= 63 and _LABEL_VALUE.match(value)):
            what = "LocalQueue" if name == "queue" else "WorkloadPriorityClass"
            raise ComputeError(invalid(name, value, f"the name of a Kueue {what} (a lowercase DNS label)", where=where,
                                       fix="use a name from the cluster profile's kueue: section"))
    for name in ("require_topology", "prefer_topology"):
        value = getattr(c, name)
        if value is not None and not (isinstance(value, str) and value):
            raise ComputeError(invalid(name, value, "a topology level named in the profile's kueue.topology.levels",
                                       where=where))
    if c.require_topology is not None and c.prefer_topology is not None:
        raise ComputeError(invalid("prefer_topology", c.prefer_topology, "unset when require_topology is set",
                                   where=where, fix="keep one of require_topology / prefer_topology"))
    if (c.priority or c.require_topology or c.prefer_topology) and c.queue is None:
        field = "priority" if c.priority else "require_topology" if c.require_topology else "prefer_topology"
        raise ComputeError(invalid(field, getattr(c, field), "set together with queue= (Kueue reads it only from "
                                   "workloads it queues)", where=where, fix="add queue='<LocalQueue>'"))
    if not isinstance(c.claim, bool):
        raise ComputeError(invalid("claim", c.claim, "True or False", where=where))
    if c.claim and c.kind == "cpu":
        raise ComputeError(invalid("claim", True, "False for a CPU step: a ResourceClaim requests a device", where=where,
                                   fix="use Compute.gpu/tpu/npu(..., claim=True), or drop claim"))


# --------------------------------------------------------------------------- the profile section
def _quantity_text(value: Decimal, kind: str) -> str:
    if kind == "memory":
        for suffix, unit in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20)):
            if value % unit == 0:
                return f"{int(value // unit)}{suffix}"
        return str(int(value))
    if kind == "cpu" and value != value.to_integral_value():
        return f"{int(value * 1000)}m"
    return str(int(value))


def pool_resources(pool: NodePool) -> tuple[str, ...]:
    """The resources a pool's quota covers: cpu, memory and its accelerator's extended resource."""
    return ("cpu", "memory") + ((pool.accelerator.resource,) if pool.accelerator else ())


def _quota(pool: NodePool, entry: dict[str, Any], path: str, source: str) -> dict[str, str]:
    """Quota of each covered resource: written explicitly, else ``nodes`` x what one node of the pool holds."""
    nodes = entry.get("nodes")
    per_node: dict[str, Decimal | None] = {
        "cpu": pool.cpu.value if pool.cpu else None,
        "memory": pool.memory.value if pool.memory else None,
        "accelerators": Decimal(pool.accelerator.count) if pool.accelerator and pool.accelerator.count else None,
    }
    out: dict[str, str] = {}
    for resource in pool_resources(pool):
        key = resource if resource in ("cpu", "memory") else "accelerators"
        if key in entry:  # a quantity (cpu, memory) or a whole number (checked by the schema)
            out[resource] = _checked(key, entry[key], f"{path}.{key}", source)
        elif nodes is not None and per_node[key] is not None:
            # nodes x one node, bounded like a written quota (a quantity beyond 2^63-1 is refused)
            out[resource] = _checked(key, _quantity_text(nodes * per_node[key], key), f"{path}.nodes", source)  # type: ignore[operator]
        else:
            why = "nodes is not set" if nodes is None else f"the pool lists no per-node {key}"
            raise ClusterFileError(f"{source}: {path}: no quota for {resource}: {why}. Fix: set {path}.{key}"
                                   + (f" or {path}.nodes." if nodes is None else "."))
    return out


def _checked(key: str, raw: Any, path: str, source: str) -> str:
    from .quantity import MAX_INT64, parse_cpu, parse_memory

    if key == "accelerators":
        if int(raw) > MAX_INT64:
            raise ClusterFileError(f"{source}: {path}: {raw} accelerators is not valid: at most {MAX_INT64}. "
                                   "Fix: lower nodes or the count.")
        return str(raw)
    try:
        return (parse_cpu if key == "cpu" else parse_memory)(key, raw).text
    except ComputeError as e:
        raise ClusterFileError(f"{source}: {path}: {e}") from e


def profile(data: dict[str, Any] | None, source: str, cluster: str, pools: tuple[NodePool, ...]) -> KueueProfile | None:
    """Build the profile's Kueue set-up from the schema-checked ``kueue:`` mapping; cross-check pools and levels."""
    if data is None:
        return None
    names = [p.name for p in pools]
    quotas: dict[str, dict[str, str]] = {}
    for name, entry in data.get("quotas", {}).items():
        path = f"kueue.quotas.{name}"
        if name not in names:
            raise ClusterFileError(f"{source}: {path}: no node pool named {name!r}.{did_you_mean(name, names)} "
                                   f"Pools: {', '.join(names)}")
        quotas[name] = _quota(pools[names.index(name)], entry, path, source)
    topo = data.get("topology") or {}
    levels = dict(topo.get("levels", {}))
    slices: dict[str, tuple[str, str]] = {}
    for kind in ("gpu", "tpu", "npu"):
        if kind not in topo:
            continue
        if len(topo[kind]) != 1:
            raise ClusterFileError(f"{source}: kueue.topology.{kind}: expected one of required: LEVEL or "
                                   f"preferred: LEVEL, found {topo[kind]!r}")
        ((mode, level),) = topo[kind].items()
        if level not in levels:
            raise ClusterFileError(f"{source}: kueue.topology.{kind}.{mode}: {level!r} is not a level of "
                                   f"kueue.topology.levels ({', '.join(levels) or 'none'}). Fix: name one of them.")
        slices[kind] = (mode, level)
    return KueueProfile(
        namespace=data.get("namespace", "default"),
        cluster_queue=data.get("cluster_queue", cluster),
        local_queues=tuple(data["local_queues"]),
        priorities=dict(data.get("priorities", {})),
        flavors_inject=data.get("flavors_inject", False),
        quotas=quotas,
        topology=topo.get("name", "default") if levels else None,
        levels=levels,
        slices=slices,
    )


# --------------------------------------------------------------------------- placement
def resolve(cluster: Cluster, compute: Compute, pools: Sequence[NodePool],
            tolerations: list[Toleration]) -> KueuePlacement | None:
    """What ``compute`` asks of Kueue on ``cluster`` when it may land on ``pools`` (preferred first).

    Refuses a queue, priority or topology level the profile lacks, and a pool without a quota.
    Whichever pool's flavor Kueue assigns injects that pool's tolerations, so with injecting
    flavors the pod carries none of the pools' own.
    """
    if compute.queue is None:
        return None
    where = f"cluster {cluster.name!r} ({cluster.source})"
    k = cluster.kueue
    if k is None:
        raise PlacementError(f"{where}: queue={compute.queue!r} is not valid: the profile has no kueue: section. "
                             "Fix: add kueue: with local_queues to the profile (docs/kueue-dra.md), or drop queue=.")
    if compute.queue not in k.local_queues:
        raise PlacementError(invalid("queue", compute.queue, f"a LocalQueue of kueue.local_queues: {', '.join(k.local_queues)}",
                                     where=where, choices=k.local_queues, fix="use one of those, or add it to the profile"))
    if compute.priority is not None and compute.priority not in k.priorities:
        raise PlacementError(invalid("priority", compute.priority,
                                     f"a WorkloadPriorityClass of kueue.priorities: {', '.join(k.priorities) or 'none'}",
                                     where=where, choices=k.priorities, fix="use one of those, or add it to the profile"))
    for pool in pools:
        if pool.name not in k.quotas:
            raise PlacementError(f"{where}: queue={compute.queue!r}: the step may land on pool {pool.name!r}, which has "
                                 f"no quota in kueue.quotas ({', '.join(k.quotas) or 'none'}), so Kueue would never admit "
                                 f"it there. Fix: add kueue.quotas.{pool.name} to the profile, or drop queue=.")
    topology: tuple[str, str] | None = None
    asked = [(m, lvl) for m, lvl in (("required", compute.require_topology), ("preferred", compute.prefer_topology)) if lvl]
    if asked:
        mode, level = asked[0]
        field = "require_topology" if mode == "required" else "prefer_topology"
        if level not in k.levels:
            raise PlacementError(invalid(field, level, f"a level of kueue.topology.levels: {', '.join(k.levels) or 'none'}",
                                         where=where, choices=k.levels,
                                         fix="name one of those levels, or add the level to the profile"))
        topology = (mode, k.levels[level])
    elif compute.kind in k.slices:
        mode, level = k.slices[compute.kind]
        topology = (mode, k.levels[level])
    injected: tuple[dict[str, str], ...] = ()
    if k.flavors_inject:
        flavors = [t.toleration() for pool in pools for t in pool.taints]
        injected = tuple(t for t in tolerations if t in flavors)
    return KueuePlacement(queue=compute.queue, priority=compute.priority, topology=topology,
                          topology_always=bool(asked), injected_tolerations=injected)


def check_quota(cluster: Cluster, compute: Compute, pools: Sequence[NodePool], per_pod: dict[str, str]) -> None:
    """Refuse a queued step whose pods together (one Workload) ask more of a covered resource than the quota of
    every pool it may land on: the ClusterQueue has no cohort to borrow from, so Kueue would never admit it."""
    from .quantity import parse_cpu, parse_memory

    k = cluster.kueue
    if compute.queue is None or k is None:
        return

    def amount(resource: str, text: str) -> Decimal:
        if resource in ("cpu", "memory"):
            return (parse_cpu if resource == "cpu" else parse_memory)(resource, text).value
        return Decimal(text)

    short = None
    for pool in pools:
        quota = k.quotas[pool.name]
        over = [(r, amount(r, per_pod[r]) * compute.hosts, q) for r, q in quota.items()
                if r in per_pod and amount(r, per_pod[r]) * compute.hosts > amount(r, q)]
        if not over:
            return
        short = short or (pool.name, *over[0])
    pool_name, resource, _, quota_text = short  # type: ignore[misc]
    pods = f" per pod x {compute.hosts} pods admitted together" if compute.hosts > 1 else ""
    raise PlacementError(f"cluster {cluster.name!r} ({cluster.source}): queue={compute.queue!r}: the step asks "
                         f"{resource}={per_pod[resource]}{pods}, more than the quota of every pool it may land on "
                         f"(kueue.quotas.{pool_name}: {resource}={quota_text}), so Kueue would never admit it. Fix: "
                         "raise that quota in the profile, or lower the request.")
