"""A small declarative schema for cluster profile YAML, with YAML-path errors.

    clusters/eks.yaml: node_pools[2].gpu.count: expected a whole number >= 1, found 'two'

The schema itself is data (``CLUSTER_SCHEMA`` below), so the accepted shape of a
cluster file is read in one place; docs/clusters.md documents the same keys.
"""

from __future__ import annotations

import abc
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import ClusterFileError, did_you_mean, shown
from ..quantity import MAX_INT32, MAX_INT64

__all__ = ["CLUSTER_SCHEMA", "check"]


class Spec(abc.ABC):
    """One node of the schema: checks a value at a YAML path and returns it normalised."""

    what = "a value"

    @abc.abstractmethod
    def check(self, value: Any, path: str, ctx: _Ctx) -> Any: ...


@dataclass
class _Ctx:
    source: str

    def fail(self, path: str, message: str) -> ClusterFileError:
        return ClusterFileError(f"{self.source}: {path or '<top>'}: {message}")


def _found(value: Any) -> str:
    return f"found {shown(value)} ({type(value).__name__})"


@dataclass
class Str(Spec):
    pattern: str | None = None
    what: str = "a string"

    def check(self, value: Any, path: str, ctx: _Ctx) -> str:
        if not isinstance(value, str) or not value:
            raise ctx.fail(path, f"expected {self.what}, {_found(value)}")
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise ctx.fail(path, f"expected {self.what}, found {value!r}")
        return value


@dataclass
class Enum(Spec):
    choices: tuple[str, ...] = ()

    def check(self, value: Any, path: str, ctx: _Ctx) -> str:
        if value not in self.choices:
            raise ctx.fail(path, f"expected one of {', '.join(self.choices)}, found {value!r}.{did_you_mean(value, self.choices)}")
        return value


@dataclass
class Int(Spec):
    minimum: int = 0
    maximum: int = MAX_INT64  # every count here reaches a manifest or is compared with one

    def check(self, value: Any, path: str, ctx: _Ctx) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < self.minimum:
            raise ctx.fail(path, f"expected a whole number >= {self.minimum}, {_found(value)}")
        if value > self.maximum:
            raise ctx.fail(path, f"expected a whole number <= {self.maximum}, {_found(value)}")
        return value


@dataclass
class Bool(Spec):
    def check(self, value: Any, path: str, ctx: _Ctx) -> bool:
        if not isinstance(value, bool):
            raise ctx.fail(path, f"expected true or false, {_found(value)}")
        return value


@dataclass
class Num(Spec):
    """A finite price >= 0 (``.nan`` or ``.inf`` would compare as cheapest or never, silently)."""

    maximum: float = 1e9

    def check(self, value: Any, path: str, ctx: _Ctx) -> float:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        if not ok or not 0 <= value <= self.maximum:
            raise ctx.fail(path, f"expected a number >= 0 (USD per hour: finite, at most {self.maximum:,.0f}), {_found(value)}")
        return float(value)


@dataclass
class Quantity(Spec):
    """A Kubernetes quantity written as a string or number ("8", "32Gi")."""

    def check(self, value: Any, path: str, ctx: _Ctx) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ctx.fail(path, f"expected a Kubernetes quantity such as '8' or '32Gi', {_found(value)}")
        return str(value)


@dataclass
class Labels(Spec):
    """A mapping of label keys to string values (YAML booleans/numbers must be quoted)."""

    def check(self, value: Any, path: str, ctx: _Ctx) -> dict[str, str]:
        if not isinstance(value, dict):
            raise ctx.fail(path, f"expected a mapping of label key to string value, {_found(value)}")
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                hint = ' (quote it: "true")' if isinstance(v, (bool, int, float)) else ""
                raise ctx.fail(_join(path, k), f"expected a string label value, {_found(v)}{hint}")
        return dict(value)


