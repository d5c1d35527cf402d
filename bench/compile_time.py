"""Compile time of each example pipeline, including the kfp import, in a fresh interpreter.

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

PIPELINES = ("train_gpu_export_npu", "train_tpu")


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
            cmd = [sys.executable, "-m", "xpuflow", "compile", name, "--backend", "kfp", "--cluster", "gke",
                   "-o", f"{tmp}/{name}.yaml"]
            runs = [timed(cmd) for _ in range(args.runs)]
            med = statistics.median(runs)
            print(f"{name}: xpuflow compile (CLI start, kfp import, place, compile, write) median {med:.2f} s, "
                  f"{med / statistics.median(kfp_only):.2f}x the bare kfp import; goal < 2 s: "
                  f"{'met' if med < 2 else 'NOT met'}")
            figures[f"{name}_s"] = med
            ratios.append(Ratio(f"{name}: compile / bare kfp import", med / statistics.median(kfp_only)))
            ratios.append(Ratio(f"{name}: compile / 2 s budget", med / 2.0, goal=1.0, better="lower"))
    record("compile_time", figures, ratios, title="xpuflow compile --backend kfp (whole process)")


if __name__ == "__main__":
    main()
