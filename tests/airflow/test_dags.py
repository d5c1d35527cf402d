"""The Airflow DAGs in dags/ (Airflow venv): parsing, cluster-mode pods, local-mode runs end to end.

- DagBag parses dags/ with no import errors in both modes, and the DAGs follow the flows in pipelines/;
- cluster mode: each task's pod, built by KubernetesPodOperator itself (dry run), carries
  ``Cluster.load(...).place(step.compute)``; accelerator tasks hold pool slots per device;
  the rendered arguments parse with the step's own CLI and chain outputs to inputs;
- local mode: ``dag.test()`` runs both DAGs for real (2 epochs) on a temporary SQLite
  metadata DB, in a subprocess so this process's Airflow configuration stays untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
from airflow.dag_processing.dagbag import DagBag
from kubernetes.client import ApiClient

from xpuflow import Cluster, Compute, FlowError, PlacementError, RenderError, XpuflowError
from xpuflow.podspec import dicts
from xpuflow.airflow import MODE_ENV, airflow_pool, build_dag, write_dag_file
from xpuflow.dsl.load import load_flow as flow
from xpuflow.images import image_for
from xpuflow.steps import build_parser

ROOT = Path(__file__).resolve().parents[2]
FLOW_NAMES = ("train_gpu_export_npu", "train_tpu", "rag_index")
DAGS = ROOT / "dags"
HEAVY = ("torch", "onnx", "onnxruntime", "torch_xla", "kfp")


def dagbag(folder: Path, monkeypatch, mode: str, cluster: str = "gke") -> DagBag:
    monkeypatch.setenv(MODE_ENV, mode)
    monkeypatch.setenv("XPUFLOW_CLUSTER", cluster)
    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}
    return bag


def pod_of(task) -> dict:
    """The pod a task would start (a mapped task's, as one of its map indexes would: same spec but arguments)."""
    if type(task).__name__ == "MappedOperator":
        task = task.unmap({"arguments": ["--shard", "0/2"]})
    return ApiClient().sanitize_for_serialization(task.build_pod_request_obj(dry_run=True))


def task_ids(fl) -> list[str]:
    """The Airflow tasks of a flow: each step's, after the ``<task>-shards`` list of a task sharded by a parameter."""
    return [n for t in fl.tasks for n in ([f"{t.name}-shards"] if t.shards_param is not None else []) + [t.name]]


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize("mode", ["cluster", "local"])
def test_dag_files_parse_with_no_errors_and_follow_the_flows(monkeypatch, mode):
    bag = dagbag(DAGS, monkeypatch, mode)
    assert set(bag.dags) == set(FLOW_NAMES)
    kind = "KubernetesPodOperator" if mode == "cluster" else "PythonOperator"
    for name in FLOW_NAMES:
        dag, fl = bag.dags[name], flow(name)
        assert [t.task_id for t in dag.tasks] == task_ids(fl)
        assert mode in dag.tags
        for spec in fl.tasks:
            task = dag.get_task(spec.name)
            mapped = type(task).__name__ == "MappedOperator"
            assert (task.operator_class.__name__ if mapped else type(task).__name__) == kind
            assert mapped == (spec.shards_param is not None)
            lister = {f"{spec.name}-shards"} if mapped else set()
            assert task.upstream_task_ids == set(spec.inputs.values()) | lister
        assert {k: dag.params[k] for k in dag.params} == {k: p.default for k, p in fl.params.items()}


def test_dag_files_import_nothing_heavy():
    pattern = re.compile(r"^(import|from) (torch|onnx|onnxruntime|torch_xla|kfp)\b", re.MULTILINE)
    for path in DAGS.glob("*.py"):
        assert not pattern.search(path.read_text()), path
    script = (
        "import os, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "for mode in ('cluster', 'local'):\n"
        f"    os.environ[{MODE_ENV!r}] = mode\n"
        "    bag = DagBag(sys.argv[1])\n"
        f"    assert not bag.import_errors and len(bag.dags) == {len(FLOW_NAMES)}, bag.import_errors\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(DAGS)], capture_output=True, text=True, check=False, timeout=120,
                         env={**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "HEAVY []" in out.stdout


def test_mode_comes_from_the_env_and_the_argument_overrides_it(monkeypatch):
    monkeypatch.setenv(MODE_ENV, "local")
    assert type(build_dag("train_tpu").get_task("train_tpu")).__name__ == "PythonOperator"
    assert type(build_dag("train_tpu", mode="cluster").get_task("train_tpu")).__name__ == "KubernetesPodOperator"
    monkeypatch.setenv(MODE_ENV, "k8s")
    with pytest.raises(XpuflowError, match=r"XPUFLOW_AIRFLOW_MODE='k8s' is not valid: one of cluster, local"):
        build_dag("train_tpu")


# ------------------------------------------------------------------ cluster mode


@pytest.mark.parametrize(("name", "cluster"), [
    ("train_gpu_export_npu", "gke"), ("train_gpu_export_npu", "eks"), ("train_gpu_export_npu", "aks"),
    ("train_tpu", "gke"),
])
def test_cluster_mode_pods_carry_the_placement_and_accelerators_hold_pool_slots(monkeypatch, name, cluster):
    dag = dagbag(DAGS / f"{name}.py", monkeypatch, "cluster", cluster).dags[name]
    profile = Cluster.load(cluster)
    accelerator_tasks = 0
    for spec in flow(name).tasks:
        task = dag.get_task(spec.name)
        placement = profile.place(spec.compute)
        pod = pod_of(task)
        container = pod["spec"]["containers"][0]
        assert container["resources"] == {"requests": placement.requests, "limits": placement.limits}
        assert pod["spec"].get("nodeSelector", {}) == placement.node_selector
        assert pod["spec"].get("tolerations", []) == dicts(placement.tolerations)
        assert (pod["spec"].get("affinity") or None) == placement.scheduling().get("affinity")
        assert placement.labels.items() <= pod["metadata"]["labels"].items()
        assert container["image"] == image_for(spec.compute.kind)
        assert container["command"] == ["xpuflow", "step", spec.step.name]
        if placement.accelerator:
            accelerator_tasks += 1
            resource, count = placement.accelerator
            assert task.pool == f"xpuflow-{placement.kind}-{profile.name}" == airflow_pool(placement)[0]
            assert task.pool_slots == count == int(placement.limits[resource])
        else:
            assert task.pool == "default_pool" and task.pool_slots == 1
    assert accelerator_tasks == 1
    gpu_or_tpu = dag.get_task("train" if name == "train_gpu_export_npu" else "train_tpu")
    assert gpu_or_tpu.pool == {"train_gpu_export_npu": f"xpuflow-gpu-{cluster}", "train_tpu": "xpuflow-tpu-gke"}[name]
    assert gpu_or_tpu.pool_slots == {"train_gpu_export_npu": 1, "train_tpu": 8}[name]


def test_a_cluster_without_the_hardware_is_an_import_error_that_says_so(monkeypatch):
    monkeypatch.setenv(MODE_ENV, "cluster")
    monkeypatch.setenv("XPUFLOW_CLUSTER", "eks")
    bag = DagBag(dag_folder=str(DAGS))
    assert set(bag.dags) == {"train_gpu_export_npu", "rag_index"}
    [(path, error)] = bag.import_errors.items()
    assert path.endswith("train_tpu.py") and "cluster 'eks'" in error and "no node pool offers tpu v5e 2x4" in error
    monkeypatch.setenv(MODE_ENV, "local")  # local mode places nothing: runs anywhere
    assert DagBag(dag_folder=str(DAGS)).import_errors == {}


def test_arguments_render_to_the_step_cli_and_chain_outputs_through_the_artifact_root(monkeypatch):
    dag = dagbag(DAGS, monkeypatch, "cluster").dags["train_gpu_export_npu"]
    context = {"params": {**dag.params, "epochs": 2}, "run_id": "manual__1", "dag": dag,
               "var": {"value": {"xpuflow_artifact_root": "gs://bucket/xp"}}}
    parsed = {}
    for task in dag.tasks:
        argv = [jinja2.Template(a).render(**context) for a in task.arguments]
        parsed[task.task_id] = vars(build_parser(task.cmds[2]).parse_args(argv))
        assert parsed[task.task_id]["output"] == f"gs://bucket/xp/train_gpu_export_npu/manual__1/{task.task_id}"
    assert parsed["preprocess"]["input"] == "builtin:digits"
    assert parsed["train"]["epochs"] == 2 and parsed["train"]["data"] == parsed["preprocess"]["output"]
    assert parsed["evaluate"]["model"] == parsed["export"]["model"] == parsed["train"]["output"]
    assert parsed["export"]["target"] == "qnn-htp"
    # spot training resumes on retry: its checkpoints live beside the outputs, per run
    assert parsed["train"]["checkpoint_dir"] == "gs://bucket/xp/train_gpu_export_npu/manual__1/_checkpoints/train"
    # with no Variable set, the template falls back to the provider's bucket
    default = jinja2.Template(dag.get_task("train").arguments[-1]).render(**{**context, "var": {"value": {}}})
    assert default.startswith("gs://xpuflow-artifacts/train_gpu_export_npu/manual__1/")


def test_build_dag_options_reach_the_pods():
    dag = build_dag("train_tpu", mode="cluster", dag_id="tpu_ml", namespace="ml", service_account_name="xpuflow",
                    image={"tpu": "registry.example/xpuflow-tpu:1"}, artifact_root="s3://b/x/")
    tpu, prep = pod_of(dag.get_task("train_tpu")), pod_of(dag.get_task("preprocess"))
    assert dag.dag_id == "tpu_ml" and tpu["metadata"]["namespace"] == "ml"
    assert tpu["spec"]["serviceAccountName"] == "xpuflow"
    assert tpu["spec"]["containers"][0]["image"] == "registry.example/xpuflow-tpu:1"
    assert prep["spec"]["containers"][0]["image"] == image_for("cpu")
    assert dag.get_task("train_tpu").arguments[-1] == "s3://b/x/{{ dag.dag_id }}/{{ run_id }}/train_tpu"


def test_multi_host_tpu_is_refused():
    big = {"train_tpu": Compute.tpu(version="v6e", topology="4x4")}
    with pytest.raises(RenderError, match=r"step 'train_tpu': KubernetesPodOperator cannot express multi_host"):
        build_dag("train_tpu", mode="cluster", compute=big)


def test_write_dag_file_writes_a_cheap_file_for_one_cluster(tmp_path, monkeypatch):
    path = write_dag_file("train_gpu_export_npu", "eks", tmp_path / "dags" / "xp_eks.py")
    assert sorted(p.name for p in path.parent.iterdir()) == ["xp_eks.py"]  # no temp file left
    assert not re.search(r"^(import|from) (torch|onnx|onnxruntime|torch_xla|kfp)\b", path.read_text(), re.MULTILINE)
    monkeypatch.setenv("XPUFLOW_CLUSTER", "gke")  # the written file names its cluster; the env does not apply
    dag = dagbag(path.parent, monkeypatch, "cluster").dags["train_gpu_export_npu"]
    eks = Cluster.load("eks")
    for spec in flow("train_gpu_export_npu").tasks:
        placement = eks.place(spec.compute)
        assert pod_of(dag.get_task(spec.name))["spec"].get("nodeSelector", {}) == placement.node_selector
    assert dag.get_task("train").pool == "xpuflow-gpu-eks"
    # a flow the cluster cannot place fails when the file is written, not in the DAG processor
    with pytest.raises(PlacementError, match="no node pool offers tpu v5e 2x4"):
        write_dag_file("train_tpu", "eks", tmp_path / "never.py")
    assert not (tmp_path / "never.py").exists()


# ------------------------------------------------------------------ local mode, end to end

RUN = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
assert not bag.import_errors, bag.import_errors
run = bag.get_dag(sys.argv[2]).test(run_conf=json.loads(sys.argv[3]))
states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
with open(sys.argv[4], "w") as out:
    json.dump({"state": str(run.state), "run_id": run.run_id, "tasks": states}, out)
"""


def run_local(env: dict[str, str], name: str, tmp_path: Path, conf: dict | None = None) -> tuple[Path, str]:
    """``dag.test()`` of dags/<name>.py (2 epochs unless ``conf`` says otherwise); returns the run directory and log."""
    result = tmp_path / "result.json"
    conf = {"epochs": 2} if conf is None else conf
    out = subprocess.run([sys.executable, "-c", RUN, str(DAGS / f"{name}.py"), name, json.dumps(conf),
                          str(result)], env=env, capture_output=True, text=True, check=False, timeout=300)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    run = json.loads(result.read_text())
    assert run["state"] == "success", log[-4000:]
    assert run["tasks"] == {t: "success" for t in task_ids(flow(name))}
    run_dirs = list((Path(env["XPUFLOW_LOCAL_ROOT"]) / name).iterdir())
    assert len(run_dirs) == 1 and run_dirs[0].name == re.sub(r"[^A-Za-z0-9._-]", "_", run["run_id"])
    return run_dirs[0], log


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_local_mode_runs_train_gpu_export_npu_end_to_end(airflow_env, tmp_path):
    run, log = run_local(airflow_env, "train_gpu_export_npu", tmp_path)
    assert sorted(p.name for p in run.iterdir()) == ["_checkpoints", "evaluate", "export", "preprocess", "train"]
    assert [p.name for p in (run / "_checkpoints").iterdir()] == ["train"]  # checkpoints per run and task
    assert (run / "preprocess" / "train.parquet").is_file()
    metrics = json.loads((run / "train" / "metrics.json").read_text())
    assert metrics["step"] == "train" and len(metrics["epochs"]) == 2 and metrics["final"]["epoch"] == 2
    assert metrics["final"]["val_accuracy"] > 0.5
    evaluation = json.loads((run / "evaluate" / "evaluation.json").read_text())
    assert evaluation["rows"] > 0 and evaluation["accuracy"] > 0.5
    record = json.loads((run / "export" / "export.json").read_text())
    assert record["target"] == "qnn-htp" and record["gates"]["passed"] is True
    # the export read the model the train task wrote (handed over through XCom)
    assert record["source_model"]["sha256"] == sha256(run / "train" / "model.pt")
    for file in record["files"]:
        assert (run / "export" / file).is_file()
    assert "no GPU visible, training on the CPU" in log


def test_local_mode_runs_train_tpu_end_to_end_on_cpu_without_torch_xla(airflow_env, tmp_path):
    run, log = run_local(airflow_env, "train_tpu", tmp_path)
    assert sorted(p.name for p in run.iterdir()) == ["_checkpoints", "export", "preprocess", "train_tpu"]
    metrics = json.loads((run / "train_tpu" / "metrics.json").read_text())
    assert metrics["step"] == "train_tpu" and len(metrics["epochs"]) == 2
    assert metrics["device"] == "cpu"  # no torch_xla in this venv: plain PyTorch on the CPU, and it says so
    assert "torch_xla is not installed; training with plain PyTorch on cpu" in log
    record = json.loads((run / "export" / "export.json").read_text())
    assert record["target"] == "cpu-int8" and record["gates"]["passed"] is True
    assert record["source_model"]["sha256"] == sha256(run / "train_tpu" / "model.pt")


def test_local_mode_runs_rag_index_end_to_end(airflow_env, tmp_path):
    run, log = run_local(airflow_env, "rag_index", tmp_path, conf={})
    assert sorted(p.name for p in run.iterdir()) == ["chunk", "embed", "index"]
    record = json.loads((run / "index" / "index.json").read_text())
    assert record["recall_at_5"] >= 0.9 and (run / "index" / "index.faiss").is_file()
    assert "no GPU visible" in log  # embed fell back to the CPU locally, and said so


def test_rag_embed_waits_in_the_gpu_pool_on_the_inference_node_pool(monkeypatch):
    dag = dagbag(DAGS / "rag_index.py", monkeypatch, "cluster", "gke").dags["rag_index"]
    embed = dag.get_task("embed")
    pod = pod_of(embed)
    assert embed.pool == "xpuflow-gpu-gke" and embed.pool_slots == 1
    assert pod["spec"]["nodeSelector"]["cloud.google.com/gke-nodepool"] == "gpu-l4-inference"
    for cpu_task in ("chunk", "index"):
        assert dag.get_task(cpu_task).pool == "default_pool"


def test_secret_env_reaches_only_its_pod_and_the_index_engine_is_a_dag_param():
    secret_env = {"index": {"XPUFLOW_PGVECTOR_DSN": ("rag-db", "dsn")}}
    dag = build_dag("rag_index", mode="cluster", secret_env=secret_env)
    index, embed = pod_of(dag.get_task("index")), pod_of(dag.get_task("embed"))
    env = index["spec"]["containers"][0]["env"]
    assert {"name": "XPUFLOW_PGVECTOR_DSN", "valueFrom": {"secretKeyRef": {"name": "rag-db", "key": "dsn"}}} in env
    assert not [e for e in embed["spec"]["containers"][0].get("env") or [] if "valueFrom" in e]
    assert (dag.params["engine"], dag.params["table"]) == ("faiss", "xpuflow_chunks")
    arguments = dag.get_task("index").arguments
    assert arguments[arguments.index("--engine") + 1] == "{{ params['engine'] }}"
    with pytest.raises(FlowError, match=r"secret_env names 'indexer', not tasks of rag_index \(chunk, embed, "
                                           r"index\)"):
        build_dag("rag_index", mode="cluster", secret_env={"indexer": secret_env["index"]})
