"""Kubernetes manifests rendered from the parity matrix (Job for every case, Pod where it can)."""

from __future__ import annotations

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