@dataclass
class ListOf(Spec):
    item: Spec = field(default_factory=Str)
    min_items: int = 0

    def check(self, value: Any, path: str, ctx: _Ctx) -> list[Any]:
        if not isinstance(value, list):
            raise ctx.fail(path, f"expected a list, {_found(value)}")
        if len(value) < self.min_items:
            raise ctx.fail(path, f"expected at least {self.min_items} item(s), found {len(value)}")
        return [self.item.check(v, f"{path}[{i}]", ctx) for i, v in enumerate(value)]


@dataclass
class MapOf(Spec):
    value: Spec = field(default_factory=Str)

    def check(self, value: Any, path: str, ctx: _Ctx) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ctx.fail(path, f"expected a mapping, {_found(value)}")
        return {k: self.value.check(v, _join(path, k), ctx) for k, v in value.items()}


@dataclass
class Obj(Spec):
    """A mapping with known keys: ``required`` and ``optional`` name -> Spec."""

    required: dict[str, Spec] = field(default_factory=dict)
    optional: dict[str, Spec] = field(default_factory=dict)
    one_of: tuple[str, ...] = ()  # at most one of these keys may be present
    one_of_why: str = "a node pool offers one kind of accelerator"

    def check(self, value: Any, path: str, ctx: _Ctx) -> dict[str, Any]:
        if not isinstance(value, dict):
            # at the top, the value is the whole file: name its type only, never its text
            found = _found(value) if path else f"found a {type(value).__name__}; is this a cluster profile?"
            raise ctx.fail(path, f"expected a mapping, {found}")
        known = {**self.required, **self.optional}
        for key in value:
            if key not in known:
                allowed = ", ".join(known)
                raise ctx.fail(_join(path, key), f"unknown key.{did_you_mean(key, known)} Allowed here: {allowed}")
        for key in self.required:
            if key not in value:
                raise ctx.fail(_join(path, key), "missing required key")
        present = [k for k in self.one_of if k in value]
        if len(present) > 1:
            raise ctx.fail(path, f"has both {present[0]!r} and {present[1]!r}; {self.one_of_why}")
        return {k: known[k].check(v, _join(path, k), ctx) for k, v in value.items()}


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,62}")


def _join(path: str, key: Any) -> str:
    """The YAML path to ``key``; a key that does not look like one is described, not quoted (it may be any file's text)."""
    name = key if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else f"<a {type(key).__name__} key>"
    return f"{path}.{name}" if path else name


