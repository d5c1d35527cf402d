"""``build_dag``: a ``@flow`` as an Airflow 3 DAG; ``task``: one ``@step`` as an Airflow task.

Nothing heavy at import time: airflow, the cncf-kubernetes provider and the
kubernetes client are imported inside the functions, torch only when a local-mode
task runs. See docs/airflow.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..cluster import Cluster
from ..dsl.command import arguments as step_arguments
from ..dsl.command import command as step_command
from ..dsl.command import pod_root
from ..dsl.step import FlowError
from ..errors import XpuflowError, did_you_mean, invalid
from ..dsl.local import shard_specs
from .fanout import list_task
from .local import LOCAL_ROOT_ENV, serialise

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from ..compute import Compute
    from ..dsl.flow import Flow, FlowParam, Task
    from ..dsl.step import Step
    from ..placement import Placement

__all__ = [
    "ARTIFACT_ROOT_ENV",
    "ARTIFACT_ROOT_VARIABLE",
    "LOCAL_ROOT_ENV",
    "MODES",
    "MODE_ENV",
    "artifact_root_template",
    "build_dag",
    "airflow_pool",
    "pool_for",
    "resolve_mode",
    "task",
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
RUN_DIR = "/{{ dag.dag_id }}/{{ run_id }}"


def resolve_mode(mode: str | None = None) -> str:
    """``mode`` if given, else ``$XPUFLOW_AIRFLOW_MODE``, else ``cluster``."""
    where = "mode" if mode is not None else MODE_ENV
    value = mode if mode is not None else (os.environ.get(MODE_ENV) or "cluster")
    key = value.strip().lower()
    if key not in MODES:
        raise XpuflowError(f"{where}={value!r} is not valid: one of {', '.join(MODES)}.{did_you_mean(key, MODES)}")
    return key


def airflow_pool(placement: Placement) -> tuple[str, int] | None:
    """The Airflow pool and slots of an accelerator task: ``xpuflow-<kind>-<cluster>``, one slot per device.

    An *Airflow* pool (a scheduler slot budget), not the cluster's node pool (``placement.pool``).
    """
    if placement.accelerator is None:
        return None
    _, count = placement.accelerator
    return f"xpuflow-{placement.kind}-{placement.cluster}", int(count)


def pool_for(placement: Placement) -> tuple[str, int] | None:
    """Deprecated name of :func:`airflow_pool`, kept for one release."""
    import warnings

    warnings.warn("xpuflow.airflow.pool_for is deprecated: call xpuflow.airflow.airflow_pool (the same result)",
                  DeprecationWarning, stacklevel=2)
    return airflow_pool(placement)


def artifact_root_template(cluster: Cluster, artifact_root: str | None = None) -> str:
    """Cluster mode's artifact root: ``artifact_root`` as given, else a template reading the Airflow
    Variable ``xpuflow_artifact_root`` at run time, defaulting to ``$XPUFLOW_ARTIFACT_ROOT`` or the
    provider's default bucket (gs:// on GKE, s3:// on EKS, az:// on AKS)."""
    if artifact_root:
        return pod_root(artifact_root, "build_dag (cluster mode)")
    default = (os.environ.get(ARTIFACT_ROOT_ENV) or _PROVIDER_ROOTS.get(cluster.provider, _FALLBACK_ROOT)).rstrip("/")
    return f"{{{{ var.value.get({ARTIFACT_ROOT_VARIABLE!r}, {default!r}) }}}}"


def _param(p: FlowParam) -> str:
    """A flow parameter as the pod's argument: a template of the DAG param (booleans as true/false, as
    :func:`xpuflow.dsl.command.text` writes them)."""
    return f"{{{{ params[{p.name!r}] | lower }}}}" if p.type is bool else f"{{{{ params[{p.name!r}] }}}}"


