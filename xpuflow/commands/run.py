"""``xpuflow run``: run a flow locally with kfp's SubprocessRunner, then summarise what it made.

Each task runs as a subprocess of this Python (the real KFP local runner); the
placement each step would get on the chosen cluster is shown beside its results.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from ..cluster import Cluster
from ..errors import XpuflowError
from .pipelines import env_set, resolve_flow

__all__ = ["run_local", "summarise"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _Progress:
    """A file-like tee: the runner's output goes to the run log; task starts and ends become progress lines."""

    def __init__(self, log_file: Path, total: int, console: Any) -> None:
        self.log = log_file.open("a", encoding="utf-8")
        self.console, self.total, self.done, self.started, self._partial = console, total, 0, time.perf_counter(), ""

    def write(self, text: str) -> int:
        self.log.write(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            line = _ANSI.sub("", line)
            if "Executing task" in line:
                task = line.split("Executing task", 1)[1].strip()
                self.console.write(f"  [{self.done + 1}/{self.total}] {task} ...\n")
            elif " - Task " in line and "finished with status" in line:
                self.done += 1
                status = line.rsplit(" ", 1)[-1].lower()
                self.console.write(f"        {status} ({time.perf_counter() - self.started:.0f} s so far)\n")
            self.console.flush()
        return len(text)

    def flush(self) -> None:
        self.log.flush()

    def close(self) -> None:
        self.log.close()


def run_local(name: str, cluster_name: str, root: str, params: list[str]) -> tuple[Path, list[dict[str, Any]]]:
    from kfp import local

    from ..dsl.params import check_params, parse_params
    from ..kfp import pipeline as kfp_pipeline

    flow, cluster = resolve_flow(name), Cluster.load(cluster_name)
    values = parse_params(flow, params)  # typed per flow parameter, then each task's step check: before any task
    check_params(flow, values)
    pipeline = kfp_pipeline(flow, cluster)
    out = Path(root).resolve()
    out.mkdir(parents=True, exist_ok=True)
    before = {p for p in out.iterdir() if p.is_dir()}
    imports = sum(k in t.step.inputs and k not in t.inputs for t in flow.tasks for k in t.args)  # KFP importer tasks
    progress = _Progress(out / "run.log", len(flow.tasks) + imports, sys.stdout)
    print(f"running {flow.name} locally ({flow.description}); log: {out / 'run.log'}", flush=True)
    # the tasks (subprocesses) import the flow's steps as a pod would: the flow file's folder is on their path
    folder = os.path.dirname(os.path.abspath(flow.fn.__code__.co_filename))
    path = os.pathsep.join(p for p in (folder, os.environ.get("PYTHONPATH", "")) if p)
    try:
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(out))
        # the runner logs to sys.stdout (task output included): into the run log, through the progress tee
        with env_set("PYTHONPATH", path), contextlib.redirect_stdout(progress), warnings.catch_warnings():
            # the runner prints each task's output (into the log) and warns that placement settings and
            # images are not used locally, which is the point of a local run
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            pipeline(**values)
    except Exception as e:
        failed = _ANSI.sub("", str(e)).strip()[:500]
        raise XpuflowError(f"{flow.name}: the local run failed: {failed} The task's output is in "
                           f"{out / 'run.log'}.") from e
    finally:
        progress.close()
    (run_dir,) = sorted({p for p in out.iterdir() if p.is_dir()} - before, key=lambda p: p.stat().st_mtime)[-1:]
    return run_dir, summarise(run_dir, flow, cluster)


def summarise(run_dir: Path, flow: Any, cluster: Cluster) -> list[dict[str, Any]]:
    rows = []
    for spec in flow.tasks:
        task_dir = run_dir / spec.name.replace("_", "-")  # KFP's task name
        artifacts, metrics = [], {}
        executor = task_dir / "executor_output.json"
        if executor.exists():
            for items in json.loads(executor.read_text()).get("artifacts", {}).values():
                for art in items.get("artifacts", []):
                    meta = art.get("metadata", {})
                    metrics.update({k: v for k, v in meta.items() if isinstance(v, (int, float))})
        for child in sorted(task_dir.iterdir()) if task_dir.exists() else []:
            if child.name != "executor_output.json":
                artifacts.append(str(child))
        p = cluster.place(spec.compute)
        rows.append({"step": spec.name, "artifacts": artifacts, "metrics": metrics,
                     "placement": f"{p.pool} ({p.hardware}{', spot' if p.spot else ''})",
                     "price": p.price_per_hour})
    return rows


def print_summary(run_dir: Path, rows: list[dict[str, Any]], cluster: str) -> None:
    print(f"\nsummary ({run_dir}):")
    width = max(len(r["step"]) for r in rows)
    for r in rows:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(r["metrics"].items())[:5]) or "-"
        price = "n/a" if r["price"] is None else f"${r['price']:.2f}/h"
        print(f"  {r['step']:<{width}}  on {cluster}: {r['placement']}, {price}")
        print(f"  {'':<{width}}  metrics: {shown}")
        for a in r["artifacts"]:
            print(f"  {'':<{width}}  -> {a}")
    sys.stdout.flush()
