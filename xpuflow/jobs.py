"""Kubernetes Jobs from steps and flows (plain dicts): what ``xpuflow compile --backend k8s`` writes.

    from xpuflow.jobs import job
    manifests = job(my_steps.fit, "gke", artifact_root="s3://bucket/run-1", table="s3://bucket/run-1/clean")

Each task becomes a batch/v1 Job (a JobSet for a multi-host TPU slice), placed with its
Compute (the step's unless overridden), running ``xpuflow step ...`` as built by
:mod:`xpuflow.dsl.command`; a Job with upstreams waits for their finished outputs in an
init container, so a manifest set applied at once runs in order.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from typing import TYPE_CHECKING, Any

from .cluster import Cluster
from .dsl.command import arguments, command, output_url, pod_root
from .dsl.flow import Flow, OutputRef, Task
from .dsl.step import FlowError
from .render import jobset, kubernetes

if TYPE_CHECKING:
    from .compute import Compute
    from .dsl.step import Step

__all__ = ["job", "flow_manifests", "task_manifests"]


def job(step: Step | str, cluster: Cluster | str | os.PathLike[str], *, artifact_root: str, name: str | None = None,
        compute: Compute | None = None, **arguments_: Any) -> list[dict[str, Any]]:
    """One step as a Kubernetes Job (and the ResourceClaimTemplates its placement needs), with the step's
    Compute unless ``compute`` overrides it; ``arguments_``: its scalars and inputs (URLs); outputs under
    ``artifact_root/<name>``."""
    from .dsl.load import load_step

    step = load_step(step) if isinstance(step, str) else step
    the_compute = compute or step.compute
    if the_compute is None:
        raise FlowError(f"job {name or step.name!r}: step {step.ref} declares no compute. Fix: pass compute=Compute...")
    cl = cluster if isinstance(cluster, Cluster) else Cluster.load(cluster)
    step.check_alone(arguments_, f"job {name or step.name!r}")
    task = Task(name or step.name, step, dict(arguments_), compute=the_compute)
    root = pod_root(artifact_root, f"job {name or step.name!r}")
    return task_manifests(task, cl, root, name=_dns(name or step.name))


def task_manifests(task: Task, cluster: Cluster, root: str, *, name: str,
                   labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    placement = cluster.place(task.compute)  # type: ignore[arg-type]
    common = dict(name=name, image=task.step.image_ref(task.compute), command=command(task.step),
                  args=arguments(task, root), labels=labels or {}, secret_env=dict(task.secret_env))
    render = jobset.jobset if placement.hosts > 1 else kubernetes.job
    if task.shards > 1:  # an Indexed Job: each pod reads its index from JOB_COMPLETION_INDEX
        common.update(shards=task.shards, args=arguments(task, root, shard=str(task.shards)))
    docs = kubernetes.resource_claim_templates(placement, name=name, labels=common["labels"])
    return [*docs, _after_upstreams(render(placement, **common), task, root)]


def flow_manifests(flow: Flow, cluster: Cluster, root: str) -> list[dict[str, Any]]:
    """Every task of ``flow`` in run order; wiring through ``root``."""
    root = pod_root(root, f"flow {flow.name!r}")
    for t in flow.tasks:  # every task placed before any is rendered
        cluster.place(t.compute)  # type: ignore[arg-type]
    docs: list[dict[str, Any]] = []
    for i, t in enumerate(flow.tasks):
        docs += task_manifests(t, cluster, root, name=_dns(f"{flow.name}-{i}-{t.name}"),
                               labels={"xpuflow.io/flow": _dns(flow.name), "xpuflow.io/order": str(i)})
    return docs


def _dns(name: str, limit: int = 63) -> str:
    """A Kubernetes name (a DNS label: lowercase letters, digits and '-', at most 63) from a flow or task name,
    which may hold capitals, '_' or '.'; a longer one is cut and ends in a hash of the whole, so two stay apart."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "step"
    if len(text) > limit:
        text = f"{text[:limit - 9].rstrip('-')}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return text


def _pod_specs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    if manifest["kind"] == "Job":
        return [manifest["spec"]["template"]["spec"]]
    return [r["template"]["spec"]["template"]["spec"] for r in manifest["spec"]["replicatedJobs"]]  # a JobSet


def _after_upstreams(manifest: dict[str, Any], task: Task, root: str) -> dict[str, Any]:
    """An init container that waits for the upstream outputs ``task`` reads (their ``_COMPLETE`` markers), so a
    manifest set applied at once still runs in order; same image, env (object-store credentials) and restricted
    security context as the step's own container."""
    urls = list(dict.fromkeys(output_url(root, ref.task, ref.output, ref.only)
                              for ref in task.args.values() if isinstance(ref, OutputRef)))
    if not urls:
        return manifest
    for spec in _pod_specs(manifest):
        main = spec["containers"][0]
        wait = {"name": "wait-for-upstreams", "image": main["image"], "imagePullPolicy": main["imagePullPolicy"],
                "command": ["xpuflow", "wait", *urls],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                              "limits": {"cpu": "100m", "memory": "128Mi"}},
                "securityContext": copy.deepcopy(main["securityContext"])}
        if main.get("env"):
            wait["env"] = copy.deepcopy(main["env"])
        spec["initContainers"] = [wait]
    return manifest
