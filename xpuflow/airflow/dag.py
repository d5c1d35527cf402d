"""``build_dag``: an xpuflow flow (``xpuflow/flows.py``) as an Airflow 3 DAG.

Nothing heavy at import time: airflow, the cncf-kubernetes provider and the
kubernetes client are imported inside :func:`build_dag`, torch only when a
local-mode task runs. See docs/airflow.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..cluster import Cluster
from ..errors import ComputeError, did_you_mean
from ..flows import Flow, StepSpec
from ..flows import flow as get_flow
from .local import LOCAL_ROOT_ENV

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from ..compute import Compute
    from ..placement import Placement

__all__ = [
    "ARTIFACT_ROOT_ENV",
    "ARTIFACT_ROOT_VARIABLE",
    "LOCAL_ROOT_ENV",
    "MODES",
    "MODE_ENV",
    "artifact_root_template",
    "build_dag",
    "dag_params",
    "pool_for",
    "resolve_mode",
]

MODE_ENV = "XPUFLOW_AIRFLOW_MODE"
MODES = ("cluster", "local")
# cluster mode: the Airflow Variable read at run time, and the env var giving its default at parse time
ARTIFACT_ROOT_VARIABLE = "xpuflow_artifact_root"
ARTIFACT_ROOT_ENV = "XPUFLOW_ARTIFACT_ROOT"
_PROVIDER_ROOTS = {"gke": "gs://xpuflow-artifacts", "eks": "s3://xpuflow-artifacts", "aks": "az://xpuflow-artifacts"}
_FALLBACK_ROOT = "s3://xpuflow-artifacts"
START_DATE = datetime(2025, 1, 1, tzinfo=UTC)
_PARAM_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}
# steps that checkpoint (xpuflow.steps.checkpoint takes any fsspec URL): in cluster mode their checkpoints
# go to the artifact root too, so a retried pod (spot preemption) resumes instead of starting over
CHECKPOINTED_STEPS = ("train", "train_tpu")


def resolve_mode(mode: str | None = None) -> str:
    """``mode`` if given, else ``$XPUFLOW_AIRFLOW_MODE``, else ``cluster``."""
    where = "mode" if mode is not None else MODE_ENV
    value = mode if mode is not None else (os.environ.get(MODE_ENV) or "cluster")
    key = value.strip().lower()
    if key not in MODES:
        raise ComputeError(f"{where}={value!r} is not valid: one of {', '.join(MODES)}.{did_you_mean(key, MODES)}")
    return key


def pool_for(placement: Placement) -> tuple[str, int] | None:
    """The Airflow pool and slots of an accelerator task: ``xpuflow-<kind>-<cluster>``, one slot per device."""
    if placement.accelerator is None:
        return None
    _, count = placement.accelerator
    return f"xpuflow-{placement.kind}-{placement.cluster}", int(count)


def dag_params(fl: Flow) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """The DAG's params (name -> default) and, per task, step option -> DAG param.

    A step option becomes a DAG param of the same name; an option two steps set to
    different values becomes ``<task>_<option>`` instead.
    """
    values: dict[str, list[Any]] = {}
    for s in fl.steps:
        for option, value in s.params.items():
            values.setdefault(option, []).append(value)
    defaults: dict[str, Any] = {}
    wiring: dict[str, dict[str, str]] = {}
    for s in fl.steps:
        wiring[s.name] = {}
        for option, value in s.params.items():
            name = option if all(v == value for v in values[option]) else f"{s.name}_{option}"
            defaults[name] = value
            wiring[s.name][option] = name
    return defaults, wiring


def artifact_root_template(cluster: Cluster, artifact_root: str | None = None) -> str:
    """Cluster mode's artifact root: ``artifact_root`` as given, else a template reading the Airflow
    Variable ``xpuflow_artifact_root`` at run time, defaulting to ``$XPUFLOW_ARTIFACT_ROOT`` or the
    provider's default bucket (gs:// on GKE, s3:// on EKS, az:// on AKS)."""
    if artifact_root:
        return artifact_root.rstrip("/")
    default = (os.environ.get(ARTIFACT_ROOT_ENV) or _PROVIDER_ROOTS.get(cluster.provider, _FALLBACK_ROOT)).rstrip("/")
    return f"{{{{ var.value.get({ARTIFACT_ROOT_VARIABLE!r}, {default!r}) }}}}"


def task_url(root: str, task: str) -> str:
    """Where a task writes in cluster mode: one directory per DAG, run and task."""
    return root + "/{{ dag.dag_id }}/{{ run_id }}/" + task


def checkpoint_url(root: str, task: str) -> str:
    """Where a checkpointing task keeps its checkpoints in cluster mode (kept across retries of the run)."""
    return root + "/{{ dag.dag_id }}/{{ run_id }}/_checkpoints/" + task


