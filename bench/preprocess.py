"""Throughput and peak memory of the ``preprocess`` step on a synthetic labelled CSV.

Generates a CSV with a fixed seed (32 float feature columns, a ``label`` column
with 10 classes, about 0.1 % empty cells) in a temporary directory, then runs,
each in a fresh interpreter and alternately (xpuflow, pandas, polars, xpuflow, ...):

- ``xpuflow.steps.preprocess.preprocess(input=csv, output=dir)``;
- a plain pandas baseline doing the equivalent work on the same file:
  ``pandas.read_csv`` -> train/validation/test split by seed -> standardise with
  the training mean/std -> ``fillna(0)`` -> float32 -> three Parquet files (zstd);
- the same work in polars (``pl.read_csv``, multi-threaded, eager), the tool a user picking
  a fast CSV -> Parquet path would choose; its Parquet files at the same zstd level as
  pyarrow's default (1) so that both do the same compression work (``--polars-zstd-level``).

Prints medians of rows/s and MB/s (timer inside the child, around the call, with the libraries
already imported; the call's CPU time over all threads (``time.process_time``), the child's wall
time including interpreter start-up and its CPU time from ``os.wait4`` are printed too), the ratio
xpuflow/pandas (goal >= 1.5x) and xpuflow/polars (goal >= 1.0x), and the peak RSS of each child
(its own ``VmHWM``; ``ru_maxrss`` from ``os.wait4`` beside it; goal for the step on the ~2 GB
file: < 1 GB). Before each job the page cache's pending writes are flushed (``os.sync``) and the
CSV is read once, so that no job pays for the generated CSV's or another job's writes, nor for
reading the CSV from disk after it was evicted. Generated files are removed unless
``--keep``. The figures also go to ``bench/results/preprocess.json`` (``preprocess-big`` with
``--big``) and a PNG chart beside it.

    .venv/bin/python bench/preprocess.py                 # ~200 MB CSV, 5 alternating pairs
    .venv/bin/python bench/preprocess.py --reps 7        # the figures in docs/benchmarks.md
    .venv/bin/python bench/preprocess.py --big           # ~2 GB CSV, 1 pair (peak RSS goal)
    .venv/bin/python bench/preprocess.py --rows 100000 --reps 3 --keep --dir /tmp/prep-bench
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import Ratio, record  # noqa: E402
FEATURES = 32
CLASSES = 10
MISSING = 0.001  # fraction of empty feature cells
BYTES_PER_ROW = 268  # measured for this generator (4 decimals, no quoting)
DEFAULT_ROWS = 750_000  # ~200 MB
BIG_ROWS = 7_500_000  # ~2 GB
SEED = 0
JOBS = ("xpuflow", "pandas", "polars")


# ----------------------------------------------------------------------------- data


def generate(path: Path, rows: int, seed: int = SEED, chunk: int = 250_000) -> float:
    """Write the synthetic CSV in chunks (numpy + pyarrow); returns the seconds it took."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 50.0, FEATURES)
    loc = rng.uniform(-100.0, 100.0, FEATURES)
    names = [f"f{j}" for j in range(FEATURES)] + ["label"]
    schema = pa.schema([*(pa.field(n, pa.float64()) for n in names[:-1]), pa.field("label", pa.int64())])
    with pcsv.CSVWriter(str(path), schema, write_options=pcsv.WriteOptions(quoting_style="none")) as writer:
        for begin in range(0, rows, chunk):
            n = min(chunk, rows - begin)
            y = rng.integers(0, CLASSES, n)
            # features carry a little class signal, so the data is not pure noise
            x = rng.standard_normal((n, FEATURES)) * scale + loc + y[:, None] * (scale / 4)
            x = np.round(x, 4)
            x[rng.random((n, FEATURES)) < MISSING] = np.nan
            arrays = [pa.array(x[:, j], from_pandas=True) for j in range(FEATURES)] + [pa.array(y)]
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- jobs (run in a child)


