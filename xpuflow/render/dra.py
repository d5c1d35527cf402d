"""Dynamic Resource Allocation: ResourceClaimTemplates (``resource.k8s.io/v1``) and the pod's references to them.

    from xpuflow import Cluster, Compute
    from xpuflow.render import dra
    p = Cluster.load("generic").place(Compute.gpu(model="l4", claim=True))
    dra.resource_claim_templates(p, name="train")   # [ResourceClaimTemplate 'train-gpu']
    dra.pod_claims(p, name="train")                 # [{'name': 'gpu', 'resourceClaimTemplateName': 'train-gpu'}]

One template per claim of the step, named ``<step>-<claim>``: one request of ``count``
devices of the profile's DeviceClass with CEL selectors (``exactly``), or, for ordered
candidates, ``firstAvailable`` subrequests tried in order. Every pod made from a
template gets its own ResourceClaim, so each host of a slice gets its own devices.
The container names the claim in ``resources.claims`` (``Placement.resources()``) and
has no extended-resource limit for the claimed device.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..dra import DeviceClaim, DeviceRequest
from ..placement import Placement

__all__ = ["API_VERSION", "resource_claim_templates", "pod_claims", "template_name"]

API_VERSION = "resource.k8s.io/v1"


def template_name(name: str, claim: DeviceClaim) -> str:
    """``<step>-<claim>`` as a DNS subdomain (``train_gpu`` -> ``train-gpu-gpu``)."""
    return re.sub(r"[^a-z0-9.-]", "-", f"{name}-{claim.name}".lower()).strip("-.")[:253]


def pod_claims(placement: Placement, *, name: str) -> list[dict[str, str]]:
    """The pod's ``resourceClaims``: one per claim, made from the step's template."""
    return [{"name": c.name, "resourceClaimTemplateName": template_name(name, c)} for c in placement.claims]


def _exactly(r: DeviceRequest) -> dict[str, Any]:
    out: dict[str, Any] = {"deviceClassName": r.device_class}
    if r.selectors:
        out["selectors"] = [{"cel": {"expression": s}} for s in r.selectors]
    out["allocationMode"] = "ExactCount"
    out["count"] = r.count
    return out


def _request(claim: DeviceClaim) -> dict[str, Any]:
    if len(claim.requests) == 1:
        return {"name": claim.name, "exactly": _exactly(claim.requests[0])}
    return {"name": claim.name, "firstAvailable": [{"name": r.name, **_exactly(r)} for r in claim.requests]}


def resource_claim_templates(
    placement: Placement, *, name: str, namespace: str | None = None, labels: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The ResourceClaimTemplates the step's pods claim their devices from (none when it claims nothing)."""
    out = []
    for claim in placement.claims:
        meta: dict[str, Any] = {"name": template_name(name, claim), "labels": {**placement.labels, **(labels or {})}}
        if namespace:
            meta["namespace"] = namespace
        out.append({"apiVersion": API_VERSION, "kind": "ResourceClaimTemplate", "metadata": meta,
                    "spec": {"spec": {"devices": {"requests": [_request(claim)]}}}})
    return out
