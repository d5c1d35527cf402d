"""The ``xpuflow`` command line.

    xpuflow plan --cluster gke                 # where the example steps would run, and $/hour
    xpuflow plan --cluster my.yaml --steps steps.yaml -o json
    xpuflow catalog                            # clusters, GPUs, TPU topologies, NPU devices
    xpuflow step train --data out/data --output out/model   # one step, as a pod runs it
    xpuflow run my_project/flows.py                         # your own @flow, any verb
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

from .errors import XpuflowError, redacted

_MAX_MINUTES = 525_600  # a year: a longer step is a typo

EPILOG = """examples (PIPELINE: path/to/file.py[:name] defining a @flow, or an example: train_gpu_export_npu,
train_tpu, rag_index):
  xpuflow run my_project/flows.py --param epochs=3         # your own flow, locally (real KFP local runner)
  xpuflow compile my_project/flows.py:nightly --backend airflow --cluster eks -o dags/nightly.py
  xpuflow plan my_project/flows.py --cluster gke           # placement and cost of each of its tasks
  xpuflow step my_project.steps:clean --raw in/ --out out/ # one of your @steps, as a pod runs it
  xpuflow run train_gpu_export_npu --param epochs=3        # an example flow
  xpuflow plan train_gpu_export_npu --cluster eks          # placement and cost per run
  xpuflow lint train_tpu --cluster gke                     # problems before submitting
  xpuflow lint pipeline.yaml --cluster gke                 # any compiled KFP pipeline, yours too
  xpuflow plan pipeline.yaml --cluster gke
  xpuflow lint dags/my_dag.py --cluster gke                # an Airflow DAG's KubernetesPodOperator tasks
  xpuflow compile train_gpu_export_npu --backend kfp --cluster gke -o out/pipeline.yaml
  xpuflow graph train_gpu_export_npu -o out/graph.svg
  xpuflow plan --cluster gke
  xpuflow plan --cluster clusters/mine.yaml --steps steps.yaml
  xpuflow catalog --cluster eks

