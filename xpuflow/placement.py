"""``Placement``: a ``Compute`` resolved on a ``Cluster``.

This is the one shared Kubernetes core: requests, limits, node selector,
tolerations, affinity, env, volumes and security contexts are computed here
once, and every renderer (Kubernetes, KFP, Airflow) reads them unchanged.
Tolerations, affinity, volumes and security contexts stay typed (xpuflow/podspec.py)
until a renderer writes them with their one ``to_dict()``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import dra, kueue
from .accelerators import Gpu, Tpu
from .choice import Choice, choices, rendered
from .errors import PlacementError
from .podspec import (
    ContainerSecurityContext,
    EmptyDirVolume,
    MatchExpression,
    NodeAffinity,
    PodSecurityContext,
    PreferredTerm,
    Toleration,
    VolumeMount,
    dicts,
)

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
    tolerations: tuple[Toleration, ...]
    affinity: NodeAffinity | None
    env: dict[str, str]
    labels: dict[str, str]
    volumes: tuple[EmptyDirVolume, ...]
    volume_mounts: tuple[VolumeMount, ...]
    pod_security_context: PodSecurityContext
    container_security_context: ContainerSecurityContext
    restricted: bool
    timeout: int | None
    retries: int
    priority_class: str | None
    grace_period: int | None
    ephemeral_storage: str | None
    price_per_hour: float | None  # what this step pays per hour: its share of the node(s); None when unpriced
    node_price_per_hour: float | None = None  # the whole node(s), all hosts together
    options: tuple[Choice, ...] = field(default=(), repr=False, compare=False)  # where it may land, preferred first
    runner_up: Choice | None = field(default=None, repr=False, compare=False)  # the next best choice, if any
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
            "tolerations": dicts(self.tolerations),
        }
        if self.affinity:
            out["affinity"] = self.affinity.to_dict()
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
            "volumes": dicts(self.volumes),
            "volumeMounts": dicts(self.volume_mounts),
            "podSecurityContext": self.pod_security_context.to_dict(),
            "containerSecurityContext": self.container_security_context.to_dict(),
            "timeout": self.timeout,
            "retries": self.retries,
            "priorityClassName": self.priority_class,
            "terminationGracePeriodSeconds": self.grace_period,
            "price_per_hour": self.price_per_hour,
            **({"kueue": {**dataclasses.asdict(self.kueue),
                          "injected_tolerations": dicts(self.kueue.injected_tolerations)}} if self.kueue else {}),
            **({"claims": [dataclasses.asdict(c) for c in self.claims]} if self.claims else {}),
            "node_price_per_hour": self.node_price_per_hour,
            "options": [_choice_dict(c) for c in self.options],
            "runner_up": _choice_dict(self.runner_up) if self.runner_up else None,
        }


def _choice_dict(c: Choice) -> dict[str, Any]:
    return {"pool": c.pool.name, "spot": c.spot, "model": c.model, "price_per_hour": c.price,
            "node_price_per_hour": c.node_price, "share": round(c.share, 4)}


# --------------------------------------------------------------------------- resolve
def resolve(cluster: Cluster, compute: Compute) -> Placement:
    ordered = choices(cluster, compute)
    options = rendered(compute, ordered)
    best = options[0]
    pool = best.pool
    acc = compute.accelerator
    requests = {"cpu": compute.cpu_request.text, "memory": compute.memory_request.text}
    limits = {"cpu": compute.cpu_limit.text, "memory": compute.memory_limit.text}  # type: ignore[union-attr]
    if compute.ephemeral_storage is not None:
        requests["ephemeral-storage"] = limits["ephemeral-storage"] = compute.ephemeral_storage.text
    accelerator: tuple[str, int] | None = None
    if acc is not None:
        resources = {c.pool.accelerator.resource for c in options}  # type: ignore[union-attr]
        if len(resources) > 1:
            raise PlacementError(
                f"cluster {cluster.name!r} ({cluster.source}): the pools for {compute.hardware} expose different "
                f"resources ({', '.join(sorted(resources))}); one pod requests one. Fix: list models whose pools "
                "share a resource name, or place them as separate steps."
            )
        assert pool.accelerator is not None  # choices() matched an accelerator pool
        accelerator = (pool.accelerator.resource, acc.count)
        limits[pool.accelerator.resource] = str(acc.count)  # extended resources: limits only

    selectors = [_selector(cluster, c, compute) for c in options]
    tolerations: list[Toleration] = []
    for c in options:
        tolerations.extend(t.toleration() for t in c.pool.taints)
        if c.spot:
            tolerations.extend(cluster.spot_tolerations)
    tolerations = _dedupe(tolerations)
    queued = kueue.resolve(cluster, compute, [c.pool for c in options], tolerations)
    if queued:  # a flavor that injects tolerations carries them; the pod does not repeat them
        tolerations = [t for t in tolerations if t not in queued.injected_tolerations]
    claims = dra.resolve(cluster, compute, [c.pool for c in options])
    for claim in claims:  # the device comes from the claim, not from the device plugin's extended resource
        limits.pop(claim.resource, None)
    kueue.check_quota(cluster, compute, [c.pool for c in options], {**limits, **requests})
    exclusion = _keep_off_accelerators(cluster, [c.pool for c in options]) if acc is None else []
    selector, affinity = _scheduling(selectors, exclusion)

    env = {"XPUFLOW_COMPUTE_KIND": compute.kind, "XPUFLOW_NODE_POOL": pool.name}
    if isinstance(acc, Tpu):
        env["PJRT_DEVICE"] = "TPU"
    if isinstance(acc, Gpu) and pool.accelerator is not None:
        # the smallest GPU it may land on: what the step can count on
        env["XPUFLOW_GPU_MEMORY_GIB"] = str(min(
            _gpu_memory_gib(c.pool.accelerator.name, c.pool.accelerator.mig) for c in options  # type: ignore[union-attr]
        ))
    volumes: list[EmptyDirVolume] = []
    mounts: list[VolumeMount] = []
    if compute.shm is not None:
        volumes.append(EmptyDirVolume(SHM_VOLUME, medium="Memory", size_limit=compute.shm.text))
        mounts.append(VolumeMount(SHM_VOLUME, "/dev/shm"))

    grace = compute.grace_period
    if grace is None and any(c.spot for c in options):
        grace = cluster.spot_grace_period
    runner_up = options[1] if len(options) > 1 else next((c for c in ordered if c is not best), None)
    return Placement(
        cluster=cluster.name,
        pool=pool.name,
        kind=compute.kind,
        hardware=compute.hardware,
        instance_type=(acc.shape.machine_type if isinstance(acc, Tpu) else pool.instance_type),
        spot=best.spot,
        hosts=compute.hosts,
        requests=requests,
        limits=limits,
        accelerator=accelerator,
        node_selector=selector,
        tolerations=tuple(tolerations),
        affinity=affinity,
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
        price_per_hour=best.price,
        node_price_per_hour=best.node_price,
        options=tuple(options),
        runner_up=runner_up,
        compute=compute,
        kueue=queued,
        claims=claims,
    )


def _selector(cluster: Cluster, choice: Choice, compute: Compute) -> dict[str, str]:
    """The node labels that pick ``choice`` alone: the pool's labels, slice shape, capacity."""
    pool, acc = choice.pool, compute.accelerator
    selector = dict(pool.labels)
    if isinstance(acc, Tpu) and cluster.tpu_labels:
        selector[cluster.tpu_labels["accelerator"]] = acc.shape.accelerator
        selector[cluster.tpu_labels["topology"]] = acc.topology
    if choice.spot:
        selector.update(cluster.spot_selector)
    if cluster.capacity_label and len(pool.capacity) > 1:
        selector[cluster.capacity_label["key"]] = cluster.capacity_label["spot" if choice.spot else "on_demand"]
    return selector


