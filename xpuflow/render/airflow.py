"""Keyword arguments for Airflow's ``KubernetesPodOperator`` from a ``Placement``.

    from xpuflow.render import airflow as render_airflow
    KubernetesPodOperator(**render_airflow.operator_kwargs(
        placement, step="train", task_id="train", image=..., cmds=[...],
        tolerations=[my_toleration], labels={"team": "ml"}, env_vars={"MY_VAR": "1"}))

:func:`pod_kwargs` returns the placement's settings as plain data (no kubernetes
client import); :func:`operator_kwargs` merges your own operator arguments into them
(:func:`merge_kwargs`, precedence in docs/airflow.md) and converts the typed ones to
the client models the operator expects, at the edge. Multi-host slices are refused.

Precedence when both set the same argument: ``node_selector`` keys are united (one key
with two values is refused), ``tolerations`` appended, ``affinity`` combined (each of
your required node-affinity terms joined with each of the placement's, its preferred terms added),
``labels``/``annotations``/``env_vars`` united with yours winning on the same key,
``volumes``/``volume_mounts`` united by name (the same name or mount path defined twice
is refused); ``container_resources`` belongs to the Compute (a different value is
refused); for anything else your value wins. ``retries`` is passed only when the Compute
sets it, so a DAG's ``default_args`` apply otherwise.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from typing import Any

from ..errors import RenderError
from ..placement import Placement
from ..podspec import dicts
from . import dra, kueue, refuse_unsupported

__all__ = ["pod_kwargs", "operator_kwargs", "merge_kwargs", "CANNOT"]

CANNOT = ("multi_host",)
_SIDECAR_CONTEXT = "xcom_sidecar_container_security_context"

# KubernetesPodOperator argument -> kubernetes client model it is typed as.
_MODELS = {
    "container_resources": "V1ResourceRequirements",
    "affinity": "V1Affinity",
    "tolerations": "list[V1Toleration]",
    "volumes": "list[V1Volume]",
    "volume_mounts": "list[V1VolumeMount]",
    _SIDECAR_CONTEXT: "V1SecurityContext",
}


def pod_kwargs(placement: Placement, *, step: str = "") -> dict[str, Any]:
    """The operator's pod settings as plain dicts, keyed by KubernetesPodOperator argument names."""
    refuse_unsupported(placement, "KubernetesPodOperator", CANNOT, step=step)
    kwargs: dict[str, Any] = {
        "container_resources": placement.resources(),
        "node_selector": dict(placement.node_selector),
        "tolerations": dicts(placement.tolerations),
        "env_vars": dict(placement.env),
        "labels": {**placement.labels, **kueue.object_labels(placement)},
        "security_context": placement.pod_security_context.to_dict(),
        "container_security_context": placement.container_security_context.to_dict(),
        # with do_xcom_push=True the operator adds a sidecar container: it gets the same restricted context
        _SIDECAR_CONTEXT: placement.container_security_context.to_dict(),
        "automount_service_account_token": False,
    }
    if kueue.pod_annotations(placement, 1):
        kwargs["annotations"] = kueue.pod_annotations(placement, 1)
    if placement.claims:  # the operator has no argument for pod resourceClaims; its pod template carries them
        kwargs["pod_template_dict"] = _claims_template(placement, step)
    if placement.retries:  # otherwise the DAG's default_args decide
        kwargs["retries"] = placement.retries
    if placement.affinity:
        kwargs["affinity"] = placement.affinity.to_dict()
    if placement.volumes:
        kwargs["volumes"] = dicts(placement.volumes)
        kwargs["volume_mounts"] = dicts(placement.volume_mounts)
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
        raise RenderError(f"placement on cluster {placement.cluster!r} claims devices through DRA: pass step=<task id> "
                          "so the pod refers to that step's ResourceClaimTemplates (render.kubernetes."
                          "resource_claim_templates(placement, name=<task id>)).")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {},
            "spec": {"containers": [{"name": "base"}], "resourceClaims": dra.pod_claims(placement, name=step)}}


def operator_kwargs(placement: Placement, *, step: str = "", **user_kwargs: Any) -> dict[str, Any]:
    """:func:`pod_kwargs` merged with ``user_kwargs`` (any KubernetesPodOperator arguments, client models or
    dicts), typed arguments converted to ``kubernetes.client`` models: splat the result into the operator."""
    from kubernetes.client import ApiClient

    client = ApiClient()
    ours = pod_kwargs(placement, step=step)
    if not _operator_accepts(_SIDECAR_CONTEXT):  # providers before 10.6 cannot set it
        del ours[_SIDECAR_CONTEXT]
        if user_kwargs.get("do_xcom_push"):
            raise RenderError(f"{_who(step)}do_xcom_push=True adds an XCom sidecar, and this cncf-kubernetes provider "
                              f"cannot give it a restricted security context ({_SIDECAR_CONTEXT}). Fix: upgrade "
                              "apache-airflow-providers-cncf-kubernetes, or set do_xcom_push=False.")
    theirs = {k: client.sanitize_for_serialization(v) if k in _MERGERS or k in _MODELS else v
              for k, v in user_kwargs.items()}
    kwargs = merge_kwargs(ours, theirs, step=step)
    for arg, model in _MODELS.items():
        if kwargs.get(arg) is not None:
            kwargs[arg] = client.deserialize(_Response(kwargs[arg]), model)
    if isinstance(kwargs.get("env_vars"), list):
        kwargs["env_vars"] = client.deserialize(_Response(kwargs["env_vars"]), "list[V1EnvVar]")
    return kwargs