A steps file is YAML:
  steps:
    preprocess: {kind: cpu, cpu: "2", memory: 4Gi}
    train: {kind: gpu, count: 1, model: l4, spot: true}
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xpuflow",
        description="ML pipeline steps that declare their compute (CPU, GPU, TPU, NPU) for KFP and Airflow.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("plan", help="placement and approximate cost of each step on a cluster")
    p.add_argument("pipeline", nargs="?", help="path/to/flow.py[:name] or an example flow (default: every built-in "
                   "step)")
    p.add_argument("--cluster", default="gke", help="shipped profile (gke, eks, aks, generic) or a cluster YAML file")
    p.add_argument("--steps", help="YAML file with 'steps: {name: {kind: ..., ...}}' instead of a pipeline")
    p.add_argument("--minutes", action="append", default=[], metavar="STEP=MIN",
                   help="expected minutes of a step, for the cost per run (default: the flow's estimate)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument("--strict", action="store_true", help="exit 1 when a step cannot be placed on the cluster")
    r = sub.add_parser("run", help="run a pipeline locally (kfp's SubprocessRunner) and summarise its artifacts")
    r.add_argument("pipeline", help="path/to/flow.py[:name] or an example flow (train_gpu_export_npu, train_tpu, "
                   "rag_index)")
    r.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="pipeline parameter (repeatable)")
    r.add_argument("--cluster", default="gke", help="the cluster whose placement the summary shows")
    r.add_argument("--root", default="out/runs", help="where the run's artifacts go (default: out/runs)")
    k = sub.add_parser("compile", help="compile a flow for kfp, airflow or k8s")
    k.add_argument("pipeline", help="path/to/flow.py[:name], an example flow, or (kfp) a KFP pipeline file")
    k.add_argument("--backend", required=True, choices=("kfp", "airflow", "k8s"))
    k.add_argument("--cluster", required=True, help="shipped profile or cluster YAML file")
    k.add_argument("-o", "--output", required=True, help="output file (.yaml for kfp/k8s, .py for airflow)")
    k.add_argument("--artifact-root", default="",
                   help="k8s backend only: the object-store URL (s3://, gs://, ...) the steps use for artifacts")
    li = sub.add_parser("lint", help="find placement problems before submitting; exit 1 on errors")
    li.add_argument("pipeline", help="path/to/flow.py[:name] or an example flow")
    li.add_argument("--cluster", required=True)
    li.add_argument("--backend", default="kfp", choices=("kfp", "airflow", "k8s"))
    g = sub.add_parser("graph", help="draw the pipeline, steps coloured by compute class")
    g.add_argument("pipeline", help="path/to/flow.py[:name] or an example flow")
    g.add_argument("-o", "--output", required=True, help="file.svg or file.png")
    g.add_argument("--cluster", help="also show each step's node pool on this cluster")
    q = sub.add_parser("kueue", help="render a cluster's Kueue set-up (flavors, ClusterQueue, LocalQueues) from its profile")
    q.add_argument("--cluster", required=True, help="shipped profile or cluster YAML file with a kueue: section")
    q.add_argument("-o", "--output", help="write to this file (default: stdout)")
    c = sub.add_parser("catalog", help="list clusters, GPU models, TPU topologies and NPU devices")
    c.add_argument("--cluster", help="show one cluster's node pools")
    s = sub.add_parser("step", help="run one step in this process (what a pod runs): xpuflow step NAME --help",
                       add_help=False)
    s.add_argument("name", nargs="?", help="a built-in step (preprocess, train, ...) or package.module:function")
    s.add_argument("options", nargs=argparse.REMAINDER)
    w = sub.add_parser("wait", help="wait until step outputs are finished (their _COMPLETE marker): a Job's init "
                       "container, so manifests applied at once run in order")
    w.add_argument("urls", nargs="+", metavar="URL")
    w.add_argument("--timeout", type=float, default=86400.0, help="seconds (default: a day)")
    w.add_argument("--poll", type=float, default=10.0, help="seconds between looks (default: 10)")
    return parser


def _plan(args: argparse.Namespace) -> int:
    from .cluster import Cluster
    from .plan import format_table, load_steps_file, plan, run_cost, to_json

    if args.pipeline and _inspectable(args.pipeline):
        from .inspect.commands import plan_file

        return plan_file(args.pipeline, args.cluster, args.output, args.strict)
    cluster = Cluster.load(args.cluster)
    minutes: dict[str, float] = {}
    pods: dict[str, int] = {}
    if args.pipeline:
        from .commands.pipelines import resolve_flow

        flow = resolve_flow(args.pipeline)
        steps = flow.computes()
        minutes = {t.name: t.minutes for t in flow.tasks}
        pods = {t.name: t.shards for t in flow.tasks}
    elif args.steps:
        steps = load_steps_file(args.steps)
    else:
        from .steps import builtin_steps

        steps = {s.name: s.compute for s in builtin_steps() if s.compute is not None}
    minutes.update(_minutes(args.minutes, steps))
    rows = plan(cluster, steps, pods)
    if args.output == "table":
        sys.stdout.write(format_table(cluster, rows))
        if minutes:
            sys.stdout.write(run_cost(rows, minutes))
    else:
        sys.stdout.write(to_json(rows) + "\n")
    return 1 if args.strict and any(r.problem for r in rows) else 0


def _minutes(pairs: list[str], steps: Any) -> dict[str, float]:
    """``--minutes STEP=MIN``: a known step, a finite number of minutes from 0 to a year."""
    from .errors import did_you_mean, shown

    out: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in steps:
            raise XpuflowError(f"--minutes {shown(pair)} is not valid: STEP=MINUTES with STEP one of "
                               f"{', '.join(steps)}.{did_you_mean(key, steps)}")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not 0 <= number <= _MAX_MINUTES:  # NaN fails too
            raise XpuflowError(f"--minutes {shown(pair)} is not valid: minutes from 0 to {_MAX_MINUTES} (a year). "
                               f"Fix: e.g. --minutes {key}=30.")
        out[key] = number
    return out


