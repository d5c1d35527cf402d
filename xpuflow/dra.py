"""Dynamic Resource Allocation (``resource.k8s.io/v1``) in a cluster profile, and the claims of one placement.

The profile's ``dra:`` section names the DeviceClass of each accelerator (GPUs per
vendor, TPUs per version, NPUs per device), e.g. ``gpu.nvidia.com`` for NVIDIA's DRA
driver. ``Compute.gpu(..., claim=True)`` then asks for its devices through a
ResourceClaimTemplate instead of the extended resource: ``resolve`` returns the
``DeviceClaim`` of the placement (device class, CEL selectors for the model and a
memory minimum, the exact count; several ordered candidates become ``firstAvailable``),
and :mod:`xpuflow.render.dra` renders it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import PlacementError

if TYPE_CHECKING:
    from .cluster import Cluster, NodePool
    from .compute import Compute

__all__ = ["DraClass", "DraProfile", "DeviceRequest", "DeviceClaim", "profile", "resolve", "class_for"]


@dataclass(frozen=True)
class DraClass:
    """One DeviceClass and the attribute names its driver publishes."""

    device_class: str
    driver: str  # the domain of its attributes and capacities: device.attributes['<driver>']
    mig_class: str | None = None
    product_attribute: str | None = None  # e.g. productName (NVIDIA): CEL selects the model on it
    memory_capacity: str | None = None  # e.g. memory (NVIDIA): CEL compares the memory minimum with it
    products: dict[str, str] = field(default_factory=dict)  # catalog model -> exact product name


@dataclass(frozen=True)
class DraProfile:
    gpu: dict[str, DraClass]  # vendor -> class
    tpu: dict[str, DraClass]  # version -> class
    npu: dict[str, DraClass]  # device -> class

    def classes(self) -> set[str]:
        """Every DeviceClass name the profile declares (MIG classes included)."""
        out = set()
        for table in (self.gpu, self.tpu, self.npu):
            for c in table.values():
                out |= {c.device_class} | ({c.mig_class} if c.mig_class else set())
        return out


@dataclass(frozen=True)
class DeviceRequest:
    """One way to satisfy a claim: ``count`` devices of ``device_class`` that pass every CEL selector."""

    name: str  # request (or firstAvailable subrequest) name, a DNS label
    device_class: str
    selectors: tuple[str, ...]
    count: int


@dataclass(frozen=True)
class DeviceClaim:
    """A claim of one pod: one request, or ordered alternatives (``firstAvailable``)."""

    name: str  # the pod's resourceClaims entry and the container's resources.claims entry
    kind: str  # gpu | tpu | npu
    resource: str  # the extended resource it replaces (nvidia.com/gpu ...): not set as a limit
    requests: tuple[DeviceRequest, ...]

    def describe(self) -> str:
        """One line for `xpuflow plan` / `lint`: ``gpu: 1x gpu.nvidia.com [l4]`` or the alternatives in order."""
        alts = " | ".join(f"{r.count}x {r.device_class} [{r.name}]" for r in self.requests)
        return f"{self.name}: {alts}" + (" (first available)" if len(self.requests) > 1 else "")


def profile(data: dict[str, Any] | None) -> DraProfile | None:
    """Build the ``dra:`` section (already checked by the cluster schema)."""
    if data is None:
        return None

    def table(kind: str) -> dict[str, DraClass]:
        return {
            key.lower(): DraClass(
                device_class=v["device_class"],
                driver=v.get("driver", v["device_class"]),
                mig_class=v.get("mig_class"),
                product_attribute=v.get("product_attribute"),
                memory_capacity=v.get("memory_capacity"),
                products=dict(v.get("products", {})),
            )
            for key, v in data.get(kind, {}).items()
        }

    return DraProfile(gpu=table("gpu"), tpu=table("tpu"), npu=table("npu"))


def _key(pool: NodePool) -> str:
    """What the profile keys an accelerator's class by: GPU vendor, TPU version, NPU device."""
    acc = pool.accelerator
    assert acc is not None  # only accelerator pools are claimed
    if acc.kind == "gpu":
        from .catalog import catalog

        return catalog().gpus[acc.name].vendor
    return acc.name


