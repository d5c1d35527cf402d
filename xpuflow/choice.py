"""Which node pools a ``Compute`` may run on, in order of preference, and what a run pays.

A *choice* is one (pool, capacity) pair that satisfies the Compute: its accelerator (or
one of its candidate models), its purpose, spot or on-demand, and a request that fits
the pool's **allocatable** (capacity minus the provider's reservations and DaemonSets).
Choices are ordered by the user's candidate order, then spot before on-demand when
``spot="prefer"``, then the price a pod pays (its share of the node by its scarcest
resource, the whole node when the pool is exclusive); a pool without a price comes
after every priced one of the same rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from .accelerators import Gpu, Npu, Tpu
from .allocatable import cpu_text, memory_text
from .errors import PlacementError

if TYPE_CHECKING:
    from .cluster import Cluster, NodePool
    from .compute import Compute

__all__ = ["Choice", "choices", "rendered", "share", "misfit"]


@dataclass(frozen=True)
class Choice:
    pool: NodePool
    spot: bool
    rank: int  # position of the pool's GPU model in an ordered candidate list (0 otherwise)
    share: float  # part of the node the pod takes (1.0: the whole node)
    node_price: float | None  # the node (x hosts), USD per hour
    price: float | None  # what the pod pays: node_price x share

    @property
    def model(self) -> str | None:
        a = self.pool.accelerator
        return a.name if a is not None and a.kind == "gpu" else None

    def describe(self) -> str:
        cap = "spot" if self.spot else "on-demand"
        price = "no price in the profile" if self.price is None else f"${self.price:,.2f}/h"
        if self.price is not None and self.share < 1:
            price += f" ({self.share:.0%} of ${self.node_price:,.2f}/h)"
        return f"{self.pool.name} ({cap}, {price})"


def _matches(pool: NodePool, compute: Compute) -> bool:
    acc, pacc = compute.accelerator, pool.accelerator
    if acc is None:
        return pacc is None
    if pacc is None:
        return False
    if isinstance(acc, Gpu):
        return pacc.kind == "gpu" and acc.accepts(pacc.name) and acc.mig == pacc.mig
    if isinstance(acc, Tpu):
        return pacc.kind == "tpu" and pacc.name == acc.version and acc.topology in pacc.topologies
    if isinstance(acc, Npu):
        return pacc.kind == "npu" and pacc.name == acc.device
    return False  # pragma: no cover


def _offer(pool: NodePool) -> str:
    a = pool.accelerator
    if a is None:
        return f"cpu ({pool.name})"
    if a.kind == "tpu":
        return f"tpu {a.name} {'/'.join(a.topologies)} ({pool.name})"
    what = f"{a.name} mig {a.mig}" if a.mig else a.name
    return f"{a.count}x {what} ({pool.name})"


def misfit(pool: NodePool, compute: Compute) -> str | None:
    """Why ``compute`` cannot fit one node of ``pool``, with the numbers; None when it fits."""
    acc, pacc = compute.accelerator, pool.accelerator
    if acc is not None and pacc is not None and pacc.kind != "tpu" and acc.count > pacc.count:
        return f"{acc.count}x {pacc.resource} requested, a node of {pool.name!r} has {pacc.count}"
    alloc = pool.allocatable
    if alloc is None:
        return None
    cpu_m = int(compute.cpu_request.value * 1000)
    mem = int(compute.memory_request.value)
    if cpu_m > alloc.cpu_m or mem > alloc.memory:
        return (f"cpu={compute.cpu_request.text}, memory={compute.memory_request.text} requested; a node of pool "
                f"{pool.name!r} ({pool.instance_type or 'node'}: {pool.cpu.text} cpu, "  # type: ignore[union-attr]
                f"{pool.memory.text}) has "  # type: ignore[union-attr]
                f"{cpu_text(alloc.cpu_m)} cpu, {memory_text(alloc.memory)} allocatable to a step "
                f"({alloc.basis}, after {cpu_text(alloc.daemonset_cpu_m)} cpu / {memory_text(alloc.daemonset_memory)} "
                "of DaemonSets)")
    return None


def share(pool: NodePool, *, cpu_m: int, memory: int, devices: int = 0) -> float:
    """The part of one node a pod takes, by its scarcest resource: its devices of the node's, its CPU and
    memory of the node's allocatable; the whole node when the pool is exclusive, a TPU host or of unknown size."""
    pacc = pool.accelerator
    if pool.exclusive or (pacc is not None and pacc.kind == "tpu"):
        return 1.0
    parts = [Fraction(0)]
    if devices and pacc is not None and pacc.count:
        parts.append(Fraction(devices, pacc.count))
    if pool.allocatable is not None:
        parts.append(Fraction(cpu_m, pool.allocatable.cpu_m))
        parts.append(Fraction(memory, pool.allocatable.memory))
    else:
        parts.append(Fraction(1))  # unknown size: the whole node
    return float(min(Fraction(1), max(parts)))


