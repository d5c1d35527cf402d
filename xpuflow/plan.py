"""``xpuflow plan``: where each step would run on a cluster, and roughly what it costs.

Pure functions: steps in, rows and text out. The CLI prints them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import admission
from .cluster import Cluster
from .compute import Compute
from .errors import PipelineFileError, PlacementError
from .podspec import dicts
from .placement import Placement

__all__ = ["PlanRow", "plan", "format_table", "load_steps_file", "run_cost", "to_json"]


@dataclass(frozen=True)
class PlanRow:
    step: str
    compute: Compute | None  # None for a task read from a pipeline xpuflow did not declare
    placement: Placement | None
    problem: str | None = None
    what: str = ""  # the hardware asked for, when there is no Compute
    pods: int = 1  # a step run in N shards: N pods (an Indexed Job), each paying what one pod pays
    fanout: str = ""  # what those pods are, when not shards (a mapped Airflow task's map indexes)

    @property
    def price(self) -> float | None:
        """$/hour of all the step's pods' nodes."""
        p = self.placement
        return None if p is None or p.price_per_hour is None else p.price_per_hour * self.pods

    @property
    def hardware(self) -> str:
        return self.compute.hardware if self.compute is not None else self.what


def plan(cluster: Cluster, steps: Mapping[str, Compute], pods: Mapping[str, int] | None = None) -> list[PlanRow]:
    """Place every step (``pods``: a sharded step's pod count); a step the cluster cannot run gets its reason
    instead of a placement."""
    rows = []
    for name, compute in steps.items():
        count = (pods or {}).get(name, 1)
        try:
            rows.append(PlanRow(name, compute, cluster.place(compute), pods=count))
        except PlacementError as e:
            rows.append(PlanRow(name, compute, None, str(e), pods=count))
    return rows


def load_steps_file(path: str | os.PathLike[str]) -> dict[str, Compute]:
    """Read ``steps: {name: {kind: gpu, count: 1, ...}}`` from a YAML or JSON file."""
    from .safe_yaml import loads, read_text

    where = os.fspath(path)
    data = loads(read_text(path, what="steps file", error=PipelineFileError), where, error=PipelineFileError)
    if not isinstance(data, dict) or not isinstance(data.get("steps"), dict) or not data["steps"]:
        raise PipelineFileError(f"{where}: expected a mapping 'steps:' of step name -> compute, e.g. "
                           "steps: {train: {kind: gpu, count: 1, model: l4}}")
    return {name: Compute.from_dict(spec, where=f"{where}: steps.{name}") for name, spec in data["steps"].items()}


def _price(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f}"


def _cells(row: PlanRow) -> list[list[str]]:
    p = row.placement
    if p is None:
        return [[row.step], [row.hardware], ["-"], ["not offered (see below)"], ["-"], ["-"], ["-"]]
    selector = [f"{k}={v}" for k, v in p.node_selector.items()] or ["(any node)"]
    terms = p.affinity.required if p.affinity else ()
    for i, term in enumerate(terms):
        prefix = "or " if i else ("" if len(terms) == 1 else "either ")
        selector.append(prefix + " and ".join(_expr(e) for e in dicts(term)))
    for pref in p.affinity.preferred if p.affinity else ():
        selector.append(f"prefer ({pref.weight}) " + " and ".join(_expr(e) for e in dicts(pref.expressions)))
    tolerations = [f"{t.key or '*'}{'=' + t.value if t.value else ''}:{t.effect or '*'}" for t in p.tolerations] or ["-"]
    hardware = [p.hardware + (" (spot)" if p.spot else "")]
    if p.accelerator and not p.claims:
        hardware.append(f"{p.accelerator[0]}: {p.accelerator[1]}" + (f" x {p.hosts} hosts" if p.hosts > 1 else ""))
    hardware += admission.describe(p)  # Kueue queue, DRA claims
    pools = [p.pool] if len(p.options) < 2 else [f"{i}. {c.pool.name}{' (spot)' if c.spot else ''}"
                                                  for i, c in enumerate(p.options, 1)]
    price = [_price(p.price_per_hour)]
    if row.pods > 1:
        hardware.append(f"x {row.pods} pods ({row.fanout or 'shards, an Indexed Job'})")
        price = [_price(row.price), f"({row.pods} x {_price(p.price_per_hour)})"]
    return [[row.step], hardware, pools, selector, tolerations, [p.instance_type or "-"], price]


def _expr(e: dict) -> str:  # type: ignore[type-arg]
    return f"{e['key']} {e['operator']} {','.join(e.get('values') or [])}".rstrip()


HEADERS = ["step", "hardware", "node pool", "node selector / affinity", "tolerations", "instance type", "step $/h"]


def choice_lines(rows: list[PlanRow]) -> list[str]:
    """Per placed step: the chosen pool and the runner-up, with what a run pays on each."""
    out = []
    for r in rows:
        p = r.placement
        if p is None or not p.options:
            continue
        line = f"  {r.step}: {p.options[0].describe()}"
        if p.runner_up is not None:
            line += f"; runner-up {p.runner_up.describe()}"
        if p.options[0].price is None and p.runner_up is not None and p.runner_up.price is not None:
            line += " (the chosen pool has no price in the profile: its cost is unknown)"
        out.append(line)
    return out


def format_table(cluster: Cluster, rows: list[PlanRow]) -> str:
    """A plain-text table (cells may span lines) plus total and the reasons for unplaced steps."""
    table = [[[h] for h in HEADERS]] + [_cells(r) for r in rows]
    widths = [max(len(line) for r in table for line in r[i]) for i in range(len(HEADERS))]
    out = [f"cluster {cluster.name} ({cluster.source})" + (f", region {cluster.region}" if cluster.region else "")]
    rule = "-+-".join("-" * w for w in widths)
    for n, cells in enumerate(table):
        height = max(len(c) for c in cells)
        for i in range(height):
            out.append(" | ".join((c[i] if i < len(c) else "").ljust(w) for c, w in zip(cells, widths)).rstrip())
        out.append(rule if n == 0 else "")
    placed = [r for r in rows if r.placement]
    priced = [r.price for r in placed if r.price is not None]
    total = f"{sum(priced):,.2f}" if priced else "n/a"
    unpriced = len(placed) - len(priced)
    out.append(f"approximate $/hour if every placed step ran at once (each step's share of its node): {total}"
               + (f" (+{unpriced} step(s) without a price in the profile)" if unpriced else ""))
    chosen = choice_lines(rows)
    if chosen:
        out.append("chosen pool and runner-up (price a step pays: its share of the node, by its scarcest resource):")
        out.extend(chosen)
    for r in rows:
        if r.problem:
            out.append(f"! {r.step}: {r.problem}")
    return "\n".join(out).rstrip() + "\n"


def run_cost(rows: list[PlanRow], minutes: Mapping[str, float]) -> str:
    """Approximate cost of one run: each placed step's node $/hour times its expected minutes."""
    lines, total, unknown = ["approximate cost per run (step $/hour x expected minutes):"], 0.0, []
    for r in rows:
        if r.placement is None:
            continue
        mins = minutes.get(r.step, 0.0)
        price = r.price
        if price is None:
            unknown.append(r.step)
            lines.append(f"  {r.step:<20} {mins:>6.0f} min x n/a")
            continue
        cost = price * mins / 60
        total += cost
        pods = f" ({r.pods} pods)" if r.pods > 1 else ""
        lines.append(f"  {r.step:<20} {mins:>6.0f} min x ${price:,.2f}/h{pods} = ${cost:,.3f}")
    lines.append(f"  total: ${total:,.2f}" + (f" + unpriced steps ({', '.join(unknown)})" if unknown else "")
                 + "  (override durations with --minutes STEP=MIN)")
    return "\n".join(lines) + "\n"


def to_json(rows: list[PlanRow]) -> str:
    data: list[dict[str, Any]] = []
    for r in rows:
        item: dict[str, Any] = {"step": r.step, "hardware": r.hardware, "pods": r.pods}
        if r.placement:
            item["placement"] = r.placement.to_dict()
        else:
            item["problem"] = r.problem
        data.append(item)
    return json.dumps(data, indent=2)
