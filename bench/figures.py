"""Every benchmark's figures as a JSON file and a PNG chart of its ratios, in one place.

Each ``bench/*.py`` script ends with::

    from figures import record
    record("preprocess", figures={...}, ratios=[Ratio("xpuflow/pandas", 1.9, goal=1.5), ...])

which writes ``bench/results/<name>.json`` (the figures, the ratios with their goals, the machine and
the date) and ``bench/results/<name>.png`` (one bar per ratio against its baseline at 1.0, the goal
marked), both linked from ``docs/benchmarks.md``. ``BENCH_RESULTS=dir`` writes them elsewhere.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Ratio", "record", "machine"]

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Ratio:
    """A ratio against the benchmark's baseline: ``value`` x, to meet ``goal`` (``higher`` or ``lower`` is better)."""

    label: str
    value: float
    goal: float | None = None
    better: str = "higher"

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.value >= self.goal if self.better == "higher" else self.value <= self.goal


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {"system": f"{platform.system()} {platform.machine()}", "python": platform.python_version(),
                            "cpus": os.cpu_count()}
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
        info["cpu"] = model
        kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:")))
        info["memory_gib"] = round(kib / 2**20, 1)
        info["load_average"] = Path("/proc/loadavg").read_text().split()[:3]
    except (OSError, StopIteration, ValueError):
        pass
    return info


def record(name: str, figures: dict[str, Any], ratios: list[Ratio], *, title: str = "") -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.png``; returns their paths (printed too)."""
    out = Path(os.environ.get("BENCH_RESULTS") or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    data = {"benchmark": name, "date": when.isoformat(), "machine": machine(), "command": " ".join(sys.argv),
            "ratios": [{**asdict(r), "met": r.met} for r in ratios], "figures": figures}
    json_path, png_path = out / f"{name}.json", out / f"{name}.png"
    json_path.write_text(json.dumps(data, indent=2, default=float) + "\n")
    _chart(png_path, title or name, ratios, f"{data['machine'].get('cpu', data['machine']['system'])}, "
                                              f"{data['machine']['cpus']} CPUs; {when:%Y-%m-%d %H:%M} UTC")
    print(f"figures: {json_path.relative_to(out.parent) if out == RESULTS else json_path}, "
          f"{png_path.relative_to(out.parent) if out == RESULTS else png_path}")
    return json_path, png_path


def _chart(path: Path, title: str, ratios: list[Ratio], subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.55 * max(1, len(ratios))), dpi=110)
    ys = list(range(len(ratios)))[::-1]
    colors = ["#2b8a3e" if r.met else "#c92a2a" if r.met is False else "#495057" for r in ratios]
    ax.barh(ys, [r.value for r in ratios], color=colors, height=0.55)
    ax.axvline(1.0, color="black", linewidth=1)
    top = max([1.0, *(r.value for r in ratios), *(r.goal for r in ratios if r.goal is not None)]) * 1.25
    for y, r in zip(ys, ratios):
        if r.goal is not None:
            ax.plot([r.goal, r.goal], [y - 0.38, y + 0.38], color="#1c7ed6", linestyle="--", linewidth=1.5)
        goal = "" if r.goal is None else f"  (goal {'>=' if r.better == 'higher' else '<='} {r.goal:g}x)"
        ax.text(r.value + top * 0.01, y, f"{r.value:.3g}x{goal}", va="center", fontsize=8)
    ax.set_yticks(ys, [r.label for r in ratios], fontsize=8)
    ax.set_xlim(0, top)
    ax.set_xlabel("ratio against the baseline (1.0 = the baseline; dashed: goal)", fontsize=8)
    ax.set_title(f"{title}\n{subtitle}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