def merge_kwargs(ours: dict[str, Any], theirs: dict[str, Any], *, step: str = "") -> dict[str, Any]:
    """``ours`` (from :func:`pod_kwargs`) with a user's own arguments ``theirs`` (plain, camelCase dicts) merged in."""
    out = dict(ours)
    for key, value in theirs.items():
        if key not in ours or value == ours[key] or value is None:
            out[key] = ours.get(key) if value is None else value
        elif key == "container_resources":
            raise RenderError(f"{_who(step)}container_resources={value!r} would replace the Compute's "
                              f"{ours[key]!r}. Fix: size the task in its Compute (cpu=, memory=, Compute.gpu(...)) "
                              "and drop container_resources.")
        elif key in _MERGERS:
            out[key] = _MERGERS[key](ours[key], value, _who(step))
        else:
            out[key] = value  # yours wins
    return out


def _who(step: str) -> str:
    return f"step {step!r}: " if step else ""


def _node_selector(ours: dict[str, str], theirs: dict[str, str], who: str) -> dict[str, str]:
    for key, value in theirs.items():
        if key in ours and ours[key] != value:
            raise RenderError(f"{who}node_selector[{key!r}]={value!r} contradicts the placement's {key}={ours[key]!r}: "
                              "the pod would land elsewhere or nowhere. Fix: drop that key from your node_selector, "
                              "or change the Compute.")
    return {**ours, **theirs}


def _appended(ours: list[Any], theirs: list[Any], who: str) -> list[Any]:
    return list(ours) + [t for t in theirs if t not in ours]


def _united(ours: dict[str, Any], theirs: dict[str, Any], who: str) -> dict[str, Any]:
    return {**ours, **theirs}


def _env(ours: dict[str, str], theirs: dict[str, Any] | list[dict[str, Any]], who: str) -> Any:
    if isinstance(theirs, dict):
        return {**ours, **theirs}
    named = {e["name"]: e for e in theirs}
    return [named.pop(name, {"name": name, "value": value}) for name, value in ours.items()] + list(named.values())


def _named(what: str, keys: tuple[str, ...]) -> Callable[[list[Any], list[Any], str], list[Any]]:
    def merge(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], who: str) -> list[dict[str, Any]]:
        out = list(ours)
        for item in theirs:
            if item in out:
                continue
            for key in keys:
                clash = next((o for o in ours if o.get(key) == item.get(key)), None)
                if clash is not None:
                    raise RenderError(f"{who}{what} {key} {item.get(key)!r} is defined by the placement ({clash}) and "
                                      f"by your kwargs ({item}). Fix: rename yours, or drop the placement's (for "
                                      "/dev/shm: Compute(..., shm=None)).")
            out.append(item)
        return out

    return merge


def _affinity(ours: dict[str, Any], theirs: dict[str, Any], who: str) -> dict[str, Any]:
    """Your affinity AND the placement's node affinity: Kubernetes ORs required terms, so each of your required
    terms is joined with each of the placement's; the placement's preferred terms (spot, candidates) follow yours."""
    out = copy.deepcopy(theirs)
    required = "requiredDuringSchedulingIgnoredDuringExecution"
    preferred = "preferredDuringSchedulingIgnoredDuringExecution"
    ours_node = ours.get("nodeAffinity") or {}
    ours_terms = (ours_node.get(required) or {}).get("nodeSelectorTerms") or []
    ours_preferred = ours_node.get(preferred) or []
    if not (ours_terms or ours_preferred):
        return out
    node = out.setdefault("nodeAffinity", {})
    if ours_terms:
        mine = (node.get(required) or {}).get("nodeSelectorTerms") or [{}]
        node[required] = {"nodeSelectorTerms": [_joined(term, placed) for term in mine for placed in ours_terms]}
    if ours_preferred:
        kept = list(node.get(preferred) or [])
        node[preferred] = kept + [copy.deepcopy(t) for t in ours_preferred if t not in kept]
    return out


def _joined(mine: dict[str, Any], placement: dict[str, Any]) -> dict[str, Any]:
    """One node selector term requiring both terms' expressions and fields."""
    term = copy.deepcopy(mine)
    for key in ("matchExpressions", "matchFields"):
        if placement.get(key):
            term[key] = list(term.get(key) or []) + copy.deepcopy(placement[key])
    return term


def _pod_template(ours: dict[str, Any], theirs: dict[str, Any], who: str) -> dict[str, Any]:
    """Your pod template with the placement's DRA ``resourceClaims`` added to its spec (one name defined twice is refused)."""
    out = copy.deepcopy(theirs)
    spec = out.setdefault("spec", {})
    spec.setdefault("containers", [{"name": "base"}])
    claims = spec.setdefault("resourceClaims", [])
    for claim in ours["spec"]["resourceClaims"]:
        if claim in claims:
            continue
        if any(c.get("name") == claim["name"] for c in claims):
            raise RenderError(f"{who}pod_template_dict resourceClaims {claim['name']!r} is also the placement's DRA "
                              f"claim ({claim}). Fix: rename yours, or drop claim=True from the Compute.")
        claims.append(claim)
    return out


_MERGERS: dict[str, Callable[[Any, Any, str], Any]] = {
    "node_selector": _node_selector,
    "tolerations": _appended,
    "affinity": _affinity,
    "labels": _united,
    "annotations": _united,
    "env_vars": _env,
    "volumes": _named("volume", ("name",)),
    "volume_mounts": _named("volume mount", ("name", "mountPath")),
    "pod_template_dict": _pod_template,
}


@functools.cache
def _operator_accepts(argument: str) -> bool:
    import inspect

    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    return argument in inspect.signature(KubernetesPodOperator.__init__).parameters


class _Response:
    """The minimal object ``ApiClient.deserialize`` reads (a JSON body in ``.data``)."""

    def __init__(self, payload: Any) -> None:
        self.data = json.dumps(payload)
