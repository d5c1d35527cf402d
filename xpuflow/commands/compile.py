"""``xpuflow compile``: a pipeline for KFP (IR YAML), Airflow (a DAG file) or plain Kubernetes (manifests)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..cluster import Cluster
from ..errors import ComputeError
from ..images import image_for
from ..render import jobset, kubernetes
from ..steps.io import atomic_path
from .pipelines import kfp_pipeline, resolve_flow

__all__ = ["compile_pipeline", "BACKENDS", "step_arguments"]

BACKENDS = ("kfp", "airflow", "k8s")


def step_arguments(spec: Any, artifact_root: str) -> list[str]:
    """``xpuflow step`` options for one step: its params, upstream outputs and its own output under the root."""
    args: list[str] = []
    for key, value in spec.params.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    for key, upstream in spec.inputs.items():
        args += [f"--{key.replace('_', '-')}", f"{artifact_root}/{upstream}"]
    return args + ["--output", f"{artifact_root}/{spec.name}"]


def compile_pipeline(name: str, backend: str, cluster_name: str, output: str, artifact_root: str = "") -> Path:
    if backend not in BACKENDS:
        raise ComputeError(f"backend={backend!r} is not valid: one of {', '.join(BACKENDS)}.")
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if backend == "kfp":
        from kfp import compiler

        with atomic_path(out) as tmp:
            yaml_path = Path(str(tmp) + ".yaml")
            compiler.Compiler().compile(kfp_pipeline(name, cluster_name), str(yaml_path))
            os.replace(yaml_path, tmp)
        return out
    if backend == "airflow":
        from ..airflow import write_dag_file

        write_dag_file(resolve_flow(name).name, cluster_name, out)
        return out
    return _manifests(name, cluster_name, out, artifact_root or f"s3://xpuflow-artifacts/{resolve_flow(name).name}/run-1")


def _manifests(name: str, cluster_name: str, out: Path, root: str) -> Path:
    """One Job per step (a JobSet for a multi-host TPU slice), in run order; wiring through ``root``."""
    import yaml

    flow, cluster = resolve_flow(name), Cluster.load(cluster_name)
    docs = []
    for i, spec in enumerate(flow.steps):
        placement = cluster.place(spec.compute)
        common = dict(name=f"{flow.name.replace('_', '-')}-{i}-{spec.name.replace('_', '-')}",
                      image=image_for(placement.kind), command=["xpuflow", "step", spec.step],
                      args=step_arguments(spec, root),
                      labels={"xpuflow.io/flow": flow.name.replace("_", "-"), "xpuflow.io/order": str(i)})
        render = jobset.jobset if placement.hosts > 1 else kubernetes.job
        docs += kubernetes.resource_claim_templates(placement, name=common["name"], labels=common["labels"])
        docs.append(render(placement, **common))
    with atomic_path(out) as tmp:
        tmp.write_text(f"# {flow.name} on {cluster.name}: apply in order (xpuflow.io/order); artifacts under {root}\n"
                       + yaml.safe_dump_all(docs, sort_keys=False))
    return out
