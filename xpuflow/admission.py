"""What `xpuflow lint` and `xpuflow plan` say about a step's Kueue queue and DRA claims.

Plain (level, message) pairs; :mod:`xpuflow.lint` turns them into findings. A claim the
profile has no DeviceClass for is a warning here: the rest of the step is still
checked, placed without the claim, and `compile` refuses the claim with the same reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import PlacementError

if TYPE_CHECKING:
    from .cluster import Cluster
    from .compute import Compute
    from .placement import Placement

__all__ = ["place", "notes", "describe", "profile_lines"]


def place(cluster: Cluster, compute: Compute) -> tuple[Placement | None, list[tuple[str, str]]]:
    """Place ``compute``; a claim the profile cannot serve becomes a warning and the step is placed without it."""
    try:
        return cluster.place(compute), []
    except PlacementError as e:
        if not compute.claim:
            return None, [("error", str(e))]
        try:
            unclaimed = cluster.place(compute.replace(claim=False))
        except PlacementError:
            return None, [("error", str(e))]
        return unclaimed, [("warning", f"the claimed device class is missing from the profile: {e} "
                                       "(the rest of the step is checked without the claim)")]


def profile_lines(cluster: Cluster) -> list[str]:
    """What the profile offers for Kueue and DRA, for `xpuflow catalog --cluster` (empty when neither)."""
    out = []
    k = cluster.kueue
    if k:
        out.append(f"kueue: queues {', '.join(k.local_queues)} (namespace {k.namespace}, ClusterQueue {k.cluster_queue})"
                   + (f"; priorities {', '.join(f'{n} ({v})' for n, v in k.priorities.items())}" if k.priorities else "")
                   + (f"; topology levels {', '.join(k.levels)}" if k.levels else "")
                   + f"; `xpuflow kueue --cluster {cluster.name}` renders the set-up")
    if cluster.dra:
        for kind in ("gpu", "tpu", "npu"):
            for key, c in getattr(cluster.dra, kind).items():
                out.append(f"dra: {kind} {key} -> DeviceClass {c.device_class}"
                           + (f" (MIG: {c.mig_class})" if c.mig_class else "") + "; Compute(..., claim=True)")
    return out


def describe(p: Placement) -> list[str]:
    """The queue and the claims of a placement, one line each (empty when it has neither)."""
    lines = [p.kueue.describe()] if p.kueue else []
    return lines + [f"claim {c.describe()}" for c in p.claims]


def notes(p: Placement, backend: str) -> list[tuple[str, str]]:
    """Info lines for the queue and claims, and an error for claims on a backend that cannot render them."""
    out = [("info", line) for line in describe(p)]
    if p.claims and backend == "kfp":
        from .render import _HINTS

        out.append(("error", f"KFP cannot express claims: {_HINTS['claims']}"))
    return out
