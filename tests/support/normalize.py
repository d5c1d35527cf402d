"""Reduce what each backend produced to the fields the parity test compares.

The shape is Kubernetes' own: requests, limits, nodeSelector, tolerations
(sorted), affinity (None when absent). Used for the Kubernetes renderer's
manifests, the KFP compiled IR and Airflow's built pods alike.
"""

from __future__ import annotations

from typing import Any


def _tolerations(items: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    keep = ("key", "operator", "value", "effect")
    cleaned = [{k: t[k] for k in keep if t.get(k) is not None} for t in items or []]
    return sorted(cleaned, key=lambda t: tuple(str(t.get(k)) for k in keep))


def from_pod_spec(spec: dict[str, Any]) -> dict[str, Any]:
    resources = spec["containers"][0].get("resources") or {}
    return {
        "requests": dict(resources.get("requests") or {}),
        "limits": dict(resources.get("limits") or {}),
        "nodeSelector": dict(spec.get("nodeSelector") or {}),
        "tolerations": _tolerations(spec.get("tolerations")),
        "affinity": spec.get("affinity") or None,
    }


def from_kfp_ir(docs: list[dict[str, Any]], display_name: str) -> dict[str, Any]:
    """Find the task named ``display_name`` in a compiled pipeline and rebuild its pod settings."""
    pipeline = docs[0]
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    dags = [pipeline["root"]["dag"], *(c["dag"] for c in pipeline["components"].values() if "dag" in c)]
    for task in (t for dag in dags for t in dag["tasks"].values()):  # inside a ParallelFor too (sharded steps)
        if task["taskInfo"]["name"] == display_name:
            executor = pipeline["components"][task["componentRef"]["name"]]["executorLabel"]
            break
    else:
        raise KeyError(display_name)
    res = pipeline["deploymentSpec"]["executors"][executor]["container"].get("resources", {})
    requests, limits = {}, {}
    for field, target, key in (
        ("resourceCpuRequest", requests, "cpu"),
        ("resourceMemoryRequest", requests, "memory"),
        ("resourceCpuLimit", limits, "cpu"),
        ("resourceMemoryLimit", limits, "memory"),
    ):
        if field in res:
            target[key] = res[field]
    if "accelerator" in res:
        limits[res["accelerator"]["resourceType"]] = str(res["accelerator"]["resourceCount"])
    cfg = platform.get(executor, {})
    # the KFP driver turns each weightless term into a required nodeSelectorTerm (ORed) and each weighted one
    # into a preferred term (backend/src/v2/driver); rebuild the pod's nodeAffinity the same way
    terms = [{"matchExpressions": t["matchExpressions"]} for t in cfg.get("nodeAffinity", []) if "weight" not in t]
    preferred = [
        {"weight": t["weight"], "preference": {"matchExpressions": t["matchExpressions"]}}
        for t in cfg.get("nodeAffinity", []) if "weight" in t
    ]
    node_affinity: dict[str, Any] = {}
    if terms:
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": terms}
    if preferred:
        node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
    affinity = {"nodeAffinity": node_affinity} if node_affinity else None
    return {
        "requests": requests,
        "limits": limits,
        "nodeSelector": dict(cfg.get("nodeSelector", {}).get("labels", {})),
        "tolerations": _tolerations(cfg.get("tolerations")),
        "affinity": affinity,
    }
