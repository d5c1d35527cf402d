"""``xpuflow kueue --cluster NAME``: the cluster's Kueue set-up, rendered from its profile's ``kueue:`` section."""

from __future__ import annotations

import sys
from pathlib import Path

from ..cluster import Cluster
from ..render.kueue import setup
from ..steps.io import atomic_path

__all__ = ["render_setup"]


def render_setup(cluster_name: str, output: str | None = None) -> str:
    """The set-up as multi-document YAML, written to ``output`` (whole or not at all) or returned for stdout."""
    import yaml

    cluster = Cluster.load(cluster_name)
    docs = setup(cluster)
    text = (f"# Kueue set-up of cluster {cluster.name} ({cluster.source}); kubectl apply -f this file\n"
            + yaml.safe_dump_all(docs, sort_keys=False))
    if output:
        with atomic_path(Path(output)) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return text


def main(cluster_name: str, output: str | None) -> int:
    text = render_setup(cluster_name, output)
    if output:
        print(f"wrote {output} (Kueue set-up, cluster {cluster_name})")
    else:
        sys.stdout.write(text)
    return 0
