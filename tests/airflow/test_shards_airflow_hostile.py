"""A user's own sharded step (a ``shard: str`` parameter, docs/scale-out.md) in a user's flow on Airflow, the shard
count a flow parameter set by the trigger's conf: what Airflow's integer ``Param`` accepts (3.0 is an integer to
JSON Schema) runs that many shards; what it does not, or a count out of range, fails in one line before any shard."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from dagruns import dag_test
from usershards import write_package


def test_a_users_sharded_step_takes_its_count_from_the_trigger_conf(airflow_env, tmp_path):
    src = write_package(tmp_path / "src", "h16_airflow_user")
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "sq.py").write_text(textwrap.dedent("""
        from xpuflow.airflow import build_dag
        from h16_airflow_user.steps import sq_flow
        dag = build_dag(sq_flow, mode="local", dag_id="sq")
    """))
    env = {**airflow_env, "PYTHONPATH": f"{src}:{airflow_env.get('PYTHONPATH', '')}"}
    (whole, negative), log = dag_test(dags / "sq.py", "sq", [{"shards": 3.0}, {"shards": -1}], env)
    # 3.0: an integer to Airflow's Param; before, the shards task refused it: "parameter shards='3.0' is not valid"
    assert whole["state"] == "success", log[-3000:]
    assert whole["tasks"] == {"squares-shards": ["success"], "squares": ["success"] * 3}
    run_dir = Path(airflow_env["XPUFLOW_LOCAL_ROOT"]) / "sq" / whole["run_id"].replace(":", "_").replace("+", "_")
    assert json.loads((run_dir / "squares" / "values.json").read_text()) == [i * i for i in range(9)]
    assert json.loads((run_dir / "squares" / "done.json").read_text())["processes"] == 3
    assert negative["state"] == "failed" and negative["tasks"]["squares"] == ["upstream_failed"]
    assert "task 'squares': parameter shards=-1 is not valid: a whole number of shards from 1 to" in log
