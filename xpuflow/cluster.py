"""``Cluster``: what a Kubernetes cluster calls its hardware, loaded from one YAML file.

    Cluster.load("gke")                 # shipped profile (also eks, aks, generic)
    Cluster.load("clusters/mine.yaml")  # your own, same schema (docs/clusters.md)

A profile lists node pools with their labels, taints, instance types, capacity
(on-demand / spot), purpose (training / inference / general), accelerator and
approximate price. ``cluster.place(compute)`` picks the pool and returns a
``Placement``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import allocatable as _alloc
from . import catalog as _catalog
from . import dra, kueue, safe_yaml
from .allocatable import Allocatable
from .catalog import schema
from .errors import ClusterFileError, ComputeError, did_you_mean, shown
from .podspec import Toleration
from .quantity import Quantity, parse_cpu, parse_memory

if TYPE_CHECKING:
    from .compute import Compute
    from .dra import DraProfile
    from .kueue import KueueProfile
    from .placement import Placement

__all__ = ["Cluster", "NodePool", "Taint"]


@dataclass(frozen=True)
class Taint:
    key: str
    effect: str
    value: str | None = None

    def toleration(self) -> Toleration:
        if self.value is None:
            return Toleration(self.key, "Exists", effect=self.effect)
        return Toleration(self.key, "Equal", self.value, self.effect)


@dataclass(frozen=True)
class PoolAccelerator:
    kind: str  # gpu | tpu | npu
    name: str  # gpu model, tpu version, npu device
    count: int  # per node: GPUs / MIG slices / NPU devices; 0 for TPU (from topology)
    resource: str  # extended resource name
    mig: str | None = None
    topologies: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodePool:
    name: str
    instance_type: str | None
    cpu: Quantity | None
    memory: Quantity | None
    purpose: tuple[str, ...]
    capacity: tuple[str, ...]
    labels: dict[str, str]
    taints: tuple[Taint, ...]
    exclude_by: dict[str, str]
    accelerator: PoolAccelerator | None
    price_on_demand: float | None
    price_spot: float | None
    price_per: str  # node | chip
    description: str = ""
    allocatable: Allocatable | None = None  # None when the profile gives no cpu/memory for the node
    exclusive: bool = False  # one pod per node: a pod pays the whole node

    def price(self, spot: bool, chips_per_host: int = 0) -> float | None:
        base = self.price_spot if spot else self.price_on_demand
        if base is None:
            return None
        return base * chips_per_host if self.price_per == "chip" else base


@dataclass(frozen=True)
class Cluster:
    """A cluster profile; build with ``Cluster.load``."""

    name: str
    source: str
    provider: str
    region: str | None
    description: str
    node_pools: tuple[NodePool, ...]
    pool_label: str | None = None
    capacity_label: dict[str, str] | None = None
    spot_selector: dict[str, str] = field(default_factory=dict)
    spot_tolerations: tuple[Toleration, ...] = ()
    spot_grace_period: int | None = None
    mig_strategy: str = "mixed"
    # the ExtendedResourceToleration admission plugin: a pod asking for an extended resource gets a toleration of
    # the taint of that name (GKE enables it); lint and plan check a pod as the scheduler will see it
    extended_resource_toleration: bool = False
    tpu_labels: dict[str, str] | None = None
    sources: dict[str, dict[str, str]] = field(default_factory=dict)
    kueue: KueueProfile | None = None  # the profile's kueue: section (xpuflow/kueue.py)
    dra: DraProfile | None = None  # the profile's dra: section (xpuflow/dra.py)

    # ------------------------------------------------------------------ load
    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str]) -> Cluster:
        """Load a shipped profile by name (``gke``, ``eks``, ``aks``, ``generic``) or a YAML file."""
        text, source = _read(name_or_path)
        return cls.from_dict(safe_yaml.loads(text, source), source=source)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> Cluster:
        checked = schema.check(data, source)
        pools = tuple(_pool(p, f"node_pools[{i}]", source, checked) for i, p in enumerate(checked["node_pools"]))
        names = [p.name for p in pools]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise ClusterFileError(f"{source}: node_pools[{i}].name: duplicate pool name {n!r}. Fix: names must be unique.")
        spot = checked.get("spot", {})
        cluster = cls(
            name=checked["name"],
            source=source,
            provider=checked.get("provider", "other"),
            region=checked.get("region"),
            description=checked.get("description", ""),
            node_pools=pools,
            pool_label=checked.get("pool_label"),
            capacity_label=checked.get("capacity_label"),
            spot_selector=dict(spot.get("node_selector", {})),
            spot_tolerations=tuple(_toleration(t) for t in spot.get("tolerations", [])),
            spot_grace_period=spot.get("grace_period"),
            mig_strategy=checked.get("mig_strategy", "mixed"),
            extended_resource_toleration=checked.get("extended_resource_toleration", False),
            tpu_labels=checked.get("tpu_labels"),
            sources=checked.get("sources", {}),
            kueue=kueue.profile(checked.get("kueue"), source, checked["name"], pools),
            dra=dra.profile(checked.get("dra")),
        )
        for i, pool in enumerate(pools):
            if pool.accelerator and pool.accelerator.kind == "tpu" and not cluster.tpu_labels:
                raise ClusterFileError(f"{source}: node_pools[{i}].tpu: a TPU pool needs the top-level 'tpu_labels' "
                                       "(accelerator and topology label keys).")
            if pool.accelerator and not pool.taints and not cluster.exclusion_label(pool):
                raise ClusterFileError(
                    f"{source}: node_pools[{i}]: an untainted accelerator pool needs a label that identifies it "
                    "(set 'pool_label' and give the pool that label, or set 'exclude_by'), so CPU work can be "
                    "kept off it. Fix: add a taint or a label."
                )
        return cluster

    # ----------------------------------------------------------------- views
    def exclusion_label(self, pool: NodePool) -> tuple[str, str] | None:
        """The label that keeps other work off an untainted accelerator pool."""
        if pool.exclude_by:
            return next(iter(pool.exclude_by.items()))
        if self.pool_label and self.pool_label in pool.labels:
            return self.pool_label, pool.labels[self.pool_label]
        return None

    def place(self, compute: Compute) -> Placement:
        """Resolve ``compute`` on this cluster: pick the node pool and build the placement."""
        from .placement import resolve

        return resolve(self, compute)

    def __repr__(self) -> str:
        return f"Cluster({self.name!r}, pools={[p.name for p in self.node_pools]})"


def _read(name_or_path: str | os.PathLike[str]) -> tuple[str, str]:
    text = os.fspath(name_or_path)
    shipped = _catalog.shipped_clusters()
    if text in shipped:
        return _catalog.cluster_file_text(text), f"xpuflow/catalog/clusters/{text}.yaml"
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or os.sep in text or path.exists():
        # regular files only, at most safe_yaml.MAX_BYTES; messages never quote the content
        return safe_yaml.read_text(path, what="cluster file"), text
    raise ClusterFileError(
        f"cluster={shown(text)} is not valid: a shipped profile ({', '.join(shipped)}) or a path to a .yaml file."
        f"{did_you_mean(text, shipped)}"
    )


def _cpu_memory(d: dict[str, str]) -> tuple[int, int]:
    """A ``{cpu, memory}`` mapping as (millicores, bytes)."""
    return int(parse_cpu("cpu", d["cpu"]).value * 1000), int(parse_memory("memory", d["memory"]).value)


def _toleration(t: dict[str, str]) -> Toleration:
    op = t.get("operator", "Equal" if "value" in t else "Exists")
    return Toleration(t["key"], op, t.get("value", "") if op == "Equal" else None, t["effect"])


def _pool(p: dict[str, Any], path: str, source: str, cluster: dict[str, Any]) -> NodePool:
    cat = _catalog.catalog()

    def fail(sub: str, msg: str) -> ClusterFileError:
        return ClusterFileError(f"{source}: {path}.{sub}: {msg}")

    def quantity(key: str, parser: Any) -> Quantity | None:
        if key not in p:
            return None
        try:
            return parser(key, p[key])
        except ComputeError as e:
            raise fail(key, str(e)) from e

    accel: PoolAccelerator | None = None
    if "gpu" in p:
        g = p["gpu"]
        model = g["model"].lower()
        if model not in cat.gpus:
            raise fail("gpu.model", f"unknown GPU model {g['model']!r}.{did_you_mean(g['model'], cat.gpus)} "
                       f"Known: {', '.join(cat.gpus)}")
        mig = g.get("mig")
        if mig is not None and mig not in cat.gpus[model].mig:
            raise fail("gpu.mig", f"{mig!r} is not a MIG profile of {model}; profiles: {', '.join(cat.gpus[model].mig) or 'none'}")
        vendor = cat.gpus[model].vendor
        default = cat.gpu_vendors[vendor]
        if mig and cluster.get("mig_strategy", "mixed") == "mixed":
            default = f"nvidia.com/mig-{mig}"
        accel = PoolAccelerator("gpu", model, g["count"], g.get("resource", default), mig=mig)
    elif "tpu" in p:
        t = p["tpu"]
        version = t["version"].lower()
        if version not in cat.tpus:
            raise fail("tpu.version", f"unknown TPU version {t['version']!r}.{did_you_mean(t['version'], cat.tpus)} "
                       f"Known: {', '.join(cat.tpus)}")
        for j, topo in enumerate(t["topologies"]):
            if topo not in cat.tpus[version].topologies:
                raise fail(f"tpu.topologies[{j}]", f"{topo!r} is not a {version} topology; valid: "
                           f"{', '.join(cat.tpus[version].topologies)}")
        accel = PoolAccelerator("tpu", version, 0, cat.tpu_resource, topologies=tuple(t["topologies"]))
    elif "npu" in p:
        n = p["npu"]
        device = n["device"].lower()
        if device not in cat.npus:
            raise fail("npu.device", f"unknown NPU device {n['device']!r}.{did_you_mean(n['device'], cat.npus)} "
                       f"Known: {', '.join(cat.npus)}")
        accel = PoolAccelerator("npu", device, n["count"], n.get("resource", cat.npus[device].resource))
    price = p.get("price", {})
    cpu, memory = quantity("cpu", parse_cpu), quantity("memory", parse_memory)
    alloc = None
    if cpu is not None and memory is not None:
        kind = accel.kind if accel else "cpu"
        ds = p.get("daemonsets") or cluster.get("daemonsets", {}).get(kind)
        measured = p.get("allocatable")
        try:
            alloc = _alloc.compute(
                cpu_m=int(cpu.value * 1000), memory=int(memory.value),
                reservations=cluster.get("reservations", {"formula": "fixed"}),
                daemonsets=_cpu_memory(ds) if ds else (0, 0),
                max_pods=p.get("max_pods"),
                measured=_cpu_memory(measured) if measured else None,
            )
        except ComputeError as e:
            raise fail("allocatable", str(e)) from e
        over = [k for k, reserved in (("cpu", alloc.reserved_cpu_m), ("memory", alloc.reserved_memory)) if reserved < 0]
        if measured and over:  # a node allocates at most its capacity (kubectl describe node: Allocatable <= Capacity)
            raise fail(f"allocatable.{over[0]}", f"{shown(measured[over[0]])} is more than the node's {over[0]} "
                       f"({(cpu if over[0] == 'cpu' else memory).text}): allocatable is capacity less reservations. "
                       "Fix: copy Allocatable from `kubectl describe node`, and cpu/memory from its Capacity.")
        if alloc.cpu_m <= 0 or alloc.memory <= 0:
            raise fail("cpu", f"a node of {cpu.text} cpu / {memory.text} leaves nothing allocatable to pods "
                       f"({alloc.text()}, {alloc.basis}, after DaemonSets). Fix: check cpu, memory and daemonsets.")
    return NodePool(
        name=p["name"],
        instance_type=p.get("instance_type"),
        cpu=cpu,
        memory=memory,
        purpose=tuple(p.get("purpose", ("general", "training", "inference"))),
        capacity=tuple(p.get("capacity", ("on-demand",))),
        labels=dict(p.get("labels", {})),
        taints=tuple(Taint(t["key"], t["effect"], t.get("value")) for t in p.get("taints", [])),
        exclude_by=dict(p.get("exclude_by", {})),
        accelerator=accel,
        price_on_demand=price.get("on_demand"),
        price_spot=price.get("spot"),
        price_per=price.get("per", "node"),
        description=p.get("description", ""),
        allocatable=alloc,
        exclusive=p.get("exclusive", False),
    )
