"""Apply a ``Placement`` to a kfp v2 ``PipelineTask`` (core setters + kfp-kubernetes).

    from xpuflow.render import kfp as render_kfp
    task = train_op(...)
    render_kfp.apply(task, cluster.place(Compute.gpu(model="l4", spot=True)))

Requests, limits and the accelerator land in the compiled IR's
``deploymentSpec``; node selector, tolerations, affinity, shared memory,
timeout and security identity in the ``kubernetes`` platform spec. What KFP
cannot express (priority class, grace period, ephemeral storage, a read-only
root filesystem, multi-host slices) is refused before anything is set.

Applying again replaces: what the previous ``apply`` set on the task is taken off
first (selector labels, tolerations, affinity terms, the ``/dev/shm`` mount, labels,
env, accelerator, timeout, retries), so the task carries exactly the new placement
plus whatever the user set on it themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import RenderError
from ..placement import Placement
from ..podspec import NodeAffinity, dicts
from . import kueue, refuse_unsupported

if TYPE_CHECKING:  # kfp is an optional extra; imported inside apply()
    from kfp.dsl import PipelineTask

__all__ = ["apply", "CANNOT"]

_APPLIED = "_xpuflow_placement"  # attribute on the task: the placement apply() last set

CANNOT = (
    "multi_host",
    "priority_class",
    "grace_period",
    "ephemeral_storage",
    "read_only_root_filesystem",
    "container_security_beyond_identity",
    "claims",
)


def apply(task: PipelineTask, placement: Placement, *, step: str = "") -> PipelineTask:
    """Set ``placement`` on ``task`` and return it (fluent, like kfp's own setters)."""
    refuse_unsupported(placement, "KFP", CANNOT, step=step or getattr(task, "name", ""), parameters=True)
    from kfp import kubernetes

    previous = getattr(task, _APPLIED, None)
    if previous is not None:
        _take_off(task, previous, placement)
    req, lim = placement.requests, placement.limits
    given = _parameters(placement)
    task.set_cpu_request(given("cpu", req["cpu"])).set_cpu_limit(given("cpu_limit", lim["cpu"]))
    task.set_memory_request(given("memory", req["memory"])).set_memory_limit(given("memory_limit", lim["memory"]))
    if placement.accelerator is not None:
        resource, count = placement.accelerator
        task.set_accelerator_type(resource).set_accelerator_limit(given("count", count))
    for key, value in placement.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for tol in placement.tolerations:
        kubernetes.add_toleration(task, key=tol.key, operator=tol.operator, value=tol.value, effect=tol.effect)
    for term in _affinity_terms(placement.affinity):  # required terms, then preferred ones with their weight
        kubernetes.add_node_affinity(task, match_expressions=[dict(e) for e in term["matchExpressions"]],
                                     weight=term.get("weight"))
    for name, value in placement.env.items():
        task.set_env_variable(name, value)
    for key, value in {**placement.labels, **kueue.object_labels(placement)}.items():
        kubernetes.add_pod_label(task, key, value)
    for key, value in kueue.pod_annotations(placement, 1).items():
        kubernetes.add_pod_annotation(task, key, value)
    volumes = {v.name: v for v in placement.volumes}
    for mount in placement.volume_mounts:
        volume = volumes[mount.name]
        kubernetes.empty_dir_mount(task, volume_name=mount.name, mount_path=mount.mount_path, medium=volume.medium,
                                   size_limit=volume.size_limit)
    ctx = placement.pod_security_context
    kubernetes.set_security_context(
        task, run_as_user=ctx.run_as_user, run_as_group=ctx.run_as_group, run_as_non_root=ctx.run_as_non_root
    )
    if placement.timeout is not None:
        kubernetes.set_timeout(task, placement.timeout)
    if placement.retries:
        task.set_retry(placement.retries)
    setattr(task, _APPLIED, placement)
    return task


def _parameters(placement: Placement) -> Any:
    """``given(field, literal)``: the pipeline parameter's channel when the Compute took one for ``field``."""
    params = dict(getattr(placement.compute, "params", ()))

    def given(field: str, literal: Any) -> Any:
        param = params.get(field)
        if param is None:
            return literal
        if param.channel is None:
            raise RenderError(f"{field}={param} has no KFP channel: pass the pipeline function's own parameter "
                              "(inside @dsl.pipeline) to the Compute constructor.")
        return param.channel

    return given


def _present(d: dict[str, Any]) -> dict[str, Any]:
    """A kfp-kubernetes entry without its empty fields (MessageToDict omits them)."""
    return {k: v for k, v in d.items() if v not in (None, "")}


def _without(items: list[Any], remove: list[Any]) -> list[Any]:
    """``items`` less one occurrence of each of ``remove``."""
    out = list(items)
    for item in remove:
        if item in out:
            out.remove(item)
    return out


def _take_off(task: PipelineTask, old: Placement, new: Placement) -> None:
    """Remove what ``apply(task, old)`` set, keeping everything else on the task."""
    config = task.platform_config.get("kubernetes") or {}
    labels = config.get("nodeSelector", {}).get("labels", {})
    for key, value in old.node_selector.items():
        if labels.get(key) == value:
            del labels[key]
    config["tolerations"] = _without(config.get("tolerations", []), [_present(t) for t in dicts(old.tolerations)])
    config["nodeAffinity"] = _without(config.get("nodeAffinity", []), _affinity_terms(old.affinity))
    old_volumes = {m.name for m in old.volume_mounts}
    config["emptyDirMounts"] = [m for m in config.get("emptyDirMounts", []) if m.get("volumeName") not in old_volumes]
    pod_meta = config.get("podMetadata", {})
    for part, old_items in (("labels", {**old.labels, **kueue.object_labels(old)}),
                            ("annotations", kueue.pod_annotations(old, 1))):
        items = pod_meta.get(part, {})
        for key, value in old_items.items():
            if items.get(key) == value:
                del items[key]
        if part == "annotations" and part in pod_meta and not items:
            del pod_meta[part]
    if old.timeout is not None and config.get("activeDeadlineSeconds") == str(old.timeout):
        del config["activeDeadlineSeconds"]
    for key in [k for k, v in config.items() if v in ({}, [], {"labels": {}})]:
        del config[key]
    env = task.container_spec.env or {}
    for name, value in old.env.items():
        if env.get(name) == value:
            del env[name]
    resources = task.container_spec.resources
    if old.accelerator is not None and new.accelerator is None and resources is not None:
        resources.accelerator_type = resources.accelerator_count = None
    policy = task._task_spec.retry_policy  # noqa: SLF001 - kfp keeps it there; no public getter
    if old.retries and policy is not None and policy.max_retry_count == old.retries:
        task._task_spec.retry_policy = None  # noqa: SLF001


def _affinity_terms(affinity: NodeAffinity | None) -> list[dict[str, Any]]:
    """Node affinity as kfp-kubernetes NodeAffinityTerms: each required term (the KFP driver ORs them, as
    Kubernetes does), then each preferred term with its ``weight``."""
    if affinity is None:
        return []
    return [{"matchExpressions": dicts(term)} for term in affinity.required] + [
        {"matchExpressions": dicts(t.expressions), "weight": t.weight} for t in affinity.preferred
    ]