def _share(pool: NodePool, compute: Compute) -> float:
    acc = compute.accelerator
    return share(pool, cpu_m=int(compute.cpu_request.value * 1000), memory=int(compute.memory_request.value),
                 devices=acc.count if acc is not None and not isinstance(acc, Tpu) else 0)


def _choice(pool: NodePool, compute: Compute, spot: bool) -> Choice:
    acc = compute.accelerator
    rank = 0
    if isinstance(acc, Gpu) and acc.ordered and len(acc.candidates) > 1:
        rank = acc.candidates.index(pool.accelerator.name)  # type: ignore[union-attr]
    node = pool.price(spot, compute.chips_per_host or 0)
    node = None if node is None else node * compute.hosts
    share = _share(pool, compute)
    return Choice(pool, spot, rank, share, node, None if node is None else round(node * share, 4))


def choices(cluster: Cluster, compute: Compute) -> list[Choice]:
    """Every choice that satisfies ``compute``, best first; a PlacementError with the reason when none does."""
    where = f"cluster {cluster.name!r} ({cluster.source})"
    fix_tail = "or add such a node pool to the cluster file (docs/clusters.md)"
    pools = [p for p in cluster.node_pools if _matches(p, compute)]
    if not pools:
        kind = compute.kind
        offers = ", ".join(_offer(p) for p in cluster.node_pools
                           if (p.accelerator.kind if p.accelerator else "cpu") == kind)
        if offers:
            raise PlacementError(f"{where}: no node pool offers {compute.hardware}. Its {kind} pools: {offers}. "
                                 f"Fix: ask for one of those, {fix_tail}.")
        raise PlacementError(f"{where}: no node pool offers {compute.hardware}; the cluster has no {kind} pools. "
                             f"Fix: run this step on a cluster with {kind} nodes, {fix_tail}.")
    by_purpose = [p for p in pools if compute.purpose in p.purpose]
    if not by_purpose:
        served = sorted({u for p in pools for u in p.purpose})
        raise PlacementError(f"{where}: pools with {compute.hardware} serve {', '.join(served)}, not "
                             f"purpose={compute.purpose!r}. Fix: set purpose= to one of those, {fix_tail}.")
    wanted = (True, False) if compute.spot == "prefer" else (bool(compute.spot),)
    by_capacity = [(p, s) for s in wanted for p in by_purpose if ("spot" if s else "on-demand") in p.capacity]
    if not by_capacity:
        capacity = "spot" if compute.spot else "on-demand"
        raise PlacementError(
            f"{where}: no {compute.purpose} pool with {compute.hardware} runs {capacity} nodes "
            f"(pools: {', '.join(p.name for p in by_purpose)}). Fix: set spot={not compute.spot} or spot='prefer', "
            f"{fix_tail}."
        )
    fitting = [(p, s) for p, s in by_capacity if misfit(p, compute) is None]
    if not fitting:
        reasons = "; ".join(dict.fromkeys(misfit(p, compute) for p, _ in by_capacity))  # type: ignore[arg-type]
        raise PlacementError(f"{where}: {compute.hardware} fits no node's allocatable: {reasons}. "
                             f"Fix: lower the request, {fix_tail}.")
    found = [_choice(p, compute, s) for p, s in fitting]
    prefer_spot = compute.spot == "prefer"
    order = {p.name: i for i, p in enumerate(cluster.node_pools)}
    # unpriced pools last in their rank; among them, the one the pod fills most (the smallest node) first
    found.sort(key=lambda c: (c.rank, prefer_spot and not c.spot, c.price is None,
                              c.price or 0.0, -c.share if c.price is None else 0.0, order[c.pool.name]))
    return found


def rendered(compute: Compute, ordered: list[Choice]) -> list[Choice]:
    """The choices a pod may land on: the best one, or with ``spot="prefer"`` / several candidate
    models the best of each (model, capacity), in order of preference."""
    acc = compute.accelerator
    by_model = isinstance(acc, Gpu) and len(acc.candidates) > 1
    if not by_model and compute.spot != "prefer":
        return ordered[:1]
    seen: dict[tuple[str | None, bool], Choice] = {}
    for c in ordered:
        seen.setdefault((c.model if by_model else None, c.spot if compute.spot == "prefer" else False), c)
    return list(seen.values())
