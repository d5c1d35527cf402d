"""KFP pipelines and components: compiled IR placements match the flows, local end-to-end runs, no drift."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from normalize import from_kfp_ir

from xpuflow import Cluster
from xpuflow.podspec import dicts
from xpuflow.commands.components import render_all
from xpuflow.commands.pipelines import kfp_pipeline
from xpuflow.dsl.load import load_flow as flow
from xpuflow.lint import lint

ROOT = Path(__file__).resolve().parent.parent
FLOW_NAMES = ("train_gpu_export_npu", "train_tpu", "rag_index")


def test_components_folder_matches_the_code():
    for rel, content in render_all().items():
        path = ROOT / "components" / rel
        assert path.exists(), f"{rel} is missing: run python -m xpuflow.commands.components components/"
        assert path.read_text() == content, f"{rel} drifted from the built-in steps: regenerate it"


def lint_clean_pairs():
    return [(f, c) for f in FLOW_NAMES for c in ("gke", "eks", "aks", "generic")
            if not [x for x in lint(flow(f), Cluster.load(c)) if x.level == "error"]]


@pytest.mark.parametrize(("name", "cluster"), lint_clean_pairs())
def test_compiled_pipeline_placements_match_the_plan(name, cluster, tmp_path):
    from kfp import compiler

    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(kfp_pipeline(name, cluster), str(path))
    docs = list(yaml.safe_load_all(path.read_text()))
    c = Cluster.load(cluster)
    for spec in flow(name).tasks:
        p = c.place(spec.compute)
        want = {"requests": p.requests, "limits": p.limits, "nodeSelector": p.node_selector,
                "tolerations": sorted(dicts(p.tolerations), key=lambda t: tuple(str(t.get(k)) for k in ("key", "operator", "value", "effect"))),
                "affinity": p.scheduling().get("affinity")}
        assert from_kfp_ir(docs, spec.name.replace("_", "-")) == want, f"{name}/{spec.name} on {cluster}"


def test_every_flow_compiles_somewhere():
    assert {f for f, _ in lint_clean_pairs()} == set(FLOW_NAMES)


def run_local(pipeline: str, root: Path, *params: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "xpuflow", "run", pipeline, "--root", str(root)]
    for p in params:
        args += ["--param", p]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def only_run(root: Path) -> Path:
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    return run


def test_train_gpu_export_npu_runs_end_to_end_locally(tmp_path):
    proc = run_local("train_gpu_export_npu", tmp_path)
    run = only_run(tmp_path)
    model = run / "train" / "output"
    assert (model / "model.pt").exists() and (model / "curves.png").exists()
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["final"]["val_accuracy"] > 0.9 and metrics["device"] == "cpu"
    evaluation = json.loads((run / "evaluate" / "output" / "evaluation.json").read_text())
    assert evaluation["accuracy"] > 0.9 and len(evaluation["confusion_matrix"]) == 10
    export = json.loads((run / "export" / "output" / "export.json").read_text())
    assert export["target"] == "qnn-htp" and export["execution_provider"] == "QNNExecutionProvider"
    assert export["accuracy"]["agreement"] >= 0.99
    assert "summary" in proc.stdout and "gpu-l4-training" in proc.stdout and "[4/4]" in proc.stdout


def test_train_tpu_pipeline_runs_end_to_end_locally(tmp_path):
    run_local("train_tpu", tmp_path, "epochs=8")
    run = only_run(tmp_path)
    metrics = json.loads((run / "train-tpu" / "output" / "metrics.json").read_text())
    assert metrics["step"] == "train_tpu" and metrics["device"] == "cpu"  # no torch_xla in the main venv: said so
    export = json.loads((run / "export" / "output" / "export.json").read_text())
    assert export["target"] == "cpu-int8" and (run / "export" / "output" / "model.int8.onnx").exists()


def test_rag_index_pipeline_writes_a_pgvector_table_with_the_dsn_from_the_env(pg, tmp_path, monkeypatch):
    import psycopg

    monkeypatch.setenv("XPUFLOW_PGVECTOR_DSN", pg)  # what a Secret gives the pod; never a pipeline parameter
    run_local("rag_index", tmp_path, "engine=pgvector", "table=rag_pipeline")
    record = json.loads((only_run(tmp_path) / "index" / "output" / "index.json").read_text())
    assert record["engine"] == "pgvector" and record["table"] == "rag_pipeline" and record["recall_at_5"] >= 0.9
    assert "s3cret-pw" not in json.dumps(record)
    with psycopg.connect(pg) as conn:
        assert conn.execute("SELECT count(*) FROM rag_pipeline").fetchone() == (record["vectors"],)


def test_rag_index_pipeline_gives_the_index_task_the_secret_and_nothing_else(tmp_path, monkeypatch):
    from kfp import compiler

    from xpuflow.kfp import pipeline

    monkeypatch.setenv("XPUFLOW_PGVECTOR_SECRET", "rag-db")  # read when the flow file is loaded
    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(pipeline(flow(str(ROOT / "pipelines" / "rag_index.py")), "gke"), str(path))
    platform = [d for d in yaml.safe_load_all(path.read_text()) if "platforms" in d][0]
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    with_secrets = {name: spec["secretAsEnv"] for name, spec in executors.items() if "secretAsEnv" in spec}
    assert list(with_secrets) == ["exec-index"]
    (entry,) = with_secrets["exec-index"]
    assert entry["keyToEnv"] == [{"secretKey": "dsn", "envVar": "XPUFLOW_PGVECTOR_DSN"}]
    assert "rag-db" in json.dumps(entry)


def test_rag_index_pipeline_runs_end_to_end_locally(tmp_path):
    proc = run_local("rag_index", tmp_path)
    run = only_run(tmp_path)
    record = json.loads((run / "index" / "output" / "index.json").read_text())
    assert record["recall_at_5"] >= 0.9 and (run / "index" / "output" / "index.faiss").is_file()
    assert re.search(r"embed\s+on gke: gpu-l4-inference", proc.stdout)  # the inference pool, not the training one


def test_training_components_expose_the_model_path_and_the_checkpoint_options():
    """Issue 12 item 6: the train / train_tpu components take what `xpuflow step train` takes (a user's own model
    as package.module:factory, its kwargs, checkpoint options), because both come from the step's declaration."""
    from xpuflow.kfp import components as xc
    from xpuflow.steps import build_parser

    for name in ("train", "train_tpu"):
        inputs = getattr(xc, name).component_spec.inputs
        assert inputs["model"].default == "xpuflow.steps.models:mlp" and inputs["model_kwargs"].default == "{}"
        assert inputs["checkpoint_dir"].default == "" and inputs["checkpoint_every"].default == 50
        cli = {a.dest for a in build_parser(name)._actions} - {"help", "data", "output"}
        assert cli == set(inputs) - {"data"}, name
