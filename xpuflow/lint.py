"""``xpuflow lint``: placement problems a cluster would only show at run time, found before submitting.

Each finding names the step. Errors make ``xpuflow lint`` exit 1; warnings do not.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import admission
from .cluster import Cluster
from .compute import Compute
from .errors import XpuflowError
from .dsl.flow import Flow
from .steps import builtin_name

__all__ = ["Finding", "lint", "uses"]


def uses(step) -> set[str]:  # noqa: ANN001 - a Step
    """The hardware a step's code can use: the kind its own Compute declares, and the CPU. A task asking for
    another accelerator holds it idle. A step that declares no Compute may use any."""
    return {step.compute.kind, "cpu"} if step.compute is not None else {"cpu", "gpu", "tpu", "npu"}


@dataclass(frozen=True)
class Finding:
    level: str  # error | warning | info
    step: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: step {self.step!r}: {self.message}"


def lint(flow: Flow, cluster: Cluster, backend: str = "kfp") -> list[Finding]:
    """Check every step of ``flow`` placed on ``cluster`` for ``backend`` (kfp, airflow or k8s)."""
    out: list[Finding] = []
    for spec in flow.tasks:
        c = spec.compute
        step_uses = uses(spec.step)
        if c.kind not in step_uses:
            out.append(Finding("error", spec.name, f"asks for {c.hardware} but the {spec.step.name} step only uses "
                               f"{'/'.join(sorted(step_uses))}: the accelerator would sit idle. Fix: "
                               f"Compute.{sorted(step_uses)[0]}(...)"))
        placed, notes = admission.place(cluster, c)  # a missing DRA class is a warning; the rest is still checked
        out += [Finding(level, spec.name, message) for level, message in notes]
        if placed is None:
            continue
        p = placed
        out += [Finding(level, spec.name, message) for level, message in admission.notes(p, backend)]
        if len(p.options) > 1:
            out.append(Finding("info", spec.name, _where_it_may_land(c, p)))
        sized = builtin_name(spec.step) is not None and c == spec.step.compute  # xpuflow's own, sized Compute
        if c.memory_request == default_compute_memory(c) and not sized:
            out.append(Finding("warning", spec.name, f"memory request is the {c.kind} default ({c.memory_request}); "
                               "size it for your data so the autoscaler picks the right node"))
        taints = next(pool.taints for pool in cluster.node_pools if pool.name == p.pool)
        tolerations = p.tolerations + (p.kueue.injected_tolerations if p.kueue else ())  # a flavor may add them
        tolerated = {(t.key, t.value, t.effect) for t in tolerations}
        for taint in taints:
            exists = any(t.key == taint.key and t.operator == "Exists" and t.effect == taint.effect
                         for t in tolerations)
            if (taint.key, taint.value, taint.effect) not in tolerated and not exists:
                out.append(Finding("error", spec.name, f"pool {p.pool!r} is tainted {taint.key}={taint.value}:"
                                   f"{taint.effect} but the step does not tolerate it: it would stay Pending"))
        if c.kind == "tpu" and not p.claims:
            per_pod = int(p.limits.get("google.com/tpu", 0))
            if per_pod != c.chips_per_host or per_pod * p.hosts != c.chips:
                out.append(Finding("error", spec.name, f"google.com/tpu={per_pod} x {p.hosts} hosts does not make "
                                   f"the {c.chips} chips of {c.accelerator.topology}"))  # type: ignore[union-attr]
            if p.hosts > 1 and backend in ("kfp", "airflow"):
                out.append(Finding("error", spec.name, f"{c.hardware} is multi-host: {backend} runs one pod per "
                                   "task. Fix: a single-host topology, or submit the slice as a JobSet "
                                   "(xpuflow compile --backend k8s)"))
        count = getattr(c.accelerator, "count", 1) if c.kind == "gpu" else 1
        if count > 1:
            out.append(Finding("warning", spec.name, f"{count} GPUs for one {spec.step.name} process: {count - 1} "
                               "would sit idle unless the pod launches one process per GPU. Fix: run it under "
                               "torchrun (--nproc-per-node N) or ask for count=1"))
        if spec.step.resumable and c.kind != "cpu" and not c.spot and _spot_fits(cluster, c):
            out.append(Finding("warning", spec.name, f"{c.hardware} on on-demand capacity while the cluster has "
                               f"spot pools for it; the {spec.step.name} step resumes after preemption, so "
                               "spot='prefer' (or True) is safe"))
    return out


def _spot_fits(cluster: Cluster, c: Compute) -> bool:
    """Whether the cluster has a spot pool this very Compute would be placed on."""
    try:
        cluster.place(c.replace(spot=True))
    except XpuflowError:
        return False
    return True


def _where_it_may_land(c: Compute, p) -> str:  # noqa: ANN001 - a Placement
    """The candidates in order and the pools that match each (from the placement's options)."""
    acc = c.accelerator
    candidates = getattr(acc, "candidates", ())
    if len(candidates) > 1:
        cells = []
        for model in candidates:
            pools = [o.pool.name + (" spot" if o.spot else "") for o in p.options if o.model == model]
            cells.append(f"{model} ({', '.join(pools) or 'no pool fits'})")
        order = "in order" if acc.ordered else "cheapest first"
        return f"candidates {order}: {', '.join(cells)}"
    return "spot first, on-demand as the fallback: " + ", ".join(
        f"{o.pool.name} ({'spot' if o.spot else 'on-demand'})" for o in p.options)


def default_compute_memory(c: Compute):  # noqa: ANN201 - a Quantity
    """The memory request the kind's constructor defaults to (what an unsized step asks for)."""
    builders = {"cpu": lambda: Compute.cpu(), "gpu": lambda: Compute.gpu(),
                "tpu": lambda: Compute.tpu(version="v5e", topology="1x1"), "npu": lambda: Compute.npu(device="intel-npu")}
    return builders[c.kind]().memory_request


