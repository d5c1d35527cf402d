"""Read a compiled KFP pipeline (IR YAML), xpuflow's or anyone's, into one ``TaskPod`` per task.

Resources come from ``deploymentSpec.executors.*.container.resources`` (the
``resource*`` strings of kfp >= 2.11, else the older float fields); node selector,
tolerations and node affinity from the Kubernetes platform spec
(``platforms.kubernetes.deploymentSpec.executors``), the second YAML document.
A value given by a pipeline parameter is read as the parameter's default and noted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

from ..errors import PipelineFileError
from .pod import TaskPod

__all__ = ["read_ir"]

_PLACEHOLDER = re.compile(r"^\{\{\$\.inputs\.parameters\['(?:pipelinechannel--)?(?P<name>[^']+)'\]\}\}$")
MAX_BYTES = 64 << 20  # compiled pipelines embed their components' code; the largest samples are a few MB
_FIX = "Fix: pass the YAML that kfp.compiler.Compiler().compile(pipeline, 'pipeline.yaml') writes."


def read_ir(path: str | os.PathLike[str]) -> tuple[str, list[TaskPod]]:
    """``(pipeline name, task pods)`` of the compiled pipeline at ``path``."""
    where = os.fspath(path)
    spec, platform = _documents(where)
    defaults = {name: p.get("defaultValue") for name, p in
                (spec["root"].get("inputDefinitions") or {}).get("parameters", {}).items()}
    executors = spec["deploymentSpec"].get("executors") or {}
    platform_executors = (((platform or {}).get("platforms") or {}).get("kubernetes") or {}).get(
        "deploymentSpec", {}).get("executors") or {}
    name = (spec.get("pipelineInfo") or {}).get("name", os.path.basename(where))
    pods = []
    for task, label in _tasks(spec, name):
        container = (executors.get(label) or {}).get("container")
        if container is None:  # importer / resolver: no pod of its own
            continue
        pods.append(_pod(task, container.get("resources") or {}, platform_executors.get(label) or {}, defaults))
    return name, pods


def _documents(where: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    import yaml  # lazily: keeps `import xpuflow` cheap

    from ..safe_yaml import read_text

    text = read_text(where, what="pipeline file", error=PipelineFileError, limit=MAX_BYTES,
                     fix="pass the compiled pipeline YAML; the largest real ones are a few MB")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        docs = [d for d in yaml.load_all(text, Loader=loader) if d is not None]  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise PipelineFileError(f"pipeline file {where!r}: not valid YAML/JSON{at}. {_FIX}") from e
    first = docs[0] if docs and isinstance(docs[0], dict) else {}
    if "pipelineSpec" in first:  # a PipelineJob (JSON): the spec and its platform spec are inside
        return _checked(where, first["pipelineSpec"]), first.get("platformSpec")
    platform = next((d for d in docs[1:] if isinstance(d, dict) and "platforms" in d), None)
    return _checked(where, first), platform


def _checked(where: str, spec: Any) -> dict[str, Any]:
    if isinstance(spec, dict) and spec.get("kind") == "Workflow":
        raise PipelineFileError(f"pipeline file {where!r}: an Argo Workflow (what the KFP backend runs), not the "
                                f"compiled pipeline. {_FIX}")
    missing = [k for k in ("root", "deploymentSpec", "components") if not isinstance(spec, dict) or k not in spec]
    if missing:
        raise PipelineFileError(f"pipeline file {where!r}: not a compiled KFP pipeline (no {', '.join(missing)}). {_FIX}")
    return spec


def _tasks(spec: dict[str, Any], name: str) -> Iterator[tuple[str, str]]:
    """``(task path, executor label)`` for every container task, inside loops and sub-pipelines too."""
    root = spec["root"]
    if "executorLabel" in root:  # a compiled single component
        yield name, root["executorLabel"]
        return
    yield from _walk(spec["components"], root.get("dag") or {}, "")


def _walk(components: dict[str, Any], dag: dict[str, Any], prefix: str) -> Iterator[tuple[str, str]]:
    for key, task in (dag.get("tasks") or {}).items():
        component = components.get((task.get("componentRef") or {}).get("name"), {})
        shown = prefix + (task.get("taskInfo") or {}).get("name", key)
        if "dag" in component:
            yield from _walk(components, component["dag"], shown + "/")
        elif "executorLabel" in component:
            yield shown, component["executorLabel"]


def _pod(task: str, res: dict[str, Any], platform: dict[str, Any], defaults: dict[str, Any]) -> TaskPod:
    unknown: list[str] = []

    def value(field: str, text: Any) -> str | None:
        """A resource string; a parameter placeholder is read as the parameter's default."""
        if not isinstance(text, str):
            return None
        m = _PLACEHOLDER.match(text)
        if not m:
            return text
        default = defaults.get(m["name"])
        if default is None:
            unknown.append(f"{field} comes from pipeline parameter {m['name']!r} (no default): not checked")
            return None
        used = _number(default) if isinstance(default, float) else str(default)
        unknown.append(f"{field} comes from pipeline parameter {m['name']!r}: checked with its default {used!r}")
        return used

    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    for kind, out in (("Request", requests), ("Limit", limits)):
        cpu = value(f"cpu {kind.lower()}", res.get(f"resourceCpu{kind}"))
        if cpu is None and isinstance(res.get(f"cpu{kind}"), (int, float)):
            cpu = _number(res[f"cpu{kind}"])
        memory = value(f"memory {kind.lower()}", res.get(f"resourceMemory{kind}"))
        if memory is None and isinstance(res.get(f"memory{kind}"), (int, float)):
            memory = str(round(res[f"memory{kind}"] * 1e9))  # the old field is in (decimal) GB
        out.update({k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None})
    acc = res.get("accelerator") or {}
    resource = value("accelerator type", acc.get("resourceType")) or acc.get("type")
    count = value("accelerator count", acc.get("resourceCount")) or (str(acc["count"]) if "count" in acc else "1")
    if resource:
        limits[resource] = count

    selector = dict((platform.get("nodeSelector") or {}).get("labels") or {})
    from_json = _json_input("node selector", (platform.get("nodeSelector") or {}).get("nodeSelectorJson"), defaults, unknown)
    if isinstance(from_json, dict):
        selector.update({k: str(v) for k, v in from_json.items()})
    tolerations: list[dict[str, Any]] = []
    for t in platform.get("tolerations") or []:
        if "tolerationJson" in t:
            given = _json_input("toleration", t["tolerationJson"], defaults, unknown)
            tolerations += [given] if isinstance(given, dict) else [x for x in given or [] if isinstance(x, dict)]
        else:
            tolerations.append(t)
    terms, preferred = [], []
    for term in platform.get("nodeAffinity") or []:
        if "nodeAffinityJson" in term:
            unknown.append("a node affinity term comes from a pipeline parameter: not checked")
        elif "weight" not in term:  # weighted terms are preferences, not requirements
            terms.append(tuple(term.get("matchExpressions") or ()))
        else:
            preferred.append((int(term["weight"]), tuple(term.get("matchExpressions") or ())))
    return TaskPod(task=task, requests=requests, limits=limits, node_selector=selector,
                   tolerations=tuple(tolerations), required_terms=tuple(terms), preferred_terms=tuple(preferred),
                   unknown=tuple(unknown))


def _json_input(what: str, spec: Any, defaults: dict[str, Any], unknown: list[str]) -> Any:
    if not isinstance(spec, dict):
        return None
    if "runtimeValue" in spec:
        return (spec["runtimeValue"] or {}).get("constant")
    name = str(spec.get("componentInputParameter", "?")).removeprefix("pipelinechannel--")
    default = defaults.get(name)
    state = "not checked" if default is None else "checked with its default"
    unknown.append(f"{what} comes from pipeline parameter {name!r}: {state}")
    return default


def _number(value: float) -> str:
    """Cores or bytes as a Kubernetes quantity: ``2``, ``500m``, ``17179869184``."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"
