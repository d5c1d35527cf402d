"""Import cost of the core: `import xpuflow` and `xpuflow.render.kubernetes`.

Prints the median import time over fresh interpreters, against a baseline run in
the same process loop (`python -c pass`, the interpreter's own start-up), and the
modules the import pulls in. Goal: under 150 ms, and no torch, onnx, onnxruntime,
kfp, airflow or kubernetes client.

    .venv/bin/python bench/import_time.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "onnx", "onnxruntime", "torch_xla", "kfp", "airflow", "kubernetes")
PROBE = (
    "import sys, time, json; t = time.perf_counter(); import xpuflow, xpuflow.render.kubernetes; "
    "dt = time.perf_counter() - t; print(json.dumps({'seconds': dt, 'modules': sorted(sys.modules)}))"
)


def run(code: str) -> tuple[float, dict]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-X", "frozen_modules=on", "-c", code], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    return wall, (json.loads(out.stdout) if out.stdout.strip() else {})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    before = set(json.loads(subprocess.run([sys.executable, "-c", "import sys, json; print(json.dumps(sorted(sys.modules)))"],
                                           capture_output=True, text=True, check=True).stdout))
    base, imp, wall = [], [], []
    modules: list[str] = []
    for _ in range(args.runs):
        base.append(run("pass")[0])
        w, data = run(PROBE)
        wall.append(w)
        imp.append(data["seconds"])
        modules = data["modules"]
    heavy = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
    added = sorted({m.split(".")[0] for m in modules} - {m.split(".")[0] for m in before})
    print(f"import xpuflow + xpuflow.render.kubernetes: median {statistics.median(imp) * 1000:.1f} ms "
          f"(in-process timer, {args.runs} fresh interpreters)")
    print(f"interpreter start-up baseline (python -c pass): median {statistics.median(base) * 1000:.1f} ms; "
          f"with the import: median {statistics.median(wall) * 1000:.1f} ms; "
          f"ratio {statistics.median(wall) / statistics.median(base):.2f}x")
    print(f"top-level modules pulled in ({len(added)}): {', '.join(added)}")
    print(f"heavy modules imported: {heavy or 'none'}")
    goal = statistics.median(imp) < 0.150 and not heavy
    print(f"goal (< 150 ms, no heavy modules): {'met' if goal else 'NOT met'}")
    from figures import Ratio, record

    record("import_time", {"import_ms": statistics.median(imp) * 1000, "startup_ms": statistics.median(base) * 1000,
                           "startup_with_import_ms": statistics.median(wall) * 1000, "runs": args.runs,
                           "heavy_modules": heavy, "modules_added": added},
           [Ratio("import time / 150 ms budget", statistics.median(imp) / 0.150, goal=1.0, better="lower"),
            Ratio("start-up with import / bare start-up", statistics.median(wall) / statistics.median(base))],
           title="import xpuflow + xpuflow.render.kubernetes")


if __name__ == "__main__":
    main()