def _scheduling(selectors: list[dict[str, str]], exclusion: list[MatchExpression]
                ) -> tuple[dict[str, str], NodeAffinity | None]:
    """nodeSelector + nodeAffinity for the ordered ``selectors`` (one per choice).

    One choice: its labels as nodeSelector. Several: the labels they share as nodeSelector,
    a required term allowing any of them (``In`` per key when they differ in values only,
    else one term per choice), and a preferred term per choice, weights falling in order.
    ``exclusion`` (NotIn expressions keeping CPU work off accelerator pools) joins every required term.
    """
    first, rest_of = selectors[0], selectors[1:]
    common = {k: v for k, v in first.items() if all(s.get(k) == v for s in rest_of)}
    distinct: list[dict[str, str]] = []
    for s in selectors:
        diff = {k: v for k, v in s.items() if k not in common}
        if diff not in distinct:
            distinct.append(diff)
    required: list[list[MatchExpression]] = []
    preferred: list[PreferredTerm] = []
    if len(distinct) > 1 and all(distinct):
        if all(d.keys() == distinct[0].keys() for d in distinct):
            required = [[MatchExpression(k, "In", tuple(dict.fromkeys(d[k] for d in distinct))) for k in distinct[0]]]
        else:
            required = [[MatchExpression(k, "In", (v,)) for k, v in d.items()] for d in distinct]
    if len(distinct) > 1:
        preferred = [PreferredTerm(max(1, 100 // (i + 1)), tuple(MatchExpression(k, "In", (v,)) for k, v in d.items()))
                     for i, d in enumerate(distinct) if d]
    if exclusion:
        # a term that already names its pools by the exclusion's key needs no NotIn on that key
        required = ([term + [e for e in exclusion if e.key not in {x.key for x in term}] for term in required]
                    if required else [list(exclusion)])
    if not required and not preferred:
        return common, None
    return common, NodeAffinity(tuple(tuple(term) for term in required), tuple(preferred))


def _gpu_memory_gib(model: str, mig: str | None) -> int:
    """Memory of one GPU (or MIG slice: the ``<n>gb`` of its profile), for steps that size batches to it."""
    from .catalog import catalog

    if mig:
        return int(mig.split(".")[1].removesuffix("gb"))
    return catalog().gpus[model].memory_gib


def _dedupe(items: list[Toleration]) -> list[Toleration]:
    seen: list[Toleration] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def _keep_off_accelerators(cluster: Cluster, chosen: list[NodePool]) -> list[MatchExpression]:
    """NotIn expressions that keep CPU work off untainted accelerator pools (AKS adds no GPU taint)."""
    excluded: dict[str, list[str]] = {}
    for pool in cluster.node_pools:
        if pool in chosen or pool.accelerator is None or pool.taints:
            continue
        key, value = cluster.exclusion_label(pool)  # type: ignore[misc] - load() guarantees one
        if value not in excluded.setdefault(key, []):
            excluded[key].append(value)
    return [MatchExpression(k, "NotIn", tuple(v)) for k, v in excluded.items()]
