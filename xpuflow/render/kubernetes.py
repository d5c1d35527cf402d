"""Kubernetes manifests (plain dicts) from a ``Placement``: Pod and batch/v1 Job.

    from xpuflow.render import kubernetes
    manifest = kubernetes.job(placement, name="train", image="ghcr.io/me/train@sha256:...",
                              command=["xpuflow", "step", "train"])
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ArgumentError, RenderError, invalid
from ..placement import Placement
from ..podspec import dicts
from ..quantity import MAX_INT32
from . import dra, kueue, refuse_unsupported
from .dra import resource_claim_templates

__all__ = ["container", "pod_spec", "pod", "pod_group", "job", "container_env", "object_metadata", "check_pod_hostnames",
           "check_ttl", "resource_claim_templates", "pod_template"]

CONTAINER = "main"
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def check_pod_hostnames(kind: str, name: str, replicated_job: str, pods: int) -> None:
    """JobSet-managed pods are named ``<name>-<replicated job>-0-<index>``; each must be a DNS label (<= 63)."""
    longest = f"{name}-{replicated_job}-0-{pods - 1}"
    if not (isinstance(name, str) and _DNS_1035.match(name)) or len(longest) > 63:
        raise ArgumentError(
            invalid("name", name, "a lowercase DNS label (a-z, 0-9, '-', starting with a letter) short enough "
                    f"that the pod hostname {longest!r} has at most 63 characters", where=kind,
                    fix="use a shorter lowercase name")
        )


def check_ttl(kind: str, name: str, ttl: object) -> int | None:
    """``ttl_seconds_after_finished``: None, or whole seconds that fit the API's int32 field."""
    ok = ttl is None or (isinstance(ttl, int) and not isinstance(ttl, bool) and 0 <= ttl <= MAX_INT32)
    if not ok:
        raise ArgumentError(invalid("ttl_seconds_after_finished", ttl, f"None or whole seconds >= 0 and <= {MAX_INT32}",
                                   where=f"{kind} {name!r}", fix="pass e.g. 86400 (a day), or None to keep it"))
    return ttl  # type: ignore[return-value]


def container_env(placement: Placement, extra: Mapping[str, str] | None) -> list[dict[str, str]]:
    env = dict(placement.env)
    for key, value in (extra or {}).items():
        if key in env and env[key] != value:
            raise RenderError(
                f"env[{key!r}]={value!r} conflicts with the placement's {env[key]!r}. "
                "Fix: drop it; the placement sets it for the chosen hardware."
            )
        env[key] = value
    return [{"name": k, "value": v} for k, v in env.items()]