def _output_file(path: str, *inputs: str | None) -> None:
    """``-o``: a file whose folder exists or can be made, and none of the command's ``inputs`` (the flow file,
    the cluster file: never overwritten by what is made from them); refused before any work."""
    from pathlib import Path

    from .errors import shown

    p = Path(path)
    for given in filter(None, inputs):
        file, sep, _ = given.rpartition(":")  # path/to/flows.py:name
        source = Path(file if sep and file.endswith(".py") else given)
        if p.exists() and source.is_file() and os.path.samefile(p, source):
            raise XpuflowError(f"-o {shown(path)} is the input {shown(given)}: writing it would destroy it. "
                               "Fix: choose another output path.")
    if p.is_dir() or path.endswith(("/", os.sep)):
        raise XpuflowError(f"-o {shown(path)} is a directory: give a file path. Fix: e.g. -o {p / 'out'}.")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise XpuflowError(f"-o {shown(path)}: {shown(str(parent))} is a file, not a folder. "
                                   "Fix: choose another path.")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise XpuflowError(f"-o {shown(path)}: cannot write under {shown(str(parent))} (permission denied). "
                                   "Fix: choose a writable folder.")
            return


def _os_error(e: OSError, output: str | None) -> str:
    """One line for an OSError; a temporary file beside ``-o`` is reported as ``-o`` itself."""
    from pathlib import Path

    from .errors import shown

    reason = e.strerror or type(e).__name__
    name = e.filename
    if output and output not in ("table", "json") and name and Path(str(name)).parent == Path(output).parent:
        return f"-o {shown(output)}: cannot write it: {reason}. Fix: choose a writable path."
    where = f"{shown(name)}: " if name else ""
    return f"{where}{reason}. Fix: check the path and its permissions."


def _run(args: argparse.Namespace) -> int:
    from .commands.run import print_summary, run_local

    run_dir, rows = run_local(args.pipeline, args.cluster, args.root, args.param)
    print_summary(run_dir, rows, args.cluster)
    return 0


def _compile(args: argparse.Namespace) -> int:
    from .commands.compile import compile_pipeline

    _output_file(args.output, args.pipeline, args.cluster)
    out = compile_pipeline(args.pipeline, args.backend, args.cluster, args.output, args.artifact_root)
    print(f"wrote {out} ({args.backend}, cluster {args.cluster})")
    if args.backend == "airflow":
        from .commands.compile import dag_claim_templates

        claims = dag_claim_templates(args.pipeline, args.cluster, args.output)
        if claims:
            print(f"wrote {claims} (the DRA ResourceClaimTemplates its pods claim from: kubectl apply -f it first)")
    return 0


def _inspectable(path: str) -> bool:
    """A compiled KFP pipeline (.yaml/.yml/.json) or an Airflow DAG file: read, not declared by xpuflow."""
    from .inspect import is_inspectable

    return is_inspectable(path)