def build_dag(
    flow_name: str,
    *,
    cluster: str | os.PathLike[str] | Cluster = "gke",
    mode: str | None = None,
    dag_id: str | None = None,
    schedule: Any = None,
    artifact_root: str | None = None,
    image: str | Mapping[str, str] | None = None,
    compute: Mapping[str, Compute] | None = None,
    namespace: str | None = None,
    service_account_name: str | None = None,
    secret_env: Mapping[str, Mapping[str, tuple[str, str]]] | None = None,
) -> DAG:
    """The flow ``flow_name`` as an Airflow DAG (see the package docstring for the two modes).

    ``cluster``: a shipped profile name, a cluster YAML path or a ``Cluster`` (cluster mode).
    ``artifact_root``: cluster mode, a URL used as is; local mode, a local directory.
    ``image``: one image for every task, or a mapping of compute kind (cpu, gpu, tpu, npu)
    to image; default :func:`xpuflow.images.image_for`. ``compute``: per-task Compute
    overrides. ``namespace``, ``service_account_name``: the pods' (default: the operator's); the
    service account is how pods get object-store credentials (GKE Workload Identity, EKS IRSA).
    ``secret_env``: per task, environment variables read from Kubernetes Secrets in cluster mode,
    ``{task: {VAR: (secret name, key)}}``, e.g. ``{"index": {"XPUFLOW_PGVECTOR_DSN": ("rag-db", "dsn")}}``;
    the values never enter the DAG (local mode reads them from the worker's environment).
    """
    from airflow.sdk import DAG, Param

    fl = get_flow(flow_name)
    if compute:
        fl = fl.with_compute(**compute)
    mode = resolve_mode(mode)
    defaults, wiring = dag_params(fl)
    tags = ["xpuflow", mode]
    if mode == "cluster":
        cl = cluster if isinstance(cluster, Cluster) else Cluster.load(cluster)
        # place every step before building any operator (a step the profile cannot place raises here)
        placements = {s.name: cl.place(s.compute) for s in fl.steps}
        tags.append(cl.name)
        root = artifact_root_template(cl, artifact_root)
    params = {
        name: Param(value, type=_PARAM_TYPES.get(type(value), "string"), description=_param_doc(name, wiring))
        for name, value in defaults.items()
    }
    dag = DAG(
        dag_id or fl.name,
        description=fl.description,
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        params=params,
        tags=tags,
        doc_md=f"{fl.description}\n\nBuilt by `xpuflow.airflow.build_dag` from `xpuflow/flows.py` in **{mode}** mode "
        f"(`{MODE_ENV}`); see docs/airflow.md.",
    )
    unknown = sorted(set(secret_env or {}) - {s.name for s in fl.steps})
    if unknown:
        raise ComputeError(f"build_dag: secret_env names {', '.join(map(repr, unknown))}, not tasks of {fl.name} "
                           f"({', '.join(s.name for s in fl.steps)}). Fix: key secret_env by task name.")
    tasks = {}
    for spec in fl.steps:
        if mode == "cluster":
            tasks[spec.name] = _pod_task(dag, spec, placements[spec.name], wiring[spec.name], root, image,
                                         (secret_env or {}).get(spec.name, {}), namespace=namespace,
                                         service_account_name=service_account_name)
        else:
            tasks[spec.name] = _local_task(dag, spec, wiring[spec.name], artifact_root)
    for spec in fl.steps:
        for upstream in dict.fromkeys(spec.inputs.values()):
            tasks[upstream] >> tasks[spec.name]
    return dag


def _param_doc(name: str, wiring: Mapping[str, Mapping[str, str]]) -> str:
    uses = [f"{task} --{option.replace('_', '-')}" for task, opts in wiring.items()
            for option, param in opts.items() if param == name]
    return "xpuflow step option: " + ", ".join(uses)


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def _image(image: str | Mapping[str, str] | None, kind: str) -> str:
    from ..images import image_for

    if isinstance(image, str):
        return image
    if image and kind in image:
        return image[kind]
    return image_for(kind)


def _pod_task(dag: DAG, spec: StepSpec, placement: Placement, wiring: Mapping[str, str], root: str,
              image: str | Mapping[str, str] | None, secret_env: Mapping[str, tuple[str, str]],
              **pod: str | None) -> Any:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.cncf.kubernetes.secret import Secret

    from ..render import airflow as render_airflow

    kwargs = render_airflow.operator_kwargs(placement, step=spec.name)  # refuses multi-host slices
    pool = pool_for(placement)
    if pool:
        kwargs["pool"], kwargs["pool_slots"] = pool
    arguments: list[str] = []
    for option, param in wiring.items():
        arguments += [_flag(option), f"{{{{ params[{param!r}] }}}}"]
    for option, upstream in spec.inputs.items():
        arguments += [_flag(option), task_url(root, upstream)]
    if spec.step in CHECKPOINTED_STEPS:
        arguments += ["--checkpoint-dir", checkpoint_url(root, spec.name)]
    arguments += ["--output", task_url(root, spec.name)]
    where = f"node pool `{placement.pool}` ({placement.hardware}{', spot' if placement.spot else ''})"
    return KubernetesPodOperator(
        task_id=spec.name,
        name=spec.name.replace("_", "-"),
        image=_image(image, spec.compute.kind),
        cmds=["xpuflow", "step", spec.step],
        arguments=arguments,
        do_xcom_push=False,
        on_finish_action="delete_succeeded_pod",
        doc_md=f"`xpuflow step {spec.step}` on {where}" + (f", Airflow pool `{pool[0]}` x{pool[1]}" if pool else ""),
        dag=dag,
        secrets=[Secret("env", var, secret, key) for var, (secret, key) in secret_env.items()] or None,
        **{k: v for k, v in pod.items() if v},
        **kwargs,
    )


def _local_task(dag: DAG, spec: StepSpec, wiring: Mapping[str, str], root: str | None) -> Any:
    from airflow.providers.standard.operators.python import PythonOperator

    from .local import run_step

    return PythonOperator(
        task_id=spec.name,
        python_callable=run_step,
        op_kwargs={"step": spec.step, "options": dict(wiring), "inputs": dict(spec.inputs), "root": root},
        doc_md=f"`xpuflow step {spec.step}` in the worker's process (local mode; outputs under "
        f"`${LOCAL_ROOT_ENV}` or `<tmp>/xpuflow-airflow`, passed on through XCom)",
        dag=dag,
    )
