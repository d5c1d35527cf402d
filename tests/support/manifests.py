"""Kubernetes manifests rendered from the parity matrix (Job for every case, Pod where it can)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import matrix

from xpuflow.render import kubernetes


def rendered() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for cluster, case, placement in matrix.renderable():
        common = dict(namespace="ml", image=matrix.IMAGE, command=["xpuflow"], args=["step", case])
        out[f"{cluster}/{case}/job"] = kubernetes.job(placement, name=case, **common)
        if placement.retries == 0:
            out[f"{cluster}/{case}/pod"] = kubernetes.pod(placement, name=case, **common)
    return out


def numbers(node: Any) -> Iterator[int | float]:
    """Every int and float inside a manifest (bools are not numbers here)."""
    if isinstance(node, dict):
        for v in node.values():
            yield from numbers(v)
    elif isinstance(node, list):
        for v in node:
            yield from numbers(v)
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield node
