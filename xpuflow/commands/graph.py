"""``xpuflow graph``: the pipeline drawn left to right, each step coloured by its compute class."""

from __future__ import annotations

from pathlib import Path

from ..cluster import Cluster
from ..errors import PlacementError, XpuflowError
from ..dsl.flow import Flow
from ..steps.io import atomic_path

__all__ = ["draw", "COLOURS"]

COLOURS = {"cpu": "#9ecae1", "gpu": "#74c476", "tpu": "#fdae6b", "npu": "#bcbddc"}


def draw(flow: Flow, output: str, cluster: Cluster | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    out = Path(output)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in ("svg", "png"):
        raise XpuflowError(f"-o {output!r} is not valid: the file must end in .svg or .png.")
    order = {s.name: i for i, s in enumerate(flow.tasks)}
    fig, ax = plt.subplots(figsize=(2.6 * len(flow.tasks) + 1, 2.8))
    ax.set_xlim(-0.2, 2.6 * len(flow.tasks))
    ax.set_ylim(0, 2.8)
    ax.axis("off")
    for spec in flow.tasks:
        x = 2.6 * order[spec.name]
        where = ""
        if cluster is not None:
            try:
                where = cluster.place(spec.compute).pool
            except PlacementError:
                where = "not offered"
        ax.add_patch(FancyBboxPatch((x, 0.9), 2.0, 1.1, boxstyle="round,pad=0.05",
                                    facecolor=COLOURS[spec.compute.kind], edgecolor="#333333"))
        ax.text(x + 1.0, 1.68, spec.name, ha="center", va="center", fontsize=11, weight="bold")
        ax.text(x + 1.0, 1.38, spec.compute.hardware, ha="center", va="center", fontsize=7.5)
        if where:
            ax.text(x + 1.0, 1.1, where, ha="center", va="center", fontsize=7, style="italic")
        for upstream in sorted(set(spec.inputs.values()), key=order.get):
            ux = 2.6 * order[upstream] + 2.05
            ax.annotate("", xy=(x - 0.05, 1.45), xytext=(ux, 1.45 + 0.25 * (order[spec.name] - order[upstream] - 1)),
                        arrowprops={"arrowstyle": "->", "color": "#333333",
                                    "connectionstyle": f"arc3,rad={-0.25 if order[spec.name] - order[upstream] > 1 else 0}"})
    for i, (kind, colour) in enumerate(COLOURS.items()):
        ax.add_patch(FancyBboxPatch((0.3 + 1.1 * i, 0.2), 0.25, 0.25, boxstyle="square,pad=0", facecolor=colour))
        ax.text(0.62 + 1.1 * i, 0.32, kind.upper(), va="center", fontsize=8)
    title = flow.name + (f" on {cluster.name}" if cluster else "")
    ax.set_title(title, fontsize=12)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=fmt, bbox_inches="tight")
    plt.close(fig)
    return out
