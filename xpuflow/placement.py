"""``Placement``: a ``Compute`` resolved on a ``Cluster``, as plain Kubernetes data.

This is the one shared Kubernetes core: requests, limits, node selector,
tolerations, affinity, env, volumes and security contexts are computed here
once, and every renderer (Kubernetes, KFP, Airflow) reads them unchanged.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import dra, kueue
from .accelerators import Gpu, Npu, Tpu
from .errors import PlacementError

if TYPE_CHECKING:
    from .cluster import Cluster, NodePool
    from .compute import Compute

__all__ = ["Placement", "resolve", "SHM_VOLUME", "DEFAULT_GRACE_PERIOD"]

SHM_VOLUME = "dshm"
DEFAULT_GRACE_PERIOD = 30  # Kubernetes' terminationGracePeriodSeconds when a pod sets none


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where and how one step runs on one cluster. Plain data; renderers copy what they read."""

    cluster: str
    pool: str
    kind: str
    hardware: str
    instance_type: str | None
    spot: bool
    hosts: int
    requests: dict[str, str]
    limits: dict[str, str]
    accelerator: tuple[str, int] | None  # (extended resource, count per pod)
    node_selector: dict[str, str]
    tolerations: tuple[dict[str, str], ...]
    affinity: dict[str, Any] | None
    env: dict[str, str]
    labels: dict[str, str]
    volumes: tuple[dict[str, Any], ...]
    volume_mounts: tuple[dict[str, Any], ...]
    pod_security_context: dict[str, Any]
    container_security_context: dict[str, Any]
    restricted: bool
    timeout: int | None
    retries: int
    priority_class: str | None
    grace_period: int | None
    ephemeral_storage: str | None
    price_per_hour: float | None  # all hosts together; None when the profile has no price
    compute: Compute = field(repr=False, compare=False)
    kueue: kueue.KueuePlacement | None = None  # queue, priority, TAS (xpuflow/kueue.py)
    claims: tuple[dra.DeviceClaim, ...] = ()  # DRA claims (xpuflow/dra.py); their devices are not limits

    def resources(self) -> dict[str, Any]:
        """Container ``resources`` as Kubernetes writes them (with the DRA claims it uses, if any)."""
        out: dict[str, Any] = {"requests": dict(self.requests), "limits": dict(self.limits)}
        if self.claims:
            out["claims"] = [{"name": c.name} for c in self.claims]
        return out

    def scheduling(self) -> dict[str, Any]:
        """``nodeSelector``, ``tolerations`` and ``affinity`` as Kubernetes writes them (affinity may be absent)."""
        out: dict[str, Any] = {
            "nodeSelector": dict(self.node_selector),
            "tolerations": [dict(t) for t in self.tolerations],
        }
        if self.affinity:
            out["affinity"] = copy.deepcopy(self.affinity)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready plain data (for `xpuflow plan -o json`, golden files, tests)."""
        return {
            "cluster": self.cluster,
            "pool": self.pool,
            "kind": self.kind,
            "hardware": self.hardware,
            "instance_type": self.instance_type,
            "spot": self.spot,
            "hosts": self.hosts,
            "resources": self.resources(),
            **self.scheduling(),
            "env": dict(self.env),
            "labels": dict(self.labels),
            "volumes": copy.deepcopy(list(self.volumes)),
            "volumeMounts": copy.deepcopy(list(self.volume_mounts)),
            "podSecurityContext": copy.deepcopy(self.pod_security_context),
            "containerSecurityContext": copy.deepcopy(self.container_security_context),
            "timeout": self.timeout,
            "retries": self.retries,
            "priorityClassName": self.priority_class,
            "terminationGracePeriodSeconds": self.grace_period,
            "price_per_hour": self.price_per_hour,
            **({"kueue": dataclasses.asdict(self.kueue)} if self.kueue else {}),
            **({"claims": [dataclasses.asdict(c) for c in self.claims]} if self.claims else {}),
        }


# --------------------------------------------------------------------------- resolve
def resolve(cluster: Cluster, compute: Compute) -> Placement:
    pool = _choose_pool(cluster, compute)
    acc = compute.accelerator
    requests = {"cpu": compute.cpu_request.text, "memory": compute.memory_request.text}
    limits = {"cpu": compute.cpu_limit.text, "memory": compute.memory_limit.text}  # type: ignore[union-attr]
    if compute.ephemeral_storage is not None:
        requests["ephemeral-storage"] = limits["ephemeral-storage"] = compute.ephemeral_storage.text
    accelerator: tuple[str, int] | None = None
    if acc is not None:
        assert pool.accelerator is not None  # _choose_pool matched an accelerator pool
        accelerator = (pool.accelerator.resource, acc.count)
        limits[pool.accelerator.resource] = str(acc.count)  # extended resources: limits only

    selector = dict(pool.labels)
    if isinstance(acc, Tpu) and cluster.tpu_labels:
        selector[cluster.tpu_labels["accelerator"]] = acc.shape.accelerator
        selector[cluster.tpu_labels["topology"]] = acc.topology
    tolerations = [t.toleration() for t in pool.taints]
    if compute.spot:
        selector.update(cluster.spot_selector)
        tolerations.extend(cluster.spot_tolerations)
    if cluster.capacity_label and len(pool.capacity) > 1:
        key = cluster.capacity_label["key"]
        selector[key] = cluster.capacity_label["spot" if compute.spot else "on_demand"]
    tolerations = _dedupe(tolerations)
    queued = kueue.resolve(cluster, compute, pool, tolerations)
    if queued:  # a flavor that injects tolerations carries them; the pod does not repeat them
        tolerations = [t for t in tolerations if t not in queued.injected_tolerations]
    claims = dra.resolve(cluster, compute, pool)
    for claim in claims:  # the device comes from the claim, not from the device plugin's extended resource
        limits.pop(claim.resource, None)

    env = {"XPUFLOW_COMPUTE_KIND": compute.kind, "XPUFLOW_NODE_POOL": pool.name}
    if isinstance(acc, Tpu):
        env["PJRT_DEVICE"] = "TPU"
    if isinstance(acc, Gpu) and pool.accelerator is not None:
        env["XPUFLOW_GPU_MEMORY_GIB"] = str(_gpu_memory_gib(pool.accelerator.name, pool.accelerator.mig))
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if compute.shm is not None:
        volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": compute.shm.text}})
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})

    grace = compute.grace_period
    if grace is None and compute.spot:
        grace = cluster.spot_grace_period
    price = pool.price(compute.spot, compute.chips_per_host or 0)
    return Placement(
        cluster=cluster.name,
        pool=pool.name,
        kind=compute.kind,
        hardware=compute.hardware,
        instance_type=(acc.shape.machine_type if isinstance(acc, Tpu) else pool.instance_type),
        spot=compute.spot,
        hosts=compute.hosts,
        requests=requests,
        limits=limits,
        accelerator=accelerator,
        node_selector=selector,
        tolerations=tuple(tolerations),
        affinity=_keep_off_accelerators(cluster, pool) if acc is None else None,
        env=env,
        labels={"xpuflow.io/compute": compute.kind, "xpuflow.io/node-pool": pool.name},
        volumes=tuple(volumes),
        volume_mounts=tuple(mounts),
        pod_security_context=compute.security.pod_context(),
        container_security_context=compute.security.container_context(),
        restricted=compute.security.restricted,
        timeout=compute.timeout,
        retries=compute.retries,
        priority_class=compute.priority_class,
        grace_period=grace,
        ephemeral_storage=compute.ephemeral_storage.text if compute.ephemeral_storage else None,
        price_per_hour=None if price is None else round(price * compute.hosts, 4),
        compute=compute,
        kueue=queued,
        claims=claims,
    )


def _gpu_memory_gib(model: str, mig: str | None) -> int:
    """Memory of one GPU (or MIG slice: the ``<n>gb`` of its profile), for steps that size batches to it."""
    from .catalog import catalog

    if mig:
        return int(mig.split(".")[1].removesuffix("gb"))
    return catalog().gpus[model].memory_gib


def _dedupe(items: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: list[dict[str, str]] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def _keep_off_accelerators(cluster: Cluster, chosen: NodePool) -> dict[str, Any] | None:
    """Node affinity that keeps CPU work off untainted accelerator pools (AKS adds no GPU taint)."""
    excluded: dict[str, list[str]] = {}
    for pool in cluster.node_pools:
        if pool is chosen or pool.accelerator is None or pool.taints:
            continue
        key, value = cluster.exclusion_label(pool)  # type: ignore[misc] - load() guarantees one
        if value not in excluded.setdefault(key, []):
            excluded[key].append(value)
    if not excluded:
        return None
    expressions = [{"key": k, "operator": "NotIn", "values": v} for k, v in excluded.items()]
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": expressions}]}
        }
    }


# ----------------------------------------------------------------------- pool choice
def _matches_accelerator(pool: NodePool, compute: Compute) -> bool:
    acc, pacc = compute.accelerator, pool.accelerator
    if acc is None:
        return pacc is None
    if pacc is None:
        return False
    if isinstance(acc, Gpu):
        from .catalog import catalog

        return (
            pacc.kind == "gpu"
            and catalog().gpus[pacc.name].vendor == acc.vendor
            and (acc.model is None or acc.model == pacc.name)
            and acc.mig == pacc.mig
        )
    if isinstance(acc, Tpu):
        return pacc.kind == "tpu" and pacc.name == acc.version and acc.topology in pacc.topologies
    if isinstance(acc, Npu):
        return pacc.kind == "npu" and pacc.name == acc.device
    return False  # pragma: no cover


def _kind(pool: NodePool) -> str:
    return pool.accelerator.kind if pool.accelerator else "cpu"


def _offer(pool: NodePool) -> str:
    a = pool.accelerator
    if a is None:
        return f"cpu ({pool.name})"
    if a.kind == "tpu":
        return f"tpu {a.name} {'/'.join(a.topologies)} ({pool.name})"
    what = f"{a.name} mig {a.mig}" if a.mig else a.name
    return f"{a.count}x {what} ({pool.name})"


def _choose_pool(cluster: Cluster, compute: Compute) -> NodePool:
    where = f"cluster {cluster.name!r} ({cluster.source})"
    fix_tail = "or add such a node pool to the cluster file (docs/clusters.md)"
    pools = [p for p in cluster.node_pools if _matches_accelerator(p, compute)]
    if not pools:
        offers = ", ".join(_offer(p) for p in cluster.node_pools if _kind(p) == compute.kind)
        if offers:
            raise PlacementError(
                f"{where}: no node pool offers {compute.hardware}. Its {compute.kind} pools: {offers}. "
                f"Fix: ask for one of those, {fix_tail}."
            )
        raise PlacementError(
            f"{where}: no node pool offers {compute.hardware}; the cluster has no {compute.kind} pools. "
            f"Fix: run this step on a cluster with {compute.kind} nodes, {fix_tail}."
        )
    by_purpose = [p for p in pools if compute.pool in p.purpose]
    if not by_purpose:
        served = sorted({u for p in pools for u in p.purpose})
        raise PlacementError(
            f"{where}: pools with {compute.hardware} serve {', '.join(served)}, not pool={compute.pool!r}. "
            f"Fix: set pool= to one of those, {fix_tail}."
        )
    capacity = "spot" if compute.spot else "on-demand"
    by_capacity = [p for p in by_purpose if capacity in p.capacity]
    if not by_capacity:
        raise PlacementError(
            f"{where}: no {compute.pool} pool with {compute.hardware} runs {capacity} nodes "
            f"(pools: {', '.join(p.name for p in by_purpose)}). Fix: set spot={not compute.spot}, {fix_tail}."
        )
    fitting = [p for p in by_capacity if _fits(p, compute)]
    if not fitting:
        p = by_capacity[0]
        raise PlacementError(
            f"{where}: {compute.hardware} with cpu={compute.cpu_request.text}, memory={compute.memory_request.text} "
            f"does not fit one node of pool {p.name!r} ({_capacity_text(p)}). Fix: lower the request, {fix_tail}."
        )

    def cost(p: NodePool) -> float:
        price = p.price(compute.spot, compute.chips_per_host or 0)
        return float("inf") if price is None else price

    return min(fitting, key=lambda p: (cost(p), cluster.node_pools.index(p)))


def _fits(pool: NodePool, compute: Compute) -> bool:
    acc, pacc = compute.accelerator, pool.accelerator
    if acc is not None and pacc is not None and pacc.kind != "tpu" and acc.count > pacc.count:
        return False
    if pool.cpu is not None and compute.cpu_request.value > pool.cpu.value:
        return False
    if pool.memory is not None and compute.memory_request.value > pool.memory.value:
        return False
    return True


def _capacity_text(pool: NodePool) -> str:
    parts = []
    if pool.accelerator and pool.accelerator.kind != "tpu":
        parts.append(f"{pool.accelerator.count}x {pool.accelerator.resource}")
    if pool.cpu is not None:
        parts.append(f"{pool.cpu.text} cpu")
    if pool.memory is not None:
        parts.append(f"{pool.memory.text} memory")
    return ", ".join(parts) or "no capacity listed"
