"""A sharded task on Airflow: mapped tasks (``.expand()``), one per shard, in cluster mode (pods) and local mode
(``dag.test()`` on SQLite: rag_index with embed in 2 shards equals the unsharded embeddings)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
from dagruns import dag_test

from xpuflow.airflow import build_dag
from xpuflow.dsl.load import load_flow


def test_cluster_mode_maps_one_pod_per_shard(monkeypatch):
    monkeypatch.setenv("XPUFLOW_CLUSTER", "gke")
    dag = build_dag(load_flow("rag_index").with_shards(embed=3), mode="cluster")
    embed = dag.get_task("embed")
    assert type(embed).__name__ == "MappedOperator"
    mapped = embed.expand_input.value["arguments"]
    assert [a[a.index("--shard") + 1] for a in mapped] == ["0/3", "1/3", "2/3"]
    assert dag.get_task("index").upstream_task_ids == {"embed"}
    assert type(dag.get_task("chunk")).__name__ == "KubernetesPodOperator"


def test_local_mode_runs_rag_index_with_embed_in_two_shards(airflow_env, tmp_path):
    from xpuflow.steps.rag.embed import read_embeddings

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "rag_sharded.py").write_text(textwrap.dedent("""
        from xpuflow.airflow import build_dag
        from xpuflow.dsl.load import load_flow

        dag = build_dag(load_flow("rag_index").with_shards(embed=2), mode="local", dag_id="rag_sharded")
    """))
    (run,), log = dag_test(dags / "rag_sharded.py", "rag_sharded", [{}], airflow_env)
    assert run["state"] == "success", log[-4000:]
    assert run["tasks"] == {"chunk": ["success"], "embed": ["success", "success"], "index": ["success"]}
    (run_dir,) = (Path(airflow_env["XPUFLOW_LOCAL_ROOT"]) / "rag_sharded").iterdir()
    ids, vectors, summary = read_embeddings(str(run_dir / "embed"), "t")
    assert summary["processes"] == 2
    from xpuflow.steps.rag.embed import embed

    one = embed(data=str(run_dir / "chunk"), output=str(tmp_path / "one"))
    ref_ids, ref, _ = read_embeddings(str(tmp_path / "one"), "t")
    assert ids == ref_ids and np.abs(vectors - ref).max() <= 1e-5 and one["rows"] == len(ids)
    assert json.loads((run_dir / "index" / "index.json").read_text())["recall_at_5"] >= 0.9


def test_cluster_mode_count_from_a_flow_parameter_is_listed_when_the_dag_runs(monkeypatch):
    from xpuflow.airflow.fanout import shard_values

    monkeypatch.setenv("XPUFLOW_CLUSTER", "gke")
    dag = build_dag(load_flow("rag_index"), mode="cluster")  # shards is a parameter (default 1)
    embed, lister = dag.get_task("embed"), dag.get_task("embed-shards")
    assert type(embed).__name__ == "MappedOperator"
    assert embed.upstream_task_ids == {"chunk", "embed-shards"}
    base = lister.op_kwargs["base"]
    assert "--shard" not in base and lister.op_kwargs["count"] == "{{ params['shards'] }}"
    listed = shard_values("3", base, "shards", "embed")
    assert [a[a.index("--shard") + 1] for a in listed] == ["0/3", "1/3", "2/3"]
    assert shard_values("1", base, "shards", "embed") == [base]  # one process: no --shard at all
    assert "processes (shards)" in dag.params.get_param("shards").description


def test_a_trigger_conf_sets_the_fan_out_width_and_a_bad_count_fails_in_one_line(airflow_env, tmp_path):
    from xpuflow.steps.rag.embed import read_embeddings

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "rag_conf.py").write_text(textwrap.dedent("""
        from xpuflow.airflow import build_dag
        dag = build_dag("rag_index", mode="local", dag_id="rag_conf")
    """))
    (bad, good), log = dag_test(dags / "rag_conf.py", "rag_conf", [{"shards": 0}, {"shards": 3}], airflow_env)
    assert bad["state"] == "failed" and bad["tasks"]["embed-shards"] == ["failed"], bad
    assert "task 'embed': parameter shards=0 is not valid: a whole number of shards from 1 to" in log
    assert good["state"] == "success", log[-4000:]
    assert good["tasks"]["embed"] == ["success"] * 3 and good["tasks"]["embed-shards"] == ["success"]
    run_dir = Path(airflow_env["XPUFLOW_LOCAL_ROOT"]) / "rag_conf" / good["run_id"].replace(":", "_").replace("+", "_")
    _, _, summary = read_embeddings(str(run_dir / "embed"), "t")
    assert summary["processes"] == 3  # the run's conf, not the DAG's default (1), decided the width
