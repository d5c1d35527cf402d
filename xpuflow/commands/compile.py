"""``xpuflow compile``: a flow for KFP (IR YAML), Airflow (a DAG file) or plain Kubernetes (manifests)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

from ..cluster import Cluster
from ..dsl.command import arguments, command, output_url
from ..dsl.flow import Flow, OutputRef, Task
from ..errors import ComputeError
from ..render import jobset, kubernetes
from ..steps.io import atomic_path
from .pipelines import kfp_pipeline, resolve_flow

__all__ = ["compile_pipeline", "BACKENDS", "manifests"]

BACKENDS = ("kfp", "airflow", "k8s")


def compile_pipeline(name: str, backend: str, cluster_name: str, output: str, artifact_root: str = "") -> Path:
    if backend not in BACKENDS:
        raise ComputeError(f"backend={backend!r} is not valid: one of {', '.join(BACKENDS)}.")
    out = Path(output)
    if backend == "kfp":
        from kfp import compiler

        pipeline = kfp_pipeline(name, cluster_name)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            yaml_path = Path(str(tmp) + ".yaml")
            compiler.Compiler().compile(pipeline, str(yaml_path))
            os.replace(yaml_path, tmp)
        return out
    flow = resolve_flow(name)
    if backend == "airflow":
        from ..airflow import write_dag_file

        write_dag_file(flow, cluster_name, out)
        return out
    return manifests(flow, Cluster.load(cluster_name), out, artifact_root or f"s3://xpuflow-artifacts/{flow.name}/run-1")


def manifests(flow: Flow, cluster: Cluster, out: Path, root: str) -> Path:
    """One Job per task (a JobSet for a multi-host TPU slice), in run order; wiring through ``root``."""
    import yaml

    placements = {t.name: cluster.place(t.compute) for t in flow.tasks}  # type: ignore[arg-type]
    docs = []
    for i, t in enumerate(flow.tasks):
        placement = placements[t.name]
        common = dict(name=f"{flow.name.replace('_', '-')}-{i}-{t.name.replace('_', '-')}",
                      image=t.step.image_ref(t.compute), command=command(t.step), args=arguments(t, root),
                      labels={"xpuflow.io/flow": flow.name.replace("_", "-"), "xpuflow.io/order": str(i)},
                      secret_env=dict(t.secret_env))
        render = jobset.jobset if placement.hosts > 1 else kubernetes.job
        docs += kubernetes.resource_claim_templates(placement, name=common["name"], labels=common["labels"])
        docs.append(_after_upstreams(render(placement, **common), t, root))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(f"# {flow.name} on {cluster.name}: apply at once (each Job's init container waits for its "
                       f"upstreams' outputs) or in order (xpuflow.io/order); artifacts under {root}\n"
                       + yaml.safe_dump_all(docs, sort_keys=False))
    return out


def _pod_specs(manifest: dict) -> list[dict]:  # type: ignore[type-arg]
    if manifest["kind"] == "Job":
        return [manifest["spec"]["template"]["spec"]]
    return [r["template"]["spec"]["template"]["spec"] for r in manifest["spec"]["replicatedJobs"]]  # a JobSet


def _after_upstreams(manifest: dict, task: Task, root: str) -> dict:  # type: ignore[type-arg]
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