def build_dag(
    flow: Flow | str | os.PathLike[str],
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
    """``flow`` (a Flow, ``path/to/file.py[:name]`` or an example's name) as an Airflow DAG.

    ``cluster``: a shipped profile name, a cluster YAML path or a ``Cluster`` (cluster mode).
    ``artifact_root``: cluster mode, a URL used as is; local mode, a local directory.
    ``image``: one image for every task, or a mapping of compute kind (cpu, gpu, tpu, npu)
    to image; default: the step's image. ``compute``: per-task Compute overrides.
    ``namespace``, ``service_account_name``: the pods' (default: the operator's); the
    service account is how pods get object-store credentials (GKE Workload Identity, EKS IRSA).
    ``secret_env``: per task, environment variables read from Kubernetes Secrets in cluster mode,
    ``{task: {VAR: (secret name, key)}}``, added to those the flow declares (``task.with_secret_env``);
    the values never enter the DAG (local mode reads them from the worker's environment).
    """
    from airflow.sdk import DAG, Param

    from ..dsl.load import load_flow

    fl = load_flow(os.fspath(flow) if isinstance(flow, os.PathLike) else flow)
    if compute:
        fl = fl.with_compute(**compute)
    mode = resolve_mode(mode)
    unknown = sorted(set(secret_env or {}) - {t.name for t in fl.tasks})
    if unknown:
        raise FlowError(f"build_dag: secret_env names {', '.join(map(repr, unknown))}, not tasks of {fl.name} "
                           f"({', '.join(t.name for t in fl.tasks)}). Fix: key secret_env by task name.")
    tags = ["xpuflow", mode]
    cl = None
    if mode == "cluster":
        cl = cluster if isinstance(cluster, Cluster) else Cluster.load(cluster)
        for t in fl.tasks:  # every task placed before any operator is built (a task the profile cannot place raises)
            cl.place(t.compute)  # type: ignore[arg-type]
        tags.append(cl.name)
    params = {name: Param(p.default, type=_PARAM_TYPES[p.type], description=_param_doc(fl, name))
              for name, p in fl.params.items()}
    dag = DAG(
        dag_id or fl.name,
        description=fl.description,
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        params=params,
        tags=tags,
        doc_md=f"{fl.description}\n\nBuilt by `xpuflow.airflow.build_dag` from the flow `{fl.ref}` in **{mode}** "
        f"mode (`{MODE_ENV}`); see docs/airflow.md.",
    )
    ops = {}
    for t in fl.tasks:
        env = {**t.secret_env, **(secret_env or {}).get(t.name, {})}
        ops[t.name] = _operator(dag, t, mode, cl, artifact_root, image, env, namespace=namespace,
                                service_account_name=service_account_name)
    for t in fl.tasks:
        for upstream in dict.fromkeys(t.inputs.values()):
            ops[upstream] >> ops[t.name]
    return dag


def _param_doc(fl: Flow, name: str) -> str:
    from ..dsl.flow import FlowParam

    uses = [f"{t.name} --{k.replace('_', '-')}" for t in fl.tasks for k, v in t.args.items()
            if isinstance(v, FlowParam) and v.name == name]
    uses += [f"{t.name}: processes (shards)" for t in fl.tasks if t.shards_param is not None and t.shards_param.name == name]
    return "xpuflow step option: " + (", ".join(uses) or "(unused)")


def task(step: Step | str, *, dag: DAG | None = None, task_id: str | None = None,
         cluster: str | os.PathLike[str] | Cluster = "gke", mode: str | None = None, compute: Compute | None = None,
         artifact_root: str | None = None, image: str | Mapping[str, str] | None = None,
         secret_env: Mapping[str, tuple[str, str]] | None = None, **arguments: Any) -> Any:
    """One step as an Airflow task: a KubernetesPodOperator placed with the step's Compute (or ``compute``)
    in cluster mode, a PythonOperator running it in the worker in local mode. ``arguments``: the step's
    scalars and inputs (URLs, Jinja templates allowed); its outputs go to
    ``<artifact root>/<dag_id>/<run_id>/<task_id>``."""
    from ..dsl.flow import Task
    from ..dsl.load import load_step

    step = load_step(step) if isinstance(step, str) else step
    the_compute = compute or step.compute
    if the_compute is None:
        raise FlowError(f"task {task_id or step.name!r}: step {step.ref} declares no compute. Fix: pass "
                           "compute=Compute...")
    step.check_alone(arguments, f"task {task_id or step.name!r}")
    t = Task(task_id or step.name, step, dict(arguments), compute=the_compute)
    mode = resolve_mode(mode)
    cl = None
    if mode == "cluster":
        cl = cluster if isinstance(cluster, Cluster) else Cluster.load(cluster)
    return _operator(dag, t, mode, cl, artifact_root, image, dict(secret_env or {}))


def _operator(dag: DAG | None, t: Task, mode: str, cl: Cluster | None, artifact_root: str | None,
              image: str | Mapping[str, str] | None, secret_env: Mapping[str, tuple[str, str]], **pod: str | None) -> Any:
    if mode == "local":
        return _local_task(dag, t, artifact_root)
    assert cl is not None
    return _pod_task(dag, t, cl.place(t.compute), artifact_root_template(cl, artifact_root) + RUN_DIR,  # type: ignore[arg-type]
                     image, secret_env, **pod)


_KINDS = ("cpu", "gpu", "tpu", "npu")


def _image(image: str | Mapping[str, str] | None, t: Task) -> str:
    """``image=``: one reference for every task, or {compute kind: reference}; a key that is not a kind (a typo,
    or the image class ``cuda``) would leave its tasks on the default image without a word, so it is refused."""
    if isinstance(image, str):
        if not image.strip():
            raise FlowError(invalid("image", image, "an image reference (registry/name:tag), or {kind: reference}"))
        return image
    unknown = sorted(set(image or ()) - set(_KINDS))
    if unknown:
        raise FlowError(invalid("image", unknown[0], f"a key of the mapping: a compute kind ({', '.join(_KINDS)})",
                                choices=_KINDS, fix="key it by compute kind, e.g. image={'gpu': 'registry/me/train:1'} "
                                "(the CUDA image is the gpu kind's)"))
    kind = t.compute.kind  # type: ignore[union-attr]
    if image and kind in image:
        return image[kind]
    return t.step.image_ref(t.compute)


def _pod_task(dag: DAG | None, t: Task, placement: Placement, root: str, image: str | Mapping[str, str] | None,
              secret_env: Mapping[str, tuple[str, str]], **pod: str | None) -> Any:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.cncf.kubernetes.secret import Secret

    from ..render import airflow as render_airflow

    kwargs = render_airflow.operator_kwargs(placement, step=t.name)  # refuses multi-host slices
    slots = airflow_pool(placement)
    if slots:
        kwargs["pool"], kwargs["pool_slots"] = slots
    cmd = step_command(t.step)
    where = f"node pool `{placement.pool}` ({placement.hardware}{', spot' if placement.spot else ''})"
    common = dict(
        task_id=t.name,
        name=t.name.replace("_", "-"),
        image=_image(image, t),
        cmds=cmd,
        do_xcom_push=False,
        on_finish_action="delete_succeeded_pod",
        doc_md=f"`{' '.join(cmd)}` on {where}" + (f", Airflow pool `{slots[0]}` x{slots[1]}" if slots else ""),
        dag=dag,
        secrets=[Secret("env", var, secret, key) for var, (secret, key) in secret_env.items()] or None,
        **{k: v for k, v in pod.items() if v},
        **kwargs,
    )
    if t.shards_param is not None:  # the count is a DAG param: the mapped pods' arguments listed when it runs
        return KubernetesPodOperator.partial(**common).expand(
            arguments=list_task(dag, t, step_arguments(t, root, _param)).output)
    if t.shards > 1:  # one mapped pod per shard; a failed one is retried alone
        return KubernetesPodOperator.partial(**common).expand(
            arguments=[step_arguments(t, root, _param, shard=s) for s in shard_specs(t)])
    return KubernetesPodOperator(arguments=step_arguments(t, root, _param), **common)


def _local_task(dag: DAG | None, t: Task, root: str | None) -> Any:
    from airflow.providers.standard.operators.python import PythonOperator

    from .local import run_step

    common = dict(task_id=t.name, python_callable=run_step, dag=dag,
                  doc_md=f"`xpuflow step {t.step.ref}` in the worker's process (local mode; outputs under "
                  f"`${LOCAL_ROOT_ENV}` or `<tmp>/xpuflow-airflow`, passed on through XCom)")
    op_kwargs = {"step": t.step.pod_ref(), "arguments": serialise(t), "root": root}
    if t.shards_param is not None:  # the count is a DAG param: the mapped tasks listed when it runs
        return PythonOperator.partial(**common).expand(op_kwargs=list_task(dag, t, op_kwargs).output)
    if t.shards > 1:  # one mapped task per shard, each with --shard I/N; a failed one is retried alone
        return PythonOperator.partial(**common).expand(op_kwargs=[{**op_kwargs, "shard": s} for s in shard_specs(t)])
    return PythonOperator(op_kwargs=op_kwargs, **common)