def _hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def job_xpuflow(csv: str, out: str, seed: int) -> dict:
    import numpy  # noqa: F401  (imported before the timer, as in the pandas job)
    import pyarrow  # noqa: F401
    import pyarrow.compute  # noqa: F401
    import pyarrow.csv  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from xpuflow.steps.preprocess import preprocess

    start, cpu = time.perf_counter(), time.process_time()
    stats = preprocess(input=csv, output=out, seed=seed)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_in_call": time.process_time() - cpu, "rows": stats["rows"]["total"],
            "split": [stats["rows"][s] for s in ("train", "validation", "test")]}


def job_pandas(csv: str, out: str, seed: int, engine: str) -> dict:
    import numpy as np
    import pandas as pd
    import pyarrow.parquet  # noqa: F401

    start, cpu = time.perf_counter(), time.process_time()
    df = pd.read_csv(csv, engine=None if engine == "c" else engine)
    label = df.pop("label")
    features = list(df.columns)
    rng = np.random.default_rng(seed)
    u = rng.random(len(df))
    split = np.zeros(len(df), dtype=np.int8)
    split[u < 0.30] = 1  # validation 0.15 + test 0.15, as the step's defaults
    split[u < 0.15] = 2
    train = df[split == 0]
    mean = train.mean()
    std = train.std(ddof=0).replace(0.0, 1.0)
    df = ((df - mean) / std).fillna(0.0).astype(np.float32)
    classes = sorted(label.unique())
    df["label"] = pd.Categorical(label, categories=classes).codes.astype(np.int64)
    os.makedirs(out, exist_ok=True)
    rows = []
    for s, name in enumerate(("train", "validation", "test")):
        part = df[split == s]
        part.to_parquet(os.path.join(out, f"{name}.parquet"), compression="zstd", index=False)
        rows.append(len(part))
    with open(os.path.join(out, "stats.json"), "w") as f:
        json.dump({"features": features, "mean": mean.tolist(), "std": std.tolist(), "classes": [str(c) for c in classes]}, f)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_in_call": time.process_time() - cpu, "rows": len(df), "split": rows}


def job_polars(csv: str, out: str, seed: int, zstd_level: int) -> dict:
    import numpy as np
    import polars as pl

    start, cpu = time.perf_counter(), time.process_time()
    df = pl.read_csv(csv)
    label = df.get_column("label")
    x = df.drop("label")
    features = x.columns
    rng = np.random.default_rng(seed)
    u = rng.random(df.height)
    split = np.zeros(df.height, dtype=np.int8)
    split[u < 0.30] = 1  # validation 0.15 + test 0.15, as the step's defaults
    split[u < 0.15] = 2
    train = x.filter(pl.Series(split == 0))
    mean = train.mean().row(0)
    std = [s if s else 1.0 for s in train.std(ddof=0).row(0)]
    x = x.select([((pl.col(c) - m) / s).fill_null(0.0).fill_nan(0.0).cast(pl.Float32)
                  for c, m, s in zip(features, mean, std)])
    classes = sorted(label.unique().to_list())
    x = x.with_columns(label.replace_strict(classes, list(range(len(classes))), return_dtype=pl.Int64).alias("label"))
    os.makedirs(out, exist_ok=True)
    rows = []
    for s, name in enumerate(("train", "validation", "test")):
        part = x.filter(pl.Series(split == s))
        part.write_parquet(os.path.join(out, f"{name}.parquet"), compression="zstd", compression_level=zstd_level)
        rows.append(part.height)
    with open(os.path.join(out, "stats.json"), "w") as f:
        json.dump({"features": features, "mean": list(mean), "std": std, "classes": [str(c) for c in classes]}, f)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_in_call": time.process_time() - cpu, "rows": x.height, "split": rows}


