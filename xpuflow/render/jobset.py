"""JobSet manifests (``jobset.x-k8s.io/v1alpha2``) for TPU slices on GKE, single- or multi-host.

    from xpuflow import Cluster, Compute
    from xpuflow.render import jobset
    p = Cluster.load("gke").place(Compute.tpu(version="v5e", topology="4x4", retries=2))
    manifest = jobset.jobset(p, name="train", image="ghcr.io/me/train@sha256:...",
                             command=["xpuflow", "step", "train"])

One replicated job (``slice``) runs one Indexed Job whose ``parallelism`` and
``completions`` are the slice's hosts: one pod per TPU VM, each requesting
``google.com/tpu`` = chips per host. The exclusive-topology annotation puts every
pod of the slice in one node pool, and ``network.enableDNSHostnames`` gives the
pods stable hostnames under a headless service; from those GKE injects
``TPU_WORKER_ID`` and ``TPU_WORKER_HOSTNAMES``. A slice fails and restarts as a
whole: the Job's ``backoffLimit`` is 0 and ``retries`` become the JobSet's
``failurePolicy.maxRestarts``. The pod spec is :func:`xpuflow.render.kubernetes.pod_spec`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import RenderError
from ..placement import Placement
from . import kueue
from .kubernetes import check_pod_hostnames, check_ttl, object_metadata, pod_spec, pod_template

__all__ = ["jobset", "API_VERSION", "REPLICATED_JOB", "EXCLUSIVE_TOPOLOGY"]

API_VERSION = "jobset.x-k8s.io/v1alpha2"
REPLICATED_JOB = "slice"
EXCLUSIVE_TOPOLOGY = "alpha.jobset.sigs.k8s.io/exclusive-topology"
_NODE_POOL_KEY = "cloud.google.com/gke-nodepool"


def jobset(
    placement: Placement,
    *,
    name: str,
    image: str,
    command: Sequence[str] | None = None,
    args: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    secret_env: Mapping[str, tuple[str, str]] | None = None,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    ttl_seconds_after_finished: int | None = 86400,
) -> dict[str, Any]:
    """A JobSet running ``placement`` (a TPU slice) as one pod per host; see the module docstring."""
    if placement.kind != "tpu":
        raise RenderError(
            f"step {name!r}: a JobSet here renders TPU slices only, not a {placement.kind} placement "
            f"({placement.hardware} on cluster {placement.cluster!r}). Fix: render it with "
            "xpuflow.render.kubernetes.job(), or use xpuflow.render.trainjob for distributed GPU training."
        )
    check_pod_hostnames("JobSet", name, REPLICATED_JOB, placement.hosts)
    check_ttl("JobSet", name, ttl_seconds_after_finished)
    meta = object_metadata(placement, name, namespace, labels)
    meta["annotations"] = {EXCLUSIVE_TOPOLOGY: _NODE_POOL_KEY}
    job_spec: dict[str, Any] = {
        "parallelism": placement.hosts,
        "completions": placement.hosts,
        "completionMode": "Indexed",
        "backoffLimit": 0,  # one failed host fails the slice; the JobSet restarts all of it
        "template": pod_template(
            placement, meta["labels"],
            pod_spec(placement, claims_of=name, image=image, command=command, args=args, env=env,
                     secret_env=secret_env), placement.hosts,
        ),
    }
    if placement.timeout is not None:
        job_spec["activeDeadlineSeconds"] = placement.timeout
    spec: dict[str, Any] = {
        "failurePolicy": {"maxRestarts": placement.retries},
        "network": {"enableDNSHostnames": True},
        "replicatedJobs": [{"name": REPLICATED_JOB, "replicas": 1, "template": {"spec": job_spec}}],
    }
    if ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = ttl_seconds_after_finished
    return kueue.queued({"apiVersion": API_VERSION, "kind": "JobSet", "metadata": meta, "spec": spec}, placement)
