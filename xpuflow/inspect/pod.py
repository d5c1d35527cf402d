"""``TaskPod``: what one task's pod asks of the scheduler, whoever wrote the pipeline.

Readers turn a compiled KFP pipeline (:mod:`.kfp_ir`) or an Airflow DAG file
(:mod:`.dagfile`) into TaskPods; :mod:`.checks` holds them against a ``Cluster``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = ["TaskPod", "from_pod_spec", "BASIC_RESOURCES"]

# resources every node has; anything else in limits is an extended resource (an accelerator)
BASIC_RESOURCES = ("cpu", "memory", "ephemeral-storage")


@dataclass(frozen=True)
class TaskPod:
    """One task's scheduling requirements as Kubernetes writes them (plain data)."""

    task: str
    requests: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    # required node affinity: any one term must match, each term's expressions all
    required_terms: tuple[tuple[dict[str, Any], ...], ...] = ()
    # preferred node affinity: (weight, expressions); the scheduler favours the nodes with the most weight
    preferred_terms: tuple[tuple[int, tuple[dict[str, Any], ...]], ...] = ()
    # what the reader could not know before run time (pipeline parameters, JSON selectors)
    unknown: tuple[str, ...] = ()
    # how many pods of this spec the task runs at once (a mapped Airflow task's map indexes); plan prices them all
    pods: int = 1
    fanout: str = ""  # what the pods are, shown beside their count in plan ("map indexes of a mapped task")

    def extended(self) -> dict[str, str]:
        """Extended resources (GPUs, TPU chips, NPUs) asked for: limits beyond cpu/memory/storage."""
        asked = {**self.requests, **self.limits}
        return {k: v for k, v in asked.items() if k not in BASIC_RESOURCES and not k.startswith("hugepages-")}


def from_pod_spec(task: str, spec: dict[str, Any], unknown: tuple[str, ...] = (), pods: int = 1,
                  fanout: str = "") -> TaskPod:
    """A TaskPod from a Kubernetes pod spec (camelCase dicts), asking what the scheduler counts for the whole pod:
    every container (sidecars too), or an init container's peak when that is larger."""
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = tuple(tuple(t.get("matchExpressions") or ()) for t in required.get("nodeSelectorTerms") or ())
    preferred = tuple((int(t.get("weight") or 0), tuple((t.get("preference") or {}).get("matchExpressions") or ()))
                      for t in (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                                .get("preferredDuringSchedulingIgnoredDuringExecution") or ()))
    return TaskPod(
        task=task,
        requests=_pod_resources(spec, "requests"),
        limits=_pod_resources(spec, "limits"),
        node_selector={k: str(v) for k, v in (spec.get("nodeSelector") or {}).items()},
        tolerations=tuple(spec.get("tolerations") or ()),
        required_terms=terms,
        preferred_terms=preferred,
        unknown=unknown,
        pods=pods,
        fanout=fanout,
    )


def _pod_resources(spec: dict[str, Any], which: str) -> dict[str, str]:
    """The pod's effective ``requests`` or ``limits`` as kube-scheduler computes them: the sum over its containers
    and sidecars (init containers with ``restartPolicy: Always``), or an init container's own (with the sidecars
    started before it) when larger; a container's request defaults to its limit."""
    inits = spec.get("initContainers") or []
    sidecars = [_asked(c, which) for c in inits if c.get("restartPolicy") == "Always"]
    running = _summed([_asked(c, which) for c in spec.get("containers") or [{}]] + sidecars)
    peaks = [_summed([_asked(c, which), *sidecars]) for c in inits if c.get("restartPolicy") != "Always"]
    out = dict(running)
    for peak in peaks:
        for key, text in peak.items():
            if key not in out or _amount(key, text) > _amount(key, out[key]):
                out[key] = text
    return out


def _asked(container: dict[str, Any], which: str) -> dict[str, str]:
    resources = container.get("resources") or {}
    asked = dict(resources.get("limits") or {}) if which == "requests" else {}  # requests default to limits
    asked.update(resources.get(which) or {})
    return {k: str(v) for k, v in asked.items()}


def _summed(asked: list[dict[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for one in asked:
        for key, text in one.items():
            if key not in out:
                out[key] = text
                continue
            a, b = _amount(key, out[key]), _amount(key, text)
            if a >= 0 and b >= 0:
                out[key] = _text(key, a + b)
    return out


def _amount(key: str, text: str) -> Decimal:
    """Base units (cores, bytes, devices); -1 for a value that cannot be read (a template)."""
    from ..quantity import parse_cpu, parse_memory

    if text.strip() in ("0", "0m"):
        return Decimal(0)
    try:
        if key == "cpu":
            return parse_cpu(key, text).value
        if key in BASIC_RESOURCES or key.startswith("hugepages-"):
            return parse_memory(key, text).value
        return Decimal(int(text))
    except ValueError:
        return Decimal(-1)


def _text(key: str, value: Decimal) -> str:
    if key == "cpu":
        return str(int(value)) if value == value.to_integral_value() else f"{int(value * 1000)}m"
    if key in BASIC_RESOURCES or key.startswith("hugepages-"):
        for suffix, unit in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
            if value % unit == 0:
                return f"{int(value // unit)}{suffix}"
    return str(int(value))
