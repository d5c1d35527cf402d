"""Keyword arguments for Airflow's ``KubernetesPodOperator`` from a ``Placement``.

    from xpuflow.render import airflow as render_airflow
    KubernetesPodOperator(task_id="train", image=..., cmds=[...],
                          **render_airflow.operator_kwargs(placement))

:func:`pod_kwargs` returns the same settings as plain data (no kubernetes
client import); :func:`operator_kwargs` converts them to the client models the
operator's typed arguments expect, at the edge. Multi-host slices are refused.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ..placement import Placement
from . import dra, kueue, refuse_unsupported

__all__ = ["pod_kwargs", "operator_kwargs", "CANNOT"]

CANNOT = ("multi_host",)

# KubernetesPodOperator argument -> kubernetes client model it is typed as.
_MODELS = {
    "container_resources": "V1ResourceRequirements",
    "affinity": "V1Affinity",
    "tolerations": "list[V1Toleration]",
    "volumes": "list[V1Volume]",
    "volume_mounts": "list[V1VolumeMount]",
}


def pod_kwargs(placement: Placement, *, step: str = "") -> dict[str, Any]:
    """The operator's pod settings as plain dicts, keyed by KubernetesPodOperator argument names."""
    refuse_unsupported(placement, "KubernetesPodOperator", CANNOT, step=step)
    kwargs: dict[str, Any] = {
        "container_resources": placement.resources(),
        "node_selector": dict(placement.node_selector),
        "tolerations": [dict(t) for t in placement.tolerations],
        "env_vars": dict(placement.env),
        "labels": {**placement.labels, **kueue.object_labels(placement)},
        "security_context": copy.deepcopy(placement.pod_security_context),
        "container_security_context": copy.deepcopy(placement.container_security_context),
        "automount_service_account_token": False,
        "retries": placement.retries,
    }
    if kueue.pod_annotations(placement, 1):
        kwargs["annotations"] = kueue.pod_annotations(placement, 1)
    if placement.claims:  # the operator has no argument for pod resourceClaims; its pod template carries them
        kwargs["pod_template_dict"] = _claims_template(placement, step)
    if placement.affinity:
        kwargs["affinity"] = copy.deepcopy(placement.affinity)
    if placement.volumes:
        kwargs["volumes"] = copy.deepcopy(list(placement.volumes))
        kwargs["volume_mounts"] = copy.deepcopy(list(placement.volume_mounts))
    if placement.priority_class:
        kwargs["priority_class_name"] = placement.priority_class
    if placement.grace_period is not None:
        kwargs["termination_grace_period"] = placement.grace_period
    if placement.timeout is not None:
        kwargs["active_deadline_seconds"] = placement.timeout
    return kwargs


def _claims_template(placement: Placement, step: str) -> dict[str, Any]:
    """A pod template that carries only the pod's ``resourceClaims`` (the operator merges its own pod over it)."""
    if not step:
        from ..errors import RenderError

        raise RenderError(f"placement on cluster {placement.cluster!r} claims devices through DRA: pass step=<task id> "
                          "so the pod refers to that step's ResourceClaimTemplates (render.kubernetes."
                          "resource_claim_templates(placement, name=<task id>)).")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {},
            "spec": {"containers": [{"name": "base"}], "resourceClaims": dra.pod_claims(placement, name=step)}}


def operator_kwargs(placement: Placement, *, step: str = "") -> dict[str, Any]:
    """:func:`pod_kwargs` with typed arguments converted to ``kubernetes.client`` models."""
    from kubernetes.client import ApiClient

    kwargs = pod_kwargs(placement, step=step)
    client = ApiClient()
    for arg, model in _MODELS.items():
        if arg in kwargs:
            kwargs[arg] = client.deserialize(_Response(kwargs[arg]), model)
    return kwargs


class _Response:
    """The minimal object ``ApiClient.deserialize`` reads (a JSON body in ``.data``)."""

    def __init__(self, payload: Any) -> None:
        self.data = json.dumps(payload)