def _secret_env(placement: Placement, env: Mapping[str, str] | None,
                secret_env: Mapping[str, tuple[str, str]] | None) -> list[dict[str, Any]]:
    taken = {**placement.env, **(env or {})}
    out = []
    for var, (secret, key) in (secret_env or {}).items():
        if var in taken:
            raise RenderError(f"secret_env[{var!r}]: {var} is also a plain env variable. Fix: set it one way.")
        out.append({"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    return out


def container(
    placement: Placement,
    *,
    image: str,
    command: Sequence[str] | None = None,
    args: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    secret_env: Mapping[str, tuple[str, str]] | None = None,
    image_pull_policy: str = "IfNotPresent",
) -> dict[str, Any]:
    """The step's container: resources, env, mounts and security context from the placement.

    ``secret_env``: ``{VAR: (secret name, key)}`` read from Kubernetes Secrets (``secretKeyRef``):
    the manifest names the Secret, never holds its value.
    """
    out: dict[str, Any] = {"name": CONTAINER, "image": image, "imagePullPolicy": image_pull_policy}
    if command:
        out["command"] = list(command)
    if args:
        out["args"] = list(args)
    out["env"] = container_env(placement, env) + _secret_env(placement, env, secret_env)
    out["resources"] = placement.resources()
    out["securityContext"] = placement.container_security_context.to_dict()
    if placement.volume_mounts:
        out["volumeMounts"] = dicts(placement.volume_mounts)
    return out


def pod_spec(placement: Placement, *, restart_policy: str = "Never", claims_of: str | None = None,
             **container_args: Any) -> dict[str, Any]:
    """A PodSpec for one host of the placement (``container_args`` go to :func:`container`).

    A placement with DRA claims needs ``claims_of``: the step name its ResourceClaimTemplates
    are named after (:func:`resource_claim_templates`).
    """
    spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "automountServiceAccountToken": False,
        "securityContext": placement.pod_security_context.to_dict(),
        **placement.scheduling(),
        "containers": [container(placement, **container_args)],
    }
    if placement.volumes:
        spec["volumes"] = dicts(placement.volumes)
    if placement.claims:
        if not claims_of:
            raise RenderError(f"placement on cluster {placement.cluster!r} claims devices through DRA: pass "
                              "claims_of=<step name> so the pod refers to that step's ResourceClaimTemplates.")
        spec["resourceClaims"] = dra.pod_claims(placement, name=claims_of)
    if placement.priority_class:
        spec["priorityClassName"] = placement.priority_class
    if placement.grace_period is not None:
        spec["terminationGracePeriodSeconds"] = placement.grace_period
    return spec


def pod_template(placement: Placement, labels: Mapping[str, str], spec: dict[str, Any], pods: int) -> dict[str, Any]:
    """A pod template: ``labels``, the Kueue topology annotation for ``pods`` pods, and ``spec``."""
    meta: dict[str, Any] = {"labels": dict(labels)}
    annotations = kueue.pod_annotations(placement, pods)
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": spec}


def object_metadata(placement: Placement, name: str, namespace: str | None, labels: Mapping[str, str] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {**placement.labels, **(labels or {})}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def pod(
    placement: Placement,
    *,
    name: str,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    **container_args: Any,
) -> dict[str, Any]:
    """A v1 Pod that runs the step once (single host; no retries: use :func:`job` for those)."""
    refuse_unsupported(placement, "a Kubernetes Pod", ("multi_host", "retries"), step=name)
    spec = pod_spec(placement, claims_of=name, **container_args)
    if placement.timeout is not None:
        spec["activeDeadlineSeconds"] = placement.timeout
    meta = object_metadata(placement, name, namespace, labels)
    meta["labels"].update(kueue.object_labels(placement))  # a plain pod is its own Kueue workload
    if kueue.pod_annotations(placement, 1):
        meta["annotations"] = kueue.pod_annotations(placement, 1)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def pod_group(placement: Placement, *, name: str, size: int, **pod_args: Any) -> list[dict[str, Any]]:
    """``size`` Pods ``<name>-0`` ... that Kueue admits together as one pod group (a queued placement only).

    Each pod carries the pod-group label and total-count annotation besides the queue labels;
    the profile's topology default applies to the group as to any step of several pods.
    """
    if placement.kueue is None:
        raise RenderError(f"pod group {name!r}: Kueue admits a pod group through a LocalQueue, and this placement "
                          f"on cluster {placement.cluster!r} has none. Fix: Compute(..., queue='<LocalQueue>').")
    if not (isinstance(size, int) and not isinstance(size, bool) and size >= 1):
        raise ArgumentError(invalid("size", size, "a whole number of pods >= 1", where=f"pod group {name!r}"))
    labels, annotations = kueue.group_metadata(name, size)
    annotations.update(kueue.pod_annotations(placement, size))
    pods = []
    for i in range(size):
        pod_ = pod(placement, name=f"{name}-{i}", **{**pod_args, "labels": {**pod_args.get("labels", {}), **labels}})
        pod_["metadata"]["annotations"] = dict(annotations)
        pods.append(pod_)
    return pods


def job(
    placement: Placement,
    *,
    name: str,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    ttl_seconds_after_finished: int | None = 86400,
    shards: int = 1,
    **container_args: Any,
) -> dict[str, Any]:
    """A batch/v1 Job: ``retries`` -> backoffLimit, ``timeout`` -> activeDeadlineSeconds. ``shards`` > 1: an
    Indexed Job of that many pods (each reads JOB_COMPLETION_INDEX), all at once, ``retries`` (at least 1) per
    index, so a failed or evicted pod reruns alone (a shard's part is idempotent)."""
    refuse_unsupported(placement, "a Kubernetes Job", ("multi_host",), step=name)
    check_ttl("Job", name, ttl_seconds_after_finished)
    meta = object_metadata(placement, name, namespace, labels)
    job_spec: dict[str, Any] = {
        "backoffLimit": placement.retries,
        "template": pod_template(placement, meta["labels"], pod_spec(placement, claims_of=name, **container_args), 1),
    }
    if shards > 1:
        del job_spec["backoffLimit"]  # counted per index instead
        job_spec = {"completionMode": "Indexed", "completions": shards, "parallelism": shards,
                    "backoffLimitPerIndex": max(placement.retries, 1), **job_spec}
    if placement.timeout is not None:
        job_spec["activeDeadlineSeconds"] = placement.timeout
    if ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = ttl_seconds_after_finished
    return kueue.queued({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}, placement)
