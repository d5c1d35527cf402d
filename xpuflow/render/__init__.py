"""Renderers: one module per target, each a pure function of a ``Placement``.

- :mod:`xpuflow.render.kubernetes` - Pod and batch/v1 Job manifests (plain dicts)
- :mod:`xpuflow.render.kfp`        - applies a Placement to a kfp ``PipelineTask``
- :mod:`xpuflow.render.airflow`    - keyword arguments for ``KubernetesPodOperator``

Each backend declares what it cannot express; :func:`refuse_unsupported`
raises before anything is rendered, so no setting is ever dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..compute import Security
from ..errors import RenderError
from ..placement import DEFAULT_GRACE_PERIOD, Placement

__all__ = ["refuse_unsupported", "SETTINGS"]

_DEFAULT_SECURITY = Security()

# setting -> (is it set on this placement?, how to describe it)
SETTINGS = {
    "multi_host": lambda p: p.hosts > 1,
    "retries": lambda p: p.retries > 0,
    "priority_class": lambda p: p.priority_class is not None,
    # pods get Kubernetes' default of 30 s when nothing is set, so 30 needs no expressing
    "grace_period": lambda p: p.grace_period not in (None, DEFAULT_GRACE_PERIOD),
    "ephemeral_storage": lambda p: p.ephemeral_storage is not None,
    "read_only_root_filesystem": lambda p: p.compute.security.read_only_root_filesystem,
    "container_security_beyond_identity": lambda p: _beyond_identity(p.compute.security),
    "trainjob_retries": lambda p: p.retries > 0,
    "pipeline_parameters": lambda p: bool(getattr(p.compute, "params", ())),
    "claims": lambda p: bool(p.claims),
    "trainjob_claims": lambda p: bool(p.claims),
}

_HINTS = {
    "multi_host": "a multi-host TPU slice runs one pod per host as a JobSet, which this backend does not "
    "render; render it with xpuflow.render.jobset.jobset(), or pick a single-host topology "
    "(v5e/v6e: 1x1, 2x2, 2x4; v4/v5p: 2x2x1)",
    "retries": "a bare Pod cannot retry; render a Job (xpuflow.render.kubernetes.job) or set retries=0",
    "priority_class": "drop priority_class, or set a default PriorityClass for the namespace",
    "grace_period": "drop grace_period here and set terminationGracePeriodSeconds through the backend's pod defaults",
    "ephemeral_storage": "drop ephemeral_storage, or set a LimitRange default in the namespace",
    "read_only_root_filesystem": "use Security(read_only_root_filesystem=False) for this backend",
    "container_security_beyond_identity": "this backend enforces the restricted defaults itself; keep "
    "allow_privilege_escalation=False, drop_capabilities=('ALL',), seccomp_profile='RuntimeDefault'",
    "pipeline_parameters": "only Kubeflow Pipelines resolves pipeline parameters at run time; pass literal values "
    "(e.g. Compute.gpu(count=2)) for this backend",
    "trainjob_retries": "a TrainJob has no retry count; restarts belong to the training runtime's JobSet "
    "failurePolicy.maxRestarts: set retries=0 here and set maxRestarts in the runtime",
    "claims": "kfp-kubernetes (2.17) has no DRA support: no pod resourceClaims and no container resources.claims; "
    "drop claim=True for this backend (the device plugin's extended resource is requested instead), or compile "
    "for k8s or airflow, which render ResourceClaimTemplates",
    "trainjob_claims": "the TrainJob API (trainer.kubeflow.org/v1alpha1) has no pod resourceClaims in "
    "runtimePatches; declare the claim in the ClusterTrainingRuntime's pod template, or drop claim=True",
}


def _beyond_identity(s: Security) -> bool:
    return (
        s.allow_privilege_escalation != _DEFAULT_SECURITY.allow_privilege_escalation
        or s.drop_capabilities != _DEFAULT_SECURITY.drop_capabilities
        or s.seccomp_profile != _DEFAULT_SECURITY.seccomp_profile
    )


def refuse_unsupported(placement: Placement, backend: str, cannot: Iterable[str], *, step: str = "",
                       parameters: bool = False) -> None:
    """Raise ``RenderError`` if ``placement`` uses a setting ``backend`` cannot express.

    Values from pipeline parameters (``Compute.params``) are refused unless ``parameters`` (KFP only)."""
    cannot = [*cannot, *(() if parameters else ("pipeline_parameters",))]
    used = [name for name in cannot if SETTINGS[name](placement)]
    if not used:
        return
    who = f"step {step!r}: " if step else ""
    lines = "; ".join(f"{name} ({_HINTS[name]})" for name in used)
    raise RenderError(
        f"{who}{backend} cannot express {', '.join(used)} of this placement on cluster {placement.cluster!r} "
        f"(pool {placement.pool!r}); refusing rather than dropping it. Fix: {lines}."
    )
