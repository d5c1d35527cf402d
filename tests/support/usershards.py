"""A user's own sharded step (a ``shard: str`` parameter, as docs/scale-out.md "your own step" says) and a flow
using it, written as a package outside xpuflow/ by the tests that attack sharding as an outsider."""

from __future__ import annotations

from pathlib import Path

SOURCE = '''
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


def write_package(root: Path, name: str) -> Path:
    """``<root>/<name>/steps.py`` (the step ``squares`` and the flow ``sq_flow``); returns the folder to put on the
    path."""
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "steps.py").write_text(SOURCE)
    return root
