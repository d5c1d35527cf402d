"""preprocess in shards on Airflow: mapped tasks (``.expand()``), one per shard, in cluster mode (pods), and in local
mode (``dag.test()`` on SQLite, 3 shards from the trigger's conf) a user's flow file whose splits equal one process's and whose train task reads them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq

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

RUN = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
assert not bag.import_errors, bag.import_errors
run = bag.get_dag("prep_sharded").test(run_conf={"shards": 3})
states = {}
for ti in run.get_task_instances():
    states.setdefault(ti.task_id, []).append(str(ti.state))
with open(sys.argv[2], "w") as out:
    json.dump({"state": str(run.state), "tasks": states}, out)
"""


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
    result = tmp_path / "result.json"
    out = subprocess.run([sys.executable, "-c", RUN, str(dags / "prep_sharded.py"), str(result)],
                         env={**airflow_env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags)},
                         capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    run = json.loads(result.read_text())
    assert run["state"] == "success", log[-4000:]
    assert run["tasks"] == {"preprocess-shards": ["success"], "preprocess": ["success"] * 3, "train": ["success"]}
    (run_dir,) = (Path(airflow_env["XPUFLOW_LOCAL_ROOT"]) / "prep_sharded").iterdir()
    preprocess(output=str(tmp_path / "one"), batch_rows=300)
    assert (run_dir / "preprocess" / "stats.json").read_bytes() == (tmp_path / "one" / "stats.json").read_bytes()
    for split in SPLITS:
        assert pq.read_table(run_dir / "preprocess" / f"{split}.parquet").equals(
            pq.read_table(tmp_path / "one" / f"{split}.parquet")), split
    assert (run_dir / "train" / "model.pt").exists()