def child_main(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    if args.job == "generate":
        result = {"seconds": generate(Path(args.csv), args.rows, args.seed)}
    elif args.job == "xpuflow":
        result = job_xpuflow(args.csv, args.out, args.seed)
    elif args.job == "polars":
        result = job_polars(args.csv, args.out, args.seed, args.polars_zstd_level)
    else:
        result = job_pandas(args.csv, args.out, args.seed, args.pandas_engine)
    result["vmhwm_bytes"] = _hwm_bytes()
    print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- parent


def run_child(job: str, csv: Path, out: Path, args: argparse.Namespace, rows: int = 0) -> dict:
    """Run one job in a fresh interpreter, reaped with os.wait4: wall time, CPU time and peak RSS.

    The child reports its own VmHWM (the headline peak RSS). ``ru_maxrss`` from wait4 is
    printed too; on Linux it also counts the parent's RSS at fork time, which is why the
    CSV is generated in a child as well: this parent never grows beyond a few tens of MiB.
    """
    cmd = [sys.executable, __file__, "--child", job, "--csv", str(csv), "--out", str(out),
           "--seed", str(args.seed), "--pandas-engine", args.pandas_engine, "--rows", str(rows),
           "--polars-zstd-level", str(args.polars_zstd_level)]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as so, tempfile.TemporaryFile("w+") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, text=True, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read(), se.read()
    if proc.returncode != 0:
        raise SystemExit(f"{job} child failed (exit {proc.returncode}):\n{stderr[-4000:]}")
    line = next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    result["wall"] = wall
    result["maxrss_bytes"] = usage.ru_maxrss * 1024  # Linux: kilobytes
    result["cpu"] = usage.ru_utime + usage.ru_stime
    return result


def warm(path: Path) -> None:
    """Read the file once, so that it is in the page cache (outside any timer)."""
    with open(path, "rb", buffering=0) as f:
        while f.read(16 << 20):
            pass


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None, help=f"CSV rows (default {DEFAULT_ROWS:,}, ~200 MB)")
    parser.add_argument("--big", action="store_true", help=f"{BIG_ROWS:,} rows (~2 GB); default reps 1")
    parser.add_argument("--reps", type=int, default=None, help="alternating pairs (default 5, or 1 with --big)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--pandas-engine", choices=("c", "pyarrow"), default="c",
                        help="pandas.read_csv engine of the baseline (default: pandas' default, the C parser)")
    parser.add_argument("--polars-zstd-level", type=int, default=1,
                        help="zstd level of the polars baseline's Parquet files (default 1, pyarrow's default level)")
    parser.add_argument("--dir", help="working directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the generated CSV and outputs")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    # internal: one measured job in this (fresh) interpreter
    parser.add_argument("--child", choices=("generate", *JOBS), help=argparse.SUPPRESS)
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.job = args.child
        child_main(args)
        return

    rows = args.rows or (BIG_ROWS if args.big else DEFAULT_ROWS)
    reps = args.reps or (1 if args.big else 5)
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="xpuflow-bench-prep-"))
    work.mkdir(parents=True, exist_ok=True)
    csv = work / f"synthetic-{rows}.csv"
    try:
        if csv.exists():
            print(f"using existing {csv}")
        else:
            seconds = run_child("generate", csv, work, args, rows)["seconds"]
            print(f"generated {csv} in {seconds:.1f} s")
        size = csv.stat().st_size
        print(f"CSV: {rows:,} rows x ({FEATURES} float features + label, {CLASSES} classes), "
              f"{size / 1e6:,.0f} MB, ~{MISSING:.1%} empty cells; seed {args.seed}")
        print(f"{reps} alternating pair(s), each job in a fresh interpreter; pandas read_csv engine: {args.pandas_engine}; "
              f"load average before: {loadavg()}")

        results: dict[str, list[dict]] = {job: [] for job in JOBS}
        for i in range(reps):
            for job in JOBS:
                out = work / f"out-{job}"
                shutil.rmtree(out, ignore_errors=True)
                # no job waits on another's writes: the generated CSV (2 GB with --big) or the previous job's
                # output still going to disk would slow the writes, and the fsyncs, of whichever job came next;
                # and every job finds the CSV in the page cache (else the first one after an eviction reads it
                # from disk for the others)
                os.sync()
                warm(csv)
                r = run_child(job, csv, out, args)
                results[job].append(r)
                print(f"  rep {i + 1} {job:8s} {r['seconds']:7.2f} s in-call ({r['cpu_in_call']:6.2f} s CPU), "
                      f"{r['wall']:7.2f} s wall ({r['cpu']:6.2f} s CPU), peak RSS {mib(r['vmhwm_bytes'])} "
                      f"(wait4 ru_maxrss {mib(r['maxrss_bytes'])}), split {r['split']}", flush=True)
                if not args.keep:
                    shutil.rmtree(out, ignore_errors=True)
        for job in results:
            if any(r["rows"] != rows for r in results[job]):
                raise SystemExit(f"{job}: row count differs from {rows}: {[r['rows'] for r in results[job]]}")

        def med(job: str, key: str) -> float:
            return statistics.median(r[key] for r in results[job])

        summary = {"rows": rows, "csv_bytes": size, "reps": reps, "pandas_engine": args.pandas_engine,
                   "loadavg_after": loadavg()}
        print(f"load average after: {summary['loadavg_after']}")
        print()
        print(f"{'job':10s} {'median s':>9s} {'CPU s':>7s} {'rows/s':>12s} {'MB/s':>8s} {'wall s':>8s} {'CPU s':>7s} "
              f"{'peak RSS':>10s}   (first two: in-call; wall and its CPU: the whole child)")
        for job in JOBS:
            s = med(job, "seconds")
            peak = max(r["vmhwm_bytes"] for r in results[job])
            summary[job] = {"seconds": s, "cpu_in_call_seconds": med(job, "cpu_in_call"), "rows_per_s": rows / s,
                            "mb_per_s": size / 1e6 / s,
                            "wall_seconds": med(job, "wall"), "cpu_seconds": med(job, "cpu"), "peak_rss_bytes": peak,
                            "all_seconds": [r["seconds"] for r in results[job]]}
            print(f"{job:10s} {s:9.2f} {med(job, 'cpu_in_call'):7.2f} {rows / s:12,.0f} {size / 1e6 / s:8.1f} "
                  f"{med(job, 'wall'):8.2f} {med(job, 'cpu'):7.2f} {mib(peak):>10s}")
        ratios = []
        for peer, goal in (("pandas", 1.5), ("polars", 1.0)):
            ratio = med(peer, "seconds") / med("xpuflow", "seconds")
            ratio_wall = med(peer, "wall") / med("xpuflow", "wall")
            ratio_cpu = med(peer, "cpu") / med("xpuflow", "cpu")
            ratio_cpu_call = med(peer, "cpu_in_call") / med("xpuflow", "cpu_in_call")
            summary[f"vs_{peer}"] = {"ratio_throughput": ratio, "ratio_wall": ratio_wall, "ratio_cpu": ratio_cpu,
                                     "ratio_cpu_in_call": ratio_cpu_call}
            print(f"throughput ratio xpuflow/{peer}: {ratio:.2f}x (headline: in-call timer; goal >= {goal}x: "
                  f"{'met' if ratio >= goal else 'NOT met'}); with interpreter start-up: {ratio_wall:.2f}x; "
                  f"CPU time ({peer}/xpuflow): {ratio_cpu_call:.2f}x in the call, {ratio_cpu:.2f}x whole child")
            ratios += [Ratio(f"throughput xpuflow/{peer}", ratio, goal=goal),
                       Ratio(f"CPU time {peer}/xpuflow", ratio_cpu)]
        peak = summary["xpuflow"]["peak_rss_bytes"]
        if size >= 1.5e9:
            print(f"peak RSS of the step on a {size / 1e9:.1f} GB CSV: {mib(peak)} (goal < 1 GB: "
                  f"{'met' if peak < 1e9 else 'NOT met'}); pandas baseline: {mib(summary['pandas']['peak_rss_bytes'])}")
            ratios.append(Ratio("peak RSS / 1 GB", peak / 1e9, goal=1.0, better="lower"))
        else:
            print(f"peak RSS of the step: {mib(peak)} on a {size / 1e6:.0f} MB CSV (the < 1 GB goal is for --big)")
        record("preprocess-big" if size >= 1.5e9 else "preprocess", summary, ratios,
               title=f"preprocess: {size / 1e6:,.0f} MB CSV, median of {reps}, load {summary['loadavg_after']}")
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    finally:
        if args.keep:
            print(f"kept {work}")
        elif args.dir:
            csv.unlink(missing_ok=True)
            for job in ("xpuflow", "pandas"):
                shutil.rmtree(work / f"out-{job}", ignore_errors=True)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
