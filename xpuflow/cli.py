"""The ``xpuflow`` command line.

    xpuflow plan --cluster gke                 # where the example steps would run, and $/hour
    xpuflow plan --cluster my.yaml --steps steps.yaml -o json
    xpuflow catalog                            # clusters, GPUs, TPU topologies, NPU devices
    xpuflow step train --data out/data --output out/model   # one step, as a pod runs it
"""

from __future__ import annotations

import argparse
import sys

from .errors import XpuflowError

EPILOG = """examples:
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
    p = sub.add_parser("plan", help="show where each step would run on a cluster and its approximate $/hour")
    p.add_argument("--cluster", default="gke", help="shipped profile (gke, eks, aks, generic) or a cluster YAML file")
    p.add_argument("--steps", help="YAML file with 'steps: {name: {kind: ..., ...}}' (default: xpuflow's own steps)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument("--strict", action="store_true", help="exit 1 when a step cannot be placed on the cluster")
    c = sub.add_parser("catalog", help="list clusters, GPU models, TPU topologies and NPU devices")
    c.add_argument("--cluster", help="show one cluster's node pools")
    s = sub.add_parser("step", help="run one step in this process (what a pod runs): xpuflow step NAME --help",
                       add_help=False)
    s.add_argument("name", nargs="?", help="preprocess | train")
    s.add_argument("options", nargs=argparse.REMAINDER)
    return parser


def _plan(args: argparse.Namespace) -> int:
    from .cluster import Cluster
    from .defaults import STEP_NAMES, default_compute
    from .plan import format_table, load_steps_file, plan, to_json

    cluster = Cluster.load(args.cluster)
    steps = load_steps_file(args.steps) if args.steps else {s: default_compute(s) for s in STEP_NAMES}
    rows = plan(cluster, steps)
    sys.stdout.write(format_table(cluster, rows) if args.output == "table" else to_json(rows) + "\n")
    return 1 if args.strict and any(r.problem for r in rows) else 0


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
            print(f"  {pool.name:<20} {what:<45} purpose={','.join(pool.purpose):<28} capacity={','.join(pool.capacity)}")
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
    return 0


def _step(args: argparse.Namespace) -> int:
    import logging

    from .steps import STEPS, build_parser, run

    if not args.name or args.name in ("-h", "--help"):
        print("usage: xpuflow step NAME [--option VALUE ...]\nsteps: " + ", ".join(STEPS))
        print("each step's options: xpuflow step NAME --help")
        return 0 if args.name else 2
    if any(o in ("-h", "--help") for o in args.options):
        build_parser(args.name).print_help()
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(args.name, args.options)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return {"plan": _plan, "catalog": _catalog, "step": _step}[args.command](args)
    except XpuflowError as e:
        print(f"xpuflow {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
