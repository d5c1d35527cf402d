"""A user's own project (tests/support/user_project.py) on Airflow (Airflow venv): its flow as a DAG file written by
`xpuflow compile --backend airflow`, run for real with dag.test() in local mode; its pods in cluster mode on two
clusters; one of its steps as a task in a DAG of the user's own (xpuflow.airflow.task)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import user_project
from airflow.sdk import DAG
from kubernetes.client import ApiClient

from xpuflow import Cluster, Compute
from xpuflow.airflow import MODE_ENV, build_dag, task, write_dag_file
from xpuflow.steps import build_parser

ROOT = Path(__file__).resolve().parents[2]

RUN = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
assert not bag.import_errors, bag.import_errors
run = bag.get_dag(sys.argv[2]).test(run_conf=json.loads(sys.argv[3]))
with open(sys.argv[4], "w") as out:
    json.dump({"state": str(run.state), "tasks": {ti.task_id: str(ti.state) for ti in run.get_task_instances()}}, out)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return user_project.make(tmp_path_factory)


def pod(op) -> dict:
    return ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))


def test_the_flow_runs_with_dag_test_in_local_mode(project, airflow_env, tmp_path):
    dag_file = write_dag_file(str(project / "flows" / "nightly.py"), "eks", tmp_path / "dags" / "acme.py")
    env = {**user_project.env(project, ROOT), **{k: v for k, v in airflow_env.items() if k != "PYTHONPATH"},
           "XPUFLOW_LOCAL_ROOT": str(tmp_path / "runs"), "AIRFLOW__CORE__DAGS_FOLDER": str(dag_file.parent)}
    result = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-c", RUN, str(dag_file), "acme_nightly", json.dumps({"rows": 12}),
                           str(result)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    run = json.loads(result.read_text())
    assert run == {"state": "success", "tasks": dict.fromkeys(user_project.TASKS, "success")}
    (run_dir,) = (tmp_path / "runs" / "acme_nightly").iterdir()
    assert (run_dir / "summarise" / "summary.txt").read_text().endswith("of 12 above\n")
    model = json.loads((run_dir / "fit" / "model.json").read_text())
    assert model["checkpoint_dir"] == str(run_dir / "_checkpoints" / "fit")


@pytest.mark.parametrize("cluster", user_project.CLUSTERS)
def test_cluster_mode_pods_run_the_users_steps_with_their_placement(project, cluster):
    dag = build_dag(str(project / "flows" / "nightly.py"), cluster=cluster, mode="cluster")
    assert [t.task_id for t in dag.tasks] == list(user_project.TASKS)
    assert set(dag.params) == {"rows", "scale", "strict"}
    context = {"params": {**dag.params, "rows": 5}, "run_id": "manual__1", "dag": dag,
               "var": {"value": {"xpuflow_artifact_root": "s3://acme/x"}}}
    profile = Cluster.load(cluster)
    for t in dag.tasks:
        built = pod(t)
        container = built["spec"]["containers"][0]
        assert container["command"] == ["xpuflow", "step", f"acme_ml.steps:{t.task_id}"]
        argv = [jinja2.Template(a).render(**context) for a in t.arguments]
        parsed = vars(build_parser(container["command"][2]).parse_args(argv))
        if t.task_id == "make_data":
            assert parsed["rows"] == 5 and parsed["out"] == "s3://acme/x/acme_nightly/manual__1/make_data"
        if t.task_id == "score":
            assert parsed["data"] == "s3://acme/x/acme_nightly/manual__1/make_data" and parsed["strict"] is False
            placement = profile.place(Compute.npu(device="aws-inferentia2"))
            assert container["resources"]["limits"] == placement.limits
            assert built["spec"]["nodeSelector"] == placement.node_selector


def test_one_user_step_as_a_task_in_a_dag_of_ones_own(project, monkeypatch):
    from acme_ml.steps import fit

    with DAG("mine", schedule=None) as dag:
        pod_task = task(fit, task_id="fit_big", cluster="eks", mode="cluster", compute=Compute.gpu(count=1, model="a100-40gb"),
                        artifact_root="s3://acme/mine", data="s3://acme/prep", scale=3.0)
    built = pod(pod_task)
    want = Cluster.load("eks").place(Compute.gpu(count=1, model="a100-40gb"))
    assert built["spec"]["nodeSelector"] == want.node_selector and pod_task.pool == "xpuflow-gpu-eks"
    assert pod_task.arguments == ["--data", "s3://acme/prep", "--scale", "3.0", "--checkpoint-dir",
                                  "s3://acme/mine/{{ dag.dag_id }}/{{ run_id }}/_checkpoints/fit_big",
                                  "--model", "s3://acme/mine/{{ dag.dag_id }}/{{ run_id }}/fit_big"]
    monkeypatch.setenv(MODE_ENV, "local")
    local = task(fit, dag=dag, data="/tmp/prep")
    assert type(local).__name__ == "PythonOperator" and local.op_kwargs["step"] == "acme_ml.steps:fit"
    assert os.environ[MODE_ENV] == "local"


def test_airflow_and_kubernetes_run_the_same_command_lines(project):
    """One builder of a step's command line: a DAG's rendered pod arguments are the Kubernetes Jobs' arguments
    for the same artifact root."""
    from xpuflow.dsl.load import load_flow
    from xpuflow.jobs import flow_manifests

    fl = load_flow(str(project / "flows" / "nightly.py"))
    dag = build_dag(fl, cluster="eks", mode="cluster", artifact_root="s3://acme/x")
    root = "s3://acme/x/acme_nightly/manual__1"
    context = {"params": dict(dag.params), "run_id": "manual__1", "dag": dag}
    jobs = [m for m in flow_manifests(fl, Cluster.load("eks"), root) if m["kind"] == "Job"]
    for t, job in zip(dag.tasks, jobs, strict=True):
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert t.cmds == container["command"]
        assert [jinja2.Template(a).render(**context) for a in t.arguments] == container["args"], t.task_id