def _lint(args: argparse.Namespace) -> int:
    if _inspectable(args.pipeline):
        from .inspect.commands import lint_file

        return lint_file(args.pipeline, args.cluster, args.backend)
    from .cluster import Cluster
    from .commands.pipelines import resolve_flow
    from .lint import lint

    flow = resolve_flow(args.pipeline)
    findings = lint(flow, Cluster.load(args.cluster), args.backend)
    for f in findings:
        print(f)
    errors, warnings = (sum(f.level == level for f in findings) for level in ("error", "warning"))
    print(f"{flow.name} on {args.cluster} ({args.backend}): {errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0


def _graph(args: argparse.Namespace) -> int:
    from .cluster import Cluster
    from .commands.graph import draw
    from .commands.pipelines import resolve_flow

    _output_file(args.output, args.pipeline, args.cluster)
    out = draw(resolve_flow(args.pipeline), args.output, Cluster.load(args.cluster) if args.cluster else None)
    print(f"wrote {out}")
    return 0


def _catalog(args: argparse.Namespace) -> int:
    from .catalog import catalog, shipped_clusters
    from .cluster import Cluster

    if args.cluster:
        cluster = Cluster.load(args.cluster)
        print(f"cluster {cluster.name}: {cluster.description}")
        for pool in cluster.node_pools:
            acc = pool.accelerator
            what = "cpu" if acc is None else f"{acc.kind} {acc.name}" + (f" mig {acc.mig}" if acc.mig else "")
            if acc is not None and acc.kind == "tpu":
                what += f" ({', '.join(acc.topologies)})"
            elif acc is not None:
                what += f" x{acc.count} ({acc.resource})"
            room = f"  allocatable={pool.allocatable.text()}" if pool.allocatable else ""
            print(f"  {pool.name:<20} {what:<45} purpose={','.join(pool.purpose):<28} capacity={','.join(pool.capacity)}"
                  + room)
        from .admission import profile_lines

        for line in profile_lines(cluster):
            print(line)
        return 0
    cat = catalog()
    print("clusters:", ", ".join(shipped_clusters()), "(or your own YAML file; see docs/clusters.md)")
    print("gpu models:")
    for g in cat.gpus.values():
        mig = f"  mig: {', '.join(g.mig)}" if g.mig else ""
        print(f"  {g.name:<10} {g.vendor:<7} {g.memory_gib:>4} GiB  {cat.gpu_vendors[g.vendor]}{mig}")
    print("tpu versions (topology: chips/host x hosts):")
    for t in cat.tpus.values():
        shapes = [t.shape(topo) for topo in t.topologies]
        print(f"  {t.name:<4} {t.accelerator:<22} " + ", ".join(f"{s.topology}:{s.chips_per_host}x{s.hosts}" for s in shapes))
    print("npu devices:")
    for n in cat.npus.values():
        print(f"  {n.name:<16} {n.resource:<24} {n.description}")
    from .steps.export.targets import TARGETS

    print("npu export targets (xpuflow step export --target ...):")
    for t in TARGETS.values():
        state = "available" if t.available else "listed, unavailable here"
        print(f"  {t.name:<14} {t.execution_provider:<30} {state}")
    return 0


def _kueue(args: argparse.Namespace) -> int:
    from .commands.kueue import main

    if args.output:
        _output_file(args.output, args.cluster)
    return main(args.cluster, args.output)


def _step(args: argparse.Namespace) -> int:
    import logging

    from .steps import build_parser, builtin_names, run

    if not args.name or args.name in ("-h", "--help"):
        print("usage: xpuflow step NAME|package.module:function [--option VALUE ...]\nbuilt-in steps: "
              + ", ".join(builtin_names()))
        print("each step's options: xpuflow step NAME --help")
        return 0 if args.name else 2
    if any(o in ("-h", "--help") for o in args.options):
        build_parser(args.name).print_help()
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(args.name, args.options)
    return 0


def _wait(args: argparse.Namespace) -> int:
    import math

    from .errors import XpuflowError, invalid
    from .steps import wait

    for name in ("timeout", "poll"):
        value = getattr(args, name)
        if not math.isfinite(value) or value < 0 or (name == "poll" and value == 0):
            raise XpuflowError(invalid(f"--{name}", value, "a finite number of seconds above 0"))
    wait(args.urls, args.timeout, args.poll)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        commands = {"plan": _plan, "catalog": _catalog, "step": _step, "run": _run, "compile": _compile,
                    "lint": _lint, "graph": _graph, "kueue": _kueue, "wait": _wait}
        return commands[args.command](args)
    except XpuflowError as e:  # a URL's credentials (scheme://user:password@host) never reach the log
        print(f"xpuflow {args.command}: error: {redacted(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # a file the command reads or writes: its path and the reason, in one line
        print(f"xpuflow {args.command}: error: {redacted(_os_error(e, getattr(args, 'output', None)))}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
