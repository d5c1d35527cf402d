"""Typed pieces of a pod spec that a ``Placement`` carries: tolerations, node affinity, volumes, security contexts.

A placement keeps them typed (frozen, comparable, hashable) until a renderer writes Kubernetes:
each type has ONE ``to_dict()`` that every renderer calls at its edge, and ``dicts(items)`` turns a
sequence of them into a list. A field left ``None`` is not written, as Kubernetes omits it.
``from_dict`` reads the same shape back (a compiled pipeline's or a pod's own data).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Toleration", "MatchExpression", "PreferredTerm", "NodeAffinity", "EmptyDirVolume", "VolumeMount",
           "PodSecurityContext", "ContainerSecurityContext", "dicts"]


class _ToDict(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


def dicts(items: Iterable[_ToDict]) -> list[dict[str, Any]]:
    """``[item.to_dict() for item in items]``: a list of typed pieces as Kubernetes writes it."""
    return [item.to_dict() for item in items]


def _set(out: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        out[key] = value


@dataclass(frozen=True)
class Toleration:
    """A pod toleration; ``operator`` is ``Equal`` (with ``value``) or ``Exists``; ``key=None`` tolerates every key."""

    key: str | None
    operator: str = "Equal"
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        _set(out, "key", self.key)
        out["operator"] = self.operator
        _set(out, "value", self.value)
        _set(out, "effect", self.effect)
        _set(out, "tolerationSeconds", self.toleration_seconds)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Toleration:
        return cls(d.get("key"), d.get("operator") or "Equal", d.get("value"), d.get("effect"),
                   d.get("tolerationSeconds"))


@dataclass(frozen=True)
class MatchExpression:
    """One node selector requirement: ``key`` ``In``/``NotIn``/``Exists``/... ``values``."""

    key: str
    operator: str
    values: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "operator": self.operator}
        if self.values is not None:
            out["values"] = list(self.values)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MatchExpression:
        values = d.get("values")
        return cls(d.get("key", ""), d.get("operator", ""), None if values is None else tuple(values))


@dataclass(frozen=True)
class PreferredTerm:
    """A preferred node affinity term: nodes matching all ``expressions`` score ``weight`` (1-100)."""

    weight: int
    expressions: tuple[MatchExpression, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"weight": self.weight, "preference": {"matchExpressions": dicts(self.expressions)}}


@dataclass(frozen=True)
class NodeAffinity:
    """Required terms (a node must match one, all expressions of it) and weighted preferred terms."""

    required: tuple[tuple[MatchExpression, ...], ...] = ()
    preferred: tuple[PreferredTerm, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The pod's ``affinity`` (``{"nodeAffinity": {...}}``), each part only when it has terms."""
        node: dict[str, Any] = {}
        if self.required:
            node["requiredDuringSchedulingIgnoredDuringExecution"] = {
                "nodeSelectorTerms": [{"matchExpressions": dicts(term)} for term in self.required]}
        if self.preferred:
            node["preferredDuringSchedulingIgnoredDuringExecution"] = dicts(self.preferred)
        return {"nodeAffinity": node}


@dataclass(frozen=True)
class EmptyDirVolume:
    """An ``emptyDir`` volume; ``medium="Memory"`` makes it tmpfs (the /dev/shm of training pods)."""

    name: str
    medium: str | None = None
    size_limit: str | None = None

    def to_dict(self) -> dict[str, Any]:
        empty_dir: dict[str, Any] = {}
        _set(empty_dir, "medium", self.medium)
        _set(empty_dir, "sizeLimit", self.size_limit)
        return {"name": self.name, "emptyDir": empty_dir}


@dataclass(frozen=True)
class VolumeMount:
    name: str
    mount_path: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mountPath": self.mount_path}


@dataclass(frozen=True)
class PodSecurityContext:
    run_as_non_root: bool | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    seccomp_profile: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        _set(out, "runAsNonRoot", self.run_as_non_root)
        _set(out, "runAsUser", self.run_as_user)
        _set(out, "runAsGroup", self.run_as_group)
        if self.seccomp_profile is not None:
            out["seccompProfile"] = {"type": self.seccomp_profile}
        return out


@dataclass(frozen=True)
class ContainerSecurityContext:
    allow_privilege_escalation: bool | None = None
    drop_capabilities: tuple[str, ...] | None = None
    read_only_root_filesystem: bool | None = None
    run_as_non_root: bool | None = None
    seccomp_profile: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        _set(out, "allowPrivilegeEscalation", self.allow_privilege_escalation)
        if self.drop_capabilities is not None:
            out["capabilities"] = {"drop": list(self.drop_capabilities)}
        _set(out, "readOnlyRootFilesystem", self.read_only_root_filesystem)
        _set(out, "runAsNonRoot", self.run_as_non_root)
        if self.seccomp_profile is not None:
            out["seccompProfile"] = {"type": self.seccomp_profile}
        return out
