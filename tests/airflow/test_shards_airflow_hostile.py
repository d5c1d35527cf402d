"""A user's own sharded step (a ``shard: str`` parameter, docs/scale-out.md) in a user's flow on Airflow, the shard
count a flow parameter set by the trigger's conf: what Airflow's integer ``Param`` accepts (3.0 is an integer to
JSON Schema) runs that many shards; what it does not, or a count out of range, fails in one line before any shard."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from dagruns import dag_test

STEP = '''
import json
from xpuflow import Compute, flow
from xpuflow.dsl.step import step
from xpuflow.steps.io import write_json
from xpuflow.steps.shards import assemble, finish_part, parse, part, run_key


def merge(parts, staging):
    values = sorted(v for folder, _ in parts for v in json.loads((folder / "values.json").read_text()))
    (staging / "values.json").write_text(json.dumps(values))
    write_json(staging / "done.json", {"count": len(values), "processes": len(parts)})
    return {"count": len(values)}


@step(compute=Compute.cpu(cpu="1", memory="1Gi"), outputs=("output",))
def squares(output: str = "out/sq", n: int = 10, shard: str = "") -> dict:
    sh = parse(shard, "squares")
    if sh is None:
        from xpuflow.steps.publish import publish
        with publish(output, who="squares", markers=("done.json",)) as staging:
            (staging / "values.json").write_text(json.dumps([i * i for i in range(n)]))
            write_json(staging / "done.json", {"count": n, "processes": 1})
        return {"count": n}
    key = run_key(n=n)
    with part(output, sh, who="squares", key=key) as folder:
        (folder / "values.json").write_text(json.dumps([i * i for i in range(n) if sh.owns(i)]))
        finish_part(folder, sh, key, {"n": n}, who="squares", markers=("done.json",), merge=merge)
    return assemble(output, sh, who="squares", key=key, markers=("done.json",), merge=merge) or {}


@flow(name="sq_flow")
def sq_flow(shards: int = 1, n: int = 9):
    squares(n=n).with_shards(shards)
'''


def test_a_users_sharded_step_takes_its_count_from_the_trigger_conf(airflow_env, tmp_path):
    pkg = tmp_path / "src" / "h16_airflow_user"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "steps.py").write_text(STEP)
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "sq.py").write_text(textwrap.dedent("""
        from xpuflow.airflow import build_dag
        from h16_airflow_user.steps import sq_flow
        dag = build_dag(sq_flow, mode="local", dag_id="sq")
    """))
    env = {**airflow_env, "PYTHONPATH": f"{pkg.parent}:{airflow_env.get('PYTHONPATH', '')}"}
    (whole, negative), log = dag_test(dags / "sq.py", "sq", [{"shards": 3.0}, {"shards": -1}], env)
    # 3.0: an integer to Airflow's Param; before, the shards task refused it: "parameter shards='3.0' is not valid"
    assert whole["state"] == "success", log[-3000:]
    assert whole["tasks"] == {"squares-shards": ["success"], "squares": ["success"] * 3}
    run_dir = Path(airflow_env["XPUFLOW_LOCAL_ROOT"]) / "sq" / whole["run_id"].replace(":", "_").replace("+", "_")
    assert json.loads((run_dir / "squares" / "values.json").read_text()) == [i * i for i in range(9)]
    assert json.loads((run_dir / "squares" / "done.json").read_text())["processes"] == 3
    assert negative["state"] == "failed" and negative["tasks"]["squares"] == ["upstream_failed"]
    assert "task 'squares': parameter shards=-1 is not valid: a whole number of shards from 1 to" in log
