"""Compile time of each example flow and of a user's own flow file, including the kfp import, in a fresh interpreter.

    .venv/bin/python bench/compile_time.py [--runs 5]

Baseline in the same run: `python -c "import kfp"` alone. Goal: < 2 s per pipeline.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the example flows by name, and a user's own flow file (their step beside xpuflow's)
PIPELINES = ("train_gpu_export_npu", "train_tpu", str(ROOT / "examples" / "my_project" / "my_flow.py"))


from figures import Ratio, record  # noqa: E402  (bench/ is on the path when run as a script)


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        kfp_only = [timed([sys.executable, "-c", "import kfp.compiler, kfp.dsl"]) for _ in range(args.runs)]
        print(f"baseline: import kfp (fresh interpreter): median {statistics.median(kfp_only):.2f} s")
        figures, ratios = {"kfp_import_s": statistics.median(kfp_only), "runs": args.runs}, []
        for name in PIPELINES:
            for backend, suffix in (("kfp", "yaml"), ("airflow", "py"), ("k8s", "yaml")):
                cmd = [sys.executable, "-m", "xpuflow", "compile", name, "--backend", backend, "--cluster", "gke",
                       "-o", f"{tmp}/{Path(name).stem}-{backend}.{suffix}"]
                runs = [timed(cmd) for _ in range(args.runs)]
                med = statistics.median(runs)
                print(f"{Path(name).name} --backend {backend}: xpuflow compile (CLI start, load, place, compile, "
                      f"write) median {med:.2f} s, {med / statistics.median(kfp_only):.2f}x the bare kfp import; "
                      f"goal < 2 s: {'met' if med < 2 else 'NOT met'}")
            figures[f"{name}_s"] = med
            ratios.append(Ratio(f"{name}: compile / bare kfp import", med / statistics.median(kfp_only)))
            ratios.append(Ratio(f"{name}: compile / 2 s budget", med / 2.0, goal=1.0, better="lower"))
    record("compile_time", figures, ratios, title="xpuflow compile --backend kfp (whole process)")


if __name__ == "__main__":
    main()