_SOURCE = Obj(required={"ref": Str(), "date": Str(pattern=r"\d{4}-\d{2}-\d{2}", what="a date YYYY-MM-DD")})
_TAINT = Obj(
    required={"key": Str(), "effect": Enum(choices=("NoSchedule", "PreferNoSchedule", "NoExecute"))},
    optional={"value": Str()},
)
_TOLERATION = Obj(
    required={"key": Str(), "effect": Enum(choices=("NoSchedule", "PreferNoSchedule", "NoExecute"))},
    optional={"value": Str(), "operator": Enum(choices=("Equal", "Exists"))},
)
_PRICE = Obj(
    optional={"on_demand": Num(), "spot": Num(), "per": Enum(choices=("node", "chip"))},
)
# CPU and memory of one node (a measured allocatable) or of the DaemonSets on it
_CPU_MEMORY = Obj(required={"cpu": Quantity(), "memory": Quantity()})
_POOL = Obj(
    required={"name": Str(pattern=r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", what="a lowercase DNS label")},
    optional={
        "description": Str(),
        "instance_type": Str(),
        "cpu": Quantity(),
        "memory": Quantity(),
        "purpose": ListOf(item=Enum(choices=("general", "training", "inference")), min_items=1),
        "capacity": ListOf(item=Enum(choices=("on-demand", "spot")), min_items=1),
        "price": _PRICE,
        "labels": Labels(),
        "taints": ListOf(item=_TAINT),
        "exclude_by": Labels(),
        "gpu": Obj(required={"model": Str(), "count": Int(minimum=1, maximum=MAX_INT32)},
                   optional={"mig": Str(), "resource": Str()}),
        "max_pods": Int(minimum=1, maximum=MAX_INT32),
        "daemonsets": _CPU_MEMORY,
        "allocatable": _CPU_MEMORY,
        "exclusive": Bool(),
        "tpu": Obj(required={"version": Str(), "topologies": ListOf(item=Str(), min_items=1)}),
        "npu": Obj(required={"device": Str(), "count": Int(minimum=1, maximum=MAX_INT32)}, optional={"resource": Str()}),
    },
    one_of=("gpu", "tpu", "npu"),
)

_DNS = Str(pattern=r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", what="a lowercase DNS label")
_DNS_SUBDOMAIN = Str(pattern=r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
                     what="a lowercase DNS subdomain")
_SLICE = Obj(optional={"required": Str(), "preferred": Str()}, one_of=("required", "preferred"),
             one_of_why="a slice either requires or prefers one level")
# Kueue (docs/kueue-dra.md): queues, priorities, flavors, quotas and topology-aware scheduling
_KUEUE = Obj(
    required={"local_queues": ListOf(item=_DNS, min_items=1)},
    optional={
        "namespace": _DNS,
        "cluster_queue": _DNS,
        "priorities": MapOf(value=Int(minimum=-(2**31), maximum=MAX_INT32)),
        "flavors_inject": Bool(),
        "quotas": MapOf(value=Obj(optional={"nodes": Int(minimum=1), "cpu": Quantity(), "memory": Quantity(),
                                            "accelerators": Int(minimum=0)})),
        "topology": Obj(required={"levels": MapOf(value=Str())},
                        optional={"name": _DNS, "gpu": _SLICE, "tpu": _SLICE, "npu": _SLICE}),
    },
)
# Dynamic Resource Allocation: the DeviceClass of each accelerator (gpu: per vendor, tpu: per version, npu: per device)
_DRA_CLASS = Obj(
    required={"device_class": _DNS_SUBDOMAIN},
    optional={"driver": _DNS_SUBDOMAIN, "mig_class": _DNS_SUBDOMAIN, "product_attribute": Str(),
              "memory_capacity": Str(), "products": MapOf(value=Str())},
)
_DRA = Obj(optional={"gpu": MapOf(value=_DRA_CLASS), "tpu": MapOf(value=_DRA_CLASS), "npu": MapOf(value=_DRA_CLASS)})

CLUSTER_SCHEMA = Obj(
    required={
        "name": Str(pattern=r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", what="a lowercase DNS label"),
        "node_pools": ListOf(item=_POOL, min_items=1),
    },
    optional={
        "description": Str(),
        "provider": Enum(choices=("gke", "eks", "aks", "generic", "other")),
        "region": Str(),
        "sources": MapOf(value=_SOURCE),
        "pool_label": Str(),
        "capacity_label": Obj(required={"key": Str(), "spot": Str(), "on_demand": Str()}),
        "spot": Obj(optional={"node_selector": Labels(), "tolerations": ListOf(item=_TOLERATION),
                              "grace_period": Int(minimum=0, maximum=3600)}),
        "mig_strategy": Enum(choices=("single", "mixed")),
        "extended_resource_toleration": Bool(),
        "tpu_labels": Obj(required={"accelerator": Str(), "topology": Str()}),
        "kueue": _KUEUE,
        "dra": _DRA,
        "reservations": Obj(
            required={"formula": Enum(choices=("gke", "eks", "aks", "fixed"))},
            optional={"max_pods": Int(minimum=1, maximum=MAX_INT32), "kube_reserved": _CPU_MEMORY, "system_reserved": _CPU_MEMORY,
                      "eviction": Quantity()},
        ),
        "daemonsets": Obj(optional={kind: _CPU_MEMORY for kind in ("cpu", "gpu", "tpu", "npu")}),
    },
)


def check(data: Any, source: str) -> dict[str, Any]:
    """Validate parsed YAML against ``CLUSTER_SCHEMA``; raise ``ClusterFileError`` with the YAML path."""
    return CLUSTER_SCHEMA.check(data, "", _Ctx(source=source))
