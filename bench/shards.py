"""Throughput of ``embed``, ``batch_infer`` and ``preprocess`` in 1 and in 2 shards (2 processes at once) here.

For each step, alternately for ``--reps`` rounds: one process (``xpuflow step STEP ...``, no ``--shard``)
and N processes started together (``--shard 0/N`` ... ``N-1/N``) writing one output; each run's time is
from starting the processes to the published output (process start, imports and model load
included, as a pod pays them). Each process gets ``cores / processes`` torch threads
(OMP_NUM_THREADS), so both runs use the same cores. Prints rows/s and the ratio N-shard / 1-shard
(medians) for each step, and checks the outputs are equal.

On a machine with few cores, shared with other work, N processes on the same cores cannot go N
times as fast: the ratio measures the overhead of sharding (every process reads the whole input,
the parts are merged) more than the scale-out a cluster gives, where each shard has its own node.

    .venv/bin/python bench/shards.py                      # embed on 1,020 chunks, batch_infer on 360,000 rows,
                                                          # preprocess on a 750,000-row CSV (~200 MB)
    .venv/bin/python bench/shards.py --shards 2 --reps 3
    .venv/bin/python bench/shards.py --steps preprocess   # one step: bench/results/shards-preprocess.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
STEPS = ("embed", "batch_infer", "preprocess")


def timed(cmds: list[list[str]], threads: int, out: Path, marker: str) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    for p in procs:
        if p.wait() != 0:
            sys.exit(p.stderr.read().decode()[-3000:])  # type: ignore[union-attr]
    seconds = time.perf_counter() - started
    assert (out / marker).exists(), f"{out} was not published"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--copies", type=int, default=30, help="copies of the shipped corpus for embed")
    parser.add_argument("--rows", type=int, default=360_000, help="rows scored by batch_infer")
    parser.add_argument("--csv-rows", type=int, default=750_000, help="rows of preprocess's CSV (bench/preprocess.py's)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}")
    args = parser.parse_args()
    chosen = args.steps.split(",")
    if not chosen or set(chosen) - set(STEPS):
        parser.error(f"--steps {args.steps!r}: choose among {', '.join(STEPS)}")

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from figures import Ratio, record
    from preprocess import generate
    from xpuflow.steps.preprocess import preprocess
    from xpuflow.steps.rag import corpus_dir
    from xpuflow.steps.rag.chunk import chunk
    from xpuflow.steps.rag.embed import read_embeddings
    from xpuflow.steps.train import train

    cores = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="xpuflow-bench-shards-"))
    chunks = 0
    if "embed" in chosen:
        with open(tmp / "docs.jsonl", "w") as f:
            for copy in range(args.copies):
                for p in sorted(corpus_dir().glob("*.md")):
                    f.write(json.dumps({"id": f"{copy}-{p.stem}", "text": p.read_text()}) + "\n")
        chunk(input=str(tmp / "docs.jsonl"), output=str(tmp / "chunks"))
        chunks = pq.ParquetFile(tmp / "chunks" / "chunks.parquet").metadata.num_rows
    if "batch_infer" in chosen:
        preprocess(output=str(tmp / "prep"))
        train(data=str(tmp / "prep"), output=str(tmp / "model"), epochs=1)
        test = pq.read_table(tmp / "prep" / "test.parquet")
        pq.write_table(pa.concat_tables([test] * (args.rows // test.num_rows + 1)).slice(0, args.rows),
                       tmp / "rows.parquet")
    if "preprocess" in chosen:
        generate(tmp / "table.csv", args.csv_rows)
    py = [sys.executable, "-m", "xpuflow", "step"]
    steps = {
        "embed": (py + ["embed", "--data", str(tmp / "chunks"), "--shard-size", "32"], "embeddings.json", chunks),
        "batch_infer": (py + ["batch_infer", "--model", str(tmp / "model"), "--data", str(tmp / "rows.parquet"),
                              "--batch-size", "8192"], "predictions.json", args.rows),
        "preprocess": (py + ["preprocess", "--input", str(tmp / "table.csv")], "stats.json", args.csv_rows),
    }
    steps = {name: steps[name] for name in STEPS if name in chosen}
    figures: dict[str, dict[str, float]] = {}
    ratios = []
    n = args.shards
    for name, (cmd, marker, rows) in steps.items():
        one, many = [], []
        for rep in range(args.reps):
            a, b = tmp / f"{name}-1-{rep}", tmp / f"{name}-{n}-{rep}"
            one.append(timed([cmd + ["--output", str(a)]], cores, a, marker))
            many.append(timed([cmd + ["--output", str(b), "--shard", f"{i}/{n}"] for i in range(n)],
                              max(1, cores // n), b, marker))
        if name == "embed":
            _, x, _ = read_embeddings(str(a), "bench")
            _, y, _ = read_embeddings(str(b), "bench")
            same = float(np.abs(x - y).max())
        else:
            files = ["predictions.parquet"] if name == "batch_infer" else ["train.parquet", "validation.parquet",
                                                                            "test.parquet"]
            same = float(not all(pq.read_table(a / f).equals(pq.read_table(b / f)) for f in files))
        r1, rn = rows / statistics.median(one), rows / statistics.median(many)
        figures[name] = {"rows": rows, "rows_per_second_1": round(r1, 1), f"rows_per_second_{n}": round(rn, 1),
                         "seconds_1": one, f"seconds_{n}": many, "max_difference": same}
        ratios.append(Ratio(f"{name}: {n} shards / 1", rn / r1))
        print(f"{name:<12} {rows:>8} rows  1 process {r1:>10,.1f} rows/s  {n} shards {rn:>10,.1f} rows/s  "
              f"ratio {rn / r1:.2f}x  (max difference {same:g})")
    print(f"machine: {cores} cores shared with other jobs; each process got {max(1, cores // n)} torch thread(s) "
          f"in the {n}-shard runs, {cores} in the 1-process runs")
    subset = "" if len(steps) == len(STEPS) else "-" + "-".join(steps)
    record(f"shards{subset}", {"shards": n, "cores": cores, **figures}, ratios,
           title=f"{', '.join(steps)}: {n} shards vs 1 process")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
