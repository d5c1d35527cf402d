"""Kubeflow Trainer ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``) for multi-node PyTorch on GPU or CPU nodes.

    from xpuflow import Cluster, Compute
    from xpuflow.render import trainjob
    p = Cluster.load("gke").place(Compute.gpu(model="h100-80gb", count=8, timeout=86400))
    manifest = trainjob.trainjob(p, name="train", image="ghcr.io/me/train@sha256:...", num_nodes=4,
                                 command=["torchrun", "train.py"])

The TrainJob refers to the ClusterTrainingRuntime ``torch-distributed``, whose JobSet
runs the trainer as replicated job ``node`` with container ``node``. ``spec.trainer``
carries image, command, args, env (the placement's plus the caller's), ``numNodes``,
``resourcesPerNode`` (the placement's requests and limits, GPUs in limits) and
``numProcPerNode`` (accelerators per node). ``timeout`` is ``spec.activeDeadlineSeconds``.
Everything else the pods need (node selector, tolerations, affinity, pod and
container security contexts, the ``/dev/shm`` volume and mount, grace period, pod
labels) goes in one ``spec.runtimePatches`` entry owned by manager
``xpuflow.io/placement``: the Trainer (v2.2+) API that replaced ``podTemplateOverrides``.

Refused before rendering: TPU slices (render them with :mod:`xpuflow.render.jobset`),
NPU placements, ``priority_class`` (the patch has no ``priorityClassName``) and
``retries`` (a TrainJob has no retry count; restarts belong to the runtime).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ArgumentError, RenderError, invalid
from ..placement import Placement
from ..podspec import dicts
from ..quantity import MAX_INT32
from . import kueue, refuse_unsupported
from .kubernetes import check_pod_hostnames, container_env, object_metadata

__all__ = ["trainjob", "API_VERSION", "RUNTIME", "REPLICATED_JOB", "CONTAINER", "MANAGER", "CANNOT"]

API_VERSION = "trainer.kubeflow.org/v1alpha1"
RUNTIME = "torch-distributed"
REPLICATED_JOB = "node"  # the runtime's replicated job and trainer container
CONTAINER = "node"
MANAGER = "xpuflow.io/placement"  # owner of the runtimePatches entry
CANNOT = ("priority_class", "trainjob_retries", "trainjob_claims")


def _check(name: str, num_nodes: object) -> int:
    where = f"step {name!r}"
    if isinstance(num_nodes, int) and num_nodes > MAX_INT32:
        raise ArgumentError(invalid("num_nodes", num_nodes, f"at most {MAX_INT32} nodes (numNodes is an int32)",
                                   where=where, fix="pass the number of nodes to train across"))
    if not (isinstance(num_nodes, int) and not isinstance(num_nodes, bool) and num_nodes >= 1):
        raise ArgumentError(
            invalid("num_nodes", num_nodes, "a whole number of nodes >= 1", where=where,
                    fix="pass num_nodes=1 for one node, or the number of nodes to train across")
        )
    # TrainJob's CEL rule: an RFC 1035 label <= 63; JobSet then names the last pod's host <name>-node-0-<n-1>
    check_pod_hostnames("TrainJob", name, REPLICATED_JOB, num_nodes)
    return num_nodes


def _refuse_kind(placement: Placement, name: str, runtime: str) -> None:
    if placement.kind in ("gpu", "cpu"):
        return
    fix = {
        "tpu": "render the TPU slice as a JobSet with xpuflow.render.jobset.jobset() (one pod per TPU host)",
    }.get(placement.kind, "render the step as a Job with xpuflow.render.kubernetes.job()")
    raise RenderError(
        f"step {name!r}: a Kubeflow TrainJob on runtime {runtime!r} runs PyTorch on GPU or CPU nodes, not "
        f"{placement.hardware} ({placement.kind}) on cluster {placement.cluster!r} (pool {placement.pool!r}). "
        f"Fix: {fix}."
    )


def _pod_patch(placement: Placement, labels: Mapping[str, str], num_nodes: int) -> dict[str, Any]:
    """The PodTemplate patch for the ``node`` pods; empty selector/toleration lists are left to the runtime."""
    container: dict[str, Any] = {
        "name": CONTAINER,
        "securityContext": placement.container_security_context.to_dict(),
    }
    if placement.volume_mounts:
        container["volumeMounts"] = dicts(placement.volume_mounts)
    spec: dict[str, Any] = {k: v for k, v in placement.scheduling().items() if v}
    spec["securityContext"] = placement.pod_security_context.to_dict()
    spec["containers"] = [container]
    if placement.volumes:
        spec["volumes"] = dicts(placement.volumes)
    if placement.grace_period is not None:
        spec["terminationGracePeriodSeconds"] = placement.grace_period
    meta: dict[str, Any] = {"labels": dict(labels)}
    annotations = kueue.pod_annotations(placement, num_nodes)  # Kueue TAS: the nodes of one training run together
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": spec}


def trainjob(
    placement: Placement,
    *,
    name: str,
    image: str,
    num_nodes: int,
    command: Sequence[str] | None = None,
    args: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    runtime: str = RUNTIME,
) -> dict[str, Any]:
    """A TrainJob running ``placement`` on ``num_nodes`` nodes; see the module docstring."""
    num_nodes = _check(name, num_nodes)
    _refuse_kind(placement, name, runtime)
    refuse_unsupported(placement, "a Kubeflow TrainJob", CANNOT, step=name)
    meta = object_metadata(placement, name, namespace, labels)
    trainer: dict[str, Any] = {"image": image}
    if command:
        trainer["command"] = list(command)
    if args:
        trainer["args"] = list(args)
    trainer["env"] = container_env(placement, env)
    trainer["numNodes"] = num_nodes
    trainer["resourcesPerNode"] = placement.resources()
    if placement.accelerator is not None:
        trainer["numProcPerNode"] = placement.accelerator[1]  # one process per GPU
    replicated_job = {"name": REPLICATED_JOB, "template": {"spec": {"template": _pod_patch(placement, meta["labels"], num_nodes)}}}
    spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime", "name": runtime},
        "trainer": trainer,
        "runtimePatches": [
            {"manager": MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [replicated_job]}}}}
        ],
    }
    if placement.timeout is not None:
        spec["activeDeadlineSeconds"] = placement.timeout
    return kueue.queued({"apiVersion": API_VERSION, "kind": "TrainJob", "metadata": meta, "spec": spec}, placement)
