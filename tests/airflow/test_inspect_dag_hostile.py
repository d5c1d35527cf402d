"""`xpuflow lint | plan` of a user's DAG file that maps pod tasks in the ways Airflow allows beyond literal lists,
and what plan prices for them (every map index):
``expand_kwargs`` of literal dicts holding an upstream's value, ``@task.kubernetes`` mapped, literal and XCom
expansions mixed, and mapped tasks of other operators (no pod of their own)."""

from __future__ import annotations

from xpuflow import Cluster
from xpuflow.inspect import lint_pods, plan_pods, read

DAG_FILE = '''
from datetime import datetime

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, task
from kubernetes.client import models as k8s

RES = k8s.V1ResourceRequirements(requests={"cpu": "1", "memory": "1Gi"}, limits={"cpu": "1", "memory": "1Gi"})
POOL = {"cloud.google.com/gke-nodepool": "cpu-general"}

with DAG("mapped_more", start_date=datetime(2026, 1, 1), schedule=None):
    files = PythonOperator(task_id="files", python_callable=lambda: [["a"], ["b"]])
    KubernetesPodOperator.partial(task_id="kw", image="python:3.11", cmds=["true"], container_resources=RES,
                                  node_selector=POOL).expand_kwargs([{"arguments": ["1"]},
                                                                     {"arguments": files.output}])
    KubernetesPodOperator.partial(task_id="mix", image="python:3.11", cmds=["true"], container_resources=RES,
                                  node_selector=POOL).expand(arguments=files.output.map(lambda a: a + ["z"]),
                                                             labels=[{"a": "1"}, {"a": "2"}])
    BashOperator.partial(task_id="bash").expand(bash_command=["echo 1", "echo 2"])

    @task.kubernetes(image="python:3.11", container_resources=RES,
                     node_selector={"cloud.google.com/gke-nodepool": "nope"})
    def kube(x):
        return x

    kube.expand(x=[1, 2])
    # pods that differ only in metadata (one spec, four pods), and more map indexes than lint builds
    KubernetesPodOperator.partial(task_id="labels", image="python:3.11", cmds=["true"], container_resources=RES,
                                  node_selector=POOL).expand(labels=[{"a": str(i)} for i in range(4)])
    KubernetesPodOperator.partial(task_id="many", image="python:3.11", cmds=["true"], container_resources=RES,
                                  node_selector=POOL).expand(arguments=[[str(i)] for i in range(70)])
    KubernetesPodOperator.partial(task_id="none", image="python:3.11", cmds=["true"], container_resources=RES,
                                  node_selector=POOL).expand(arguments=[])
'''


def test_expand_kwargs_with_an_xcom_value_and_a_mapped_task_kubernetes_are_linted(tmp_path):
    path = tmp_path / "mapped_more.py"
    path.write_text(DAG_FILE)
    _, pods = read(path)  # before: "KubernetesPodOperator cannot build its pod: AttributeError ... openapi_types"
    # (and "KeyError: 'op_kwargs'" for the decorated one); bash: a mapped task of another operator, no pod
    assert [p.task for p in pods][:4] == ["kw[0]", "kw[1]", "mix", "kube"]
    errors = {f.step for f in lint_pods(pods, Cluster.load("gke")) if f.level == "error"}
    assert errors == {"kube"}, errors  # its node pool does not exist: the decorated pod is checked too
    # plan prices every pod a mapped task runs (before: labels as 1 pod, many as 64, none as 1)
    rows = {r.step: r for r in plan_pods(pods, Cluster.load("gke"))}
    assert rows["labels"].pods == 4 and rows["labels"].price == 4 * rows["labels"].placement.price_per_hour
    many = [r for name, r in rows.items() if name.startswith("many[")]
    assert len(many) == 64 and sum(r.pods for r in many) == 70 and "none" not in rows
    assert rows["mix"].pods == 2 and any("known when the DAG runs" in note for p in pods if p.task == "mix"
                                         for note in p.unknown)
