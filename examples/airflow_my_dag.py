"""An Airflow user's own DAG: a nightly scoring job whose pods carry xpuflow placements.

Copy it into your DAGs folder. The preprocessing task runs on the CPU pool; the
training task asks for one L4 on GKE's spot training pool, with the spot
selector, tolerations, /dev/shm and a 30 s grace period that the train step's
SIGTERM checkpoint fits in; it waits in an Airflow pool, not as a Pending pod.

The evaluation task shows the short way for any xpuflow step, or one of your own
``@step``s: ``xpuflow.airflow.task`` makes the operator from the step's declaration
(its Compute, image and command line).

Nothing heavy is imported at parse time: xpuflow's core renders plain data.
"""

import os

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import DAG

from xpuflow import Cluster, Compute
from xpuflow.airflow import task
from xpuflow.images import image_for
from xpuflow.render import airflow as render_airflow

CLUSTER = Cluster.load(os.environ.get("XPUFLOW_CLUSTER", "gke"))
ROOT = "{{ var.value.get('xpuflow_artifact_root', 'gs://my-bucket/xpuflow') }}/nightly/{{ run_id }}"

prep_placement = CLUSTER.place(Compute.cpu(cpu="2", memory="8Gi"))
train_placement = CLUSTER.place(Compute.gpu(count=1, model="l4", spot=True, memory="24Gi", retries=3))

with DAG(dag_id="my_nightly_training", schedule="@daily", catchup=False, tags=["xpuflow"]) as dag:
    prep = KubernetesPodOperator(
        task_id="preprocess",
        name="preprocess",
        image=image_for("cpu"),
        cmds=["xpuflow", "step", "preprocess"],
        arguments=["--input", "gs://my-bucket/tables/latest.parquet", "--output", f"{ROOT}/data"],
        **render_airflow.operator_kwargs(prep_placement, step="preprocess"),
    )
    train = KubernetesPodOperator(
        task_id="train",
        name="train",
        image=image_for("gpu"),
        cmds=["xpuflow", "step", "train"],
        arguments=["--data", f"{ROOT}/data", "--output", f"{ROOT}/model",
                   "--checkpoint-dir", f"{ROOT}/checkpoints"],
        pool="xpuflow-gpu-gke",  # `airflow pools set xpuflow-gpu-gke 4 "GPUs we may hold"`
        pool_slots=1,
        **render_airflow.operator_kwargs(train_placement, step="train"),
    )
    evaluate = task("evaluate", cluster=CLUSTER, mode="cluster", artifact_root="gs://my-bucket/xpuflow/evaluations",
                    model=f"{ROOT}/model", data=f"{ROOT}/data")  # the step's own Compute: CPU 1 / 2Gi
    prep >> train >> evaluate
