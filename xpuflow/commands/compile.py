"""``xpuflow compile``: a flow for KFP (IR YAML), Airflow (a DAG file) or plain Kubernetes (manifests)."""

from __future__ import annotations

import os
from pathlib import Path

from ..cluster import Cluster
from ..dsl.flow import Flow
from ..errors import XpuflowError, invalid
from ..steps.io import atomic_path
from .pipelines import kfp_pipeline, resolve_flow

__all__ = ["compile_pipeline", "BACKENDS", "manifests", "dag_claim_templates"]

BACKENDS = ("kfp", "airflow", "k8s")


def compile_pipeline(name: str, backend: str, cluster_name: str, output: str, artifact_root: str = "") -> Path:
    if backend not in BACKENDS:
        raise XpuflowError(invalid("backend", backend, f"one of {', '.join(BACKENDS)}", choices=BACKENDS))
    if artifact_root and backend != "k8s":  # would be dropped: the run would write to the default bucket
        raise XpuflowError(invalid("--artifact-root", artifact_root, "only for --backend k8s", fix=(
            "KFP writes under the pipeline root of your KFP deployment; for Airflow set the Variable "
            "xpuflow_artifact_root, or call xpuflow.airflow.build_dag(..., artifact_root=...)")))
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


def dag_claim_templates(name: str, cluster_name: str, dag_file: str) -> Path | None:
    """The ResourceClaimTemplates a DAG's pods claim from, written beside it (``<dag>.claims.yaml``); None if none."""
    import yaml

    from ..render.kubernetes import resource_claim_templates

    flow, cluster = resolve_flow(name), Cluster.load(cluster_name)
    docs = [d for t in flow.tasks for d in resource_claim_templates(cluster.place(t.compute), name=t.name)]
    if not docs:
        return None
    out = Path(dag_file).with_suffix(".claims.yaml")
    with atomic_path(out) as tmp:
        tmp.write_text(f"# ResourceClaimTemplates of DAG {flow.name} on {cluster.name}: apply them in the namespace "
                       "its pods run in, before the DAG runs\n" + yaml.safe_dump_all(docs, sort_keys=False))
    return out


def manifests(flow: Flow, cluster: Cluster, out: Path, root: str) -> Path:
    """One Job per task (a JobSet for a multi-host TPU slice), in run order; wiring through ``root``."""
    import yaml

    from ..jobs import flow_manifests

    docs = flow_manifests(flow, cluster, root)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(f"# {flow.name} on {cluster.name}: apply at once (each Job's init container waits for its "
                       f"upstreams' outputs) or in order (xpuflow.io/order); artifacts under {root}\n"
                       + yaml.safe_dump_all(docs, sort_keys=False))
    return out
