"""``TaskPod``: what one task's pod asks of the scheduler, whoever wrote the pipeline.

Readers turn a compiled KFP pipeline (:mod:`.kfp_ir`) or an Airflow DAG file
(:mod:`.dagfile`) into TaskPods; :mod:`.checks` holds them against a ``Cluster``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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

    def extended(self) -> dict[str, str]:
        """Extended resources (GPUs, TPU chips, NPUs) asked for: limits beyond cpu/memory/storage."""
        asked = {**self.requests, **self.limits}
        return {k: v for k, v in asked.items() if k not in BASIC_RESOURCES and not k.startswith("hugepages-")}


def from_pod_spec(task: str, spec: dict[str, Any], unknown: tuple[str, ...] = ()) -> TaskPod:
    """A TaskPod from a Kubernetes pod spec (camelCase dicts); the first container is the task's."""
    containers = spec.get("containers") or [{}]
    resources = containers[0].get("resources") or {}
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = tuple(tuple(t.get("matchExpressions") or ()) for t in required.get("nodeSelectorTerms") or ())
    preferred = tuple((int(t.get("weight") or 0), tuple((t.get("preference") or {}).get("matchExpressions") or ()))
                      for t in (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                                .get("preferredDuringSchedulingIgnoredDuringExecution") or ()))
    return TaskPod(
        task=task,
        requests={k: str(v) for k, v in (resources.get("requests") or {}).items()},
        limits={k: str(v) for k, v in (resources.get("limits") or {}).items()},
        node_selector={k: str(v) for k, v in (spec.get("nodeSelector") or {}).items()},
        tolerations=tuple(spec.get("tolerations") or ()),
        required_terms=terms,
        preferred_terms=preferred,
        unknown=unknown,
    )
