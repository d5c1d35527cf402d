"""Parse cost of each DAG file in dags/ against a DAG holding one KubernetesPodOperator.

    .venv-airflow/bin/python bench/dag_parse.py [--runs 7]

Airflow's DAG processor parses each file in a child process that already has
airflow imported, and fills a ``DagBag`` from the file. Each measurement here is a
fresh interpreter that imports ``airflow.dag_processing.dagbag.DagBag`` first (not
timed), then times ``DagBag(dag_folder=<file>)``: the file's import (the provider,
the kubernetes client, xpuflow, the cluster profile) and the DAG's collection. The
baseline is a file with one KubernetesPodOperator task and nothing else. Rounds
interleave the files; the median of ``--runs`` rounds is reported, after one
discarded warm-up round. Goal: each file <= 1.2x the baseline in cluster mode
(the default), and no torch, onnx, onnxruntime, torch_xla or kfp in sys.modules
after the parse (in either mode).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "onnx", "onnxruntime", "torch_xla", "kfp")
GOAL = 1.2

BASELINE = '''from datetime import datetime

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import DAG

with DAG("baseline_one_kpo", schedule=None, start_date=datetime(2025, 1, 1), catchup=False):
    KubernetesPodOperator(task_id="step", name="step", image="busybox:1.37", cmds=["true"])
'''

PROBE = '''import json, sys, time
from airflow.dag_processing.dagbag import DagBag
t = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
seconds = time.perf_counter() - t
print("XPUFLOW_BENCH " + json.dumps({
    "seconds": seconds,
    "stat_seconds": sum(s.duration.total_seconds() for s in bag.dagbag_stats),
    "dags": sorted(bag.dags), "errors": {k: v[-300:] for k, v in bag.import_errors.items()},
    "heavy": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY),
}))
'''.replace("HEAVY", repr(HEAVY))


def parse(path: Path, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, env=env, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("XPUFLOW_BENCH "))
    result = json.loads(line.split(" ", 1)[1])
    if result["errors"] or not result["dags"]:
        raise SystemExit(f"{path}: import errors: {result['errors']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xpuflow-dag-parse-") as tmp:
        baseline = Path(tmp, "baseline_one_kpo.py")
        baseline.write_text(BASELINE)
        # and a user's own flow (examples/my_project) as `xpuflow compile --backend airflow` writes its DAG file
        users = Path(tmp, "my_model_card.py")
        subprocess.run([sys.executable, "-m", "xpuflow", "compile", str(ROOT / "examples" / "my_project" / "my_flow.py"),
                        "--backend", "airflow", "--cluster", "gke", "-o", str(users)], check=True, capture_output=True)
        files = [baseline] + sorted(ROOT.joinpath("dags").glob("*.py")) + [users]
        # A DAG processor runs with bytecode caches, as round 0 below assumes: an environment with
        # PYTHONDONTWRITEBYTECODE set would recompile every module not shipped as .pyc (xpuflow's own source, the
        # flow and DAG files) in every round while the baseline's installed modules load from .pyc. Caches go to a
        # prefix in the temporary folder, for every file alike, and never into the repository.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(AIRFLOW_HOME=tmp, AIRFLOW__CORE__LOAD_EXAMPLES="False",
                   PYTHONPYCACHEPREFIX=str(Path(tmp, "pycache")))
        cases = [(f, "cluster") for f in files] + [(f, "local") for f in files[1:]]
        times: dict[tuple[Path, str], list[float]] = {c: [] for c in cases}
        heavy: dict[tuple[Path, str], list[str]] = {}
        for round_ in range(args.runs + 1):
            for path, mode in cases:
                result = parse(path, {**env, "XPUFLOW_AIRFLOW_MODE": mode})
                heavy[(path, mode)] = result["heavy"]
                if round_:  # round 0 warms the bytecode caches
                    times[(path, mode)].append(result["seconds"])
    base = statistics.median(times[(baseline, "cluster")])
    print(f"DagBag fill time, median of {args.runs} fresh processes ({sys.executable})")
    print(f"{'file':32} {'mode':8} {'median s':>9} {'ratio':>6}  heavy modules after parse")
    worst = 0.0
    for path, mode in cases:
        median = statistics.median(times[(path, mode)])
        ratio = median / base
        if path != baseline and mode == "cluster":
            worst = max(worst, ratio)
        name = "(baseline) one KPO" if path == baseline else f"{path.parent.name}/{path.name}"
        print(f"{name:32} {mode:8} {median:9.3f} {ratio:5.2f}x  {', '.join(heavy[(path, mode)]) or 'none'}")
    clean = not any(heavy.values())
    from figures import Ratio, record

    record("dag_parse", {"baseline_s": base, "runs": args.runs, "heavy": {f"{p.name}:{m}": h for (p, m), h in heavy.items()},
                         "median_s": {f"{p.name}:{m}": statistics.median(t) for (p, m), t in times.items()}},
           [Ratio(f"dags/{p.name} ({m})", statistics.median(times[(p, m)]) / base, goal=GOAL if m == "cluster" else None,
                  better="lower") for p, m in cases if p != baseline],
           title="DagBag fill time vs an empty DAG with one KubernetesPodOperator")
    print(f"worst cluster-mode ratio {worst:.2f}x (goal <= {GOAL}x): {'ok' if worst <= GOAL else 'OVER'}; "
          f"torch/onnx/onnxruntime/torch_xla/kfp imported: {'no' if clean else 'YES'}")
    if worst > GOAL or not clean:
        sys.exit(1)


if __name__ == "__main__":
    main()