def class_for(cluster: Cluster, pool: NodePool) -> DraClass | None:
    """The DeviceClass the profile declares for the pool's accelerator, if any."""
    if cluster.dra is None or pool.accelerator is None:
        return None
    return getattr(cluster.dra, pool.accelerator.kind).get(_key(pool))


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _model_selector(cls: DraClass, model: str) -> str | None:
    """CEL that matches devices of a catalog model: its exact product name, else each word of its name."""
    if cls.product_attribute is None:
        return None
    attr = f"device.attributes[{_quote(cls.driver)}].{cls.product_attribute}"
    if model in cls.products:
        return f"{attr} == {_quote(cls.products[model])}"
    # a100-40gb -> 'a100' and '40gb' as whole words of the lower-cased name ('l4' does not match 'L40S')
    words = [w for w in re.split(r"[-_ ]", model.lower()) if w]
    return " && ".join(f"{attr}.lowerAscii().matches({_quote(f'(^|[^a-z0-9]){re.escape(w)}([^a-z0-9]|$)')})"
                       for w in words)


def _memory_selector(cls: DraClass, minimum: str | None) -> str | None:
    """CEL that keeps devices with at least ``minimum`` memory (a quantity such as "40Gi")."""
    if minimum is None or cls.memory_capacity is None:
        return None
    return f"device.capacity[{_quote(cls.driver)}].{cls.memory_capacity}.compareTo(quantity({_quote(minimum)})) >= 0"


def _request_name(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")[:63] or "device"


def _gpu_candidates(compute: Compute, pools: Sequence[NodePool]) -> tuple[tuple[str, ...], str | None]:
    """The models a GPU Compute names that ``pools`` offer, in the pools' order (preferred first; none when the
    Compute names no model), and its memory minimum, if any."""
    acc = compute.accelerator
    named = tuple(getattr(acc, "candidates", ()) or ((acc.model,) if isinstance(getattr(acc, "model", None), str) else ()))
    offered = [p.accelerator.name for p in pools if p.accelerator is not None]
    models = tuple(dict.fromkeys(m for m in offered if m in named))
    memory = getattr(acc, "gpu_memory", None)
    if memory is not None:
        from .quantity import parse_memory

        memory = parse_memory("gpu_memory", memory).text
    return models, memory


def resolve(cluster: Cluster, compute: Compute, pools: Sequence[NodePool]) -> tuple[DeviceClaim, ...]:
    """The claims of ``compute`` when it may land on ``pools`` (preferred first): one request, or one
    ``firstAvailable`` alternative per model those pools offer. Refuses a claim the profile has no
    DeviceClass for, naming the cluster."""
    if not compute.claim:
        return ()
    pool = pools[0]
    acc = pool.accelerator
    assert acc is not None  # Compute refuses claim=True on a CPU step
    cls = class_for(cluster, pool)
    what = {"gpu": "GPUs of vendor", "tpu": "TPU", "npu": "NPU device"}[acc.kind]
    if cls is None:
        key = _key(pool)
        declared = cluster.dra.classes() if cluster.dra else set()
        raise PlacementError(
            f"cluster {cluster.name!r} ({cluster.source}): claim=True is not valid: the profile's dra: section "
            f"declares no DeviceClass for {what} {key!r}"
            + (f" (it declares {', '.join(sorted(declared))})" if declared else " (the profile has no dra: section)")
            + f". Fix: add dra.{acc.kind}.{key}.device_class to the profile (docs/kueue-dra.md), "
            "or drop claim=True to use the device plugin's extended resource."
        )
    count = compute.chips_per_host if acc.kind == "tpu" else compute.accelerator.count  # type: ignore[union-attr]
    requests: list[DeviceRequest] = []
    if acc.kind == "gpu" and acc.mig:
        if cls.mig_class is None:
            raise PlacementError(
                f"cluster {cluster.name!r} ({cluster.source}): claim=True is not valid for MIG slice {acc.mig}: "
                f"dra.gpu.{_key(pool)} names no mig_class. Fix: add mig_class (mig.nvidia.com for NVIDIA's driver).")
        selectors = [f"device.attributes[{_quote(cls.driver)}].profile == {_quote(acc.mig)}"]
        requests.append(DeviceRequest(_request_name(f"mig-{acc.mig}"), cls.mig_class, tuple(selectors), count))
    elif acc.kind == "gpu":
        models, memory = _gpu_candidates(compute, pools)
        for model in models or (None,):
            selectors = [s for s in ((_model_selector(cls, model) if model else None), _memory_selector(cls, memory)) if s]
            requests.append(DeviceRequest(_request_name(model or acc.kind), cls.device_class, tuple(selectors), count))
    else:
        requests.append(DeviceRequest(_request_name(acc.name), cls.device_class, (), count))
    return (DeviceClaim(name=acc.kind, kind=acc.kind, resource=acc.resource, requests=tuple(requests)),)
