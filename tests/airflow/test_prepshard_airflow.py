"""preprocess in shards on Airflow: mapped tasks (``.expand()``), one per shard, in cluster mode (pods), and in local
mode (``dag.test()`` on SQLite, 3 shards from the trigger's conf) a user's flow file whose splits equal one
process's and whose train task reads them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pyarrow.parquet as pq
from dagruns import dag_test

from xpuflow.airflow import build_dag
from xpuflow.dsl.load import load_flow

FLOW = '''
from xpuflow import flow
from xpuflow.steps.preprocess import preprocess
from xpuflow.steps.train import train


@flow(name="big_table")
def big_table(shards: int = 2):
    """preprocess in shards -> train"""
    data = preprocess(batch_rows=300).with_shards(shards)
    train(data=data.output, epochs=1, batch_size=256)
'''


def test_cluster_mode_maps_one_preprocess_pod_per_shard(monkeypatch, tmp_path):
    monkeypatch.setenv("XPUFLOW_CLUSTER", "gke")
    (tmp_path / "big_table.py").write_text(textwrap.dedent(FLOW))
    dag = build_dag(load_flow(f"{tmp_path / 'big_table.py'}:big_table").with_shards(preprocess=3), mode="cluster")
    task = dag.get_task("preprocess")
    assert type(task).__name__ == "MappedOperator"
    mapped = task.expand_input.value["arguments"]
    assert [a[a.index("--shard") + 1] for a in mapped] == ["0/3", "1/3", "2/3"]
    assert dag.get_task("train").upstream_task_ids == {"preprocess"}


def test_local_mode_runs_preprocess_in_the_shards_a_trigger_asks_then_train(airflow_env, tmp_path):
    from xpuflow.steps.preprocess import SPLITS, preprocess

    dags = tmp_path / "dags"
    dags.mkdir()
    (tmp_path / "big_table.py").write_text(textwrap.dedent(FLOW))
    (dags / "prep_sharded.py").write_text(textwrap.dedent(f"""
        from xpuflow.airflow import build_dag
        from xpuflow.dsl.load import load_flow

        dag = build_dag(load_flow({str(tmp_path / 'big_table.py:big_table')!r}), mode="local", dag_id="prep_sharded")
    """))
    (run,), log = dag_test(dags / "prep_sharded.py", "prep_sharded", [{"shards": 3}], airflow_env)
    assert run["state"] == "success", log[-4000:]
    assert run["tasks"] == {"preprocess-shards": ["success"], "preprocess": ["success"] * 3, "train": ["success"]}
    (run_dir,) = (Path(airflow_env["XPUFLOW_LOCAL_ROOT"]) / "prep_sharded").iterdir()
    preprocess(output=str(tmp_path / "one"), batch_rows=300)
    assert (run_dir / "preprocess" / "stats.json").read_bytes() == (tmp_path / "one" / "stats.json").read_bytes()
    for split in SPLITS:
        assert pq.read_table(run_dir / "preprocess" / f"{split}.parquet").equals(
            pq.read_table(tmp_path / "one" / f"{split}.parquet")), split
    assert (run_dir / "train" / "model.pt").exists()
