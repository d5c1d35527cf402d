"""Node allocatable: what one node of a pool gives to pods.

    allocatable = capacity - kube-reserved - system-reserved - eviction threshold
    left for a step = allocatable - the requests of the DaemonSets on that node

The reservations are the provider's published formulas by node size
(``catalog/reservations.yaml``, each with its source); a cluster profile names
its formula (``reservations.formula``), its DaemonSet overhead per pool kind
(``daemonsets``) and, per pool, ``max_pods`` or a measured ``allocatable``
(from ``kubectl describe node``) that replaces the formula.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .quantity import parse_cpu, parse_memory

__all__ = ["Allocatable", "FORMULAS", "formulas", "reserved", "compute"]

FORMULAS = ("gke", "eks", "aks", "fixed")
MIB = 2**20
GIB = 2**30


@dataclass(frozen=True)
class Allocatable:
    """One node of a pool, in millicores and bytes."""

    capacity_cpu_m: int
    capacity_memory: int
    reserved_cpu_m: int  # kube-reserved + system-reserved
    reserved_memory: int
    eviction: int  # hard eviction threshold (memory)
    daemonset_cpu_m: int
    daemonset_memory: int
    basis: str  # where the numbers come from: "gke formula", "measured", ...

    @property
    def node_cpu_m(self) -> int:
        """Allocatable CPU as the node reports it (before DaemonSets)."""
        return self.capacity_cpu_m - self.reserved_cpu_m

    @property
    def node_memory(self) -> int:
        return self.capacity_memory - self.reserved_memory - self.eviction

    @property
    def cpu_m(self) -> int:
        """CPU a step's pod can request: allocatable minus DaemonSets."""
        return self.node_cpu_m - self.daemonset_cpu_m

    @property
    def memory(self) -> int:
        return self.node_memory - self.daemonset_memory

    def text(self) -> str:
        return f"{cpu_text(self.cpu_m)} cpu, {memory_text(self.memory)} memory"


def cpu_text(millicores: int) -> str:
    return str(millicores // 1000) if millicores % 1000 == 0 else f"{millicores}m"


def memory_text(value: int) -> str:
    mib = value // MIB
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


@functools.cache
def formulas() -> dict[str, Any]:
    """``catalog/reservations.yaml``, loaded once."""
    from .catalog import _package_file, read_yaml_text

    return read_yaml_text(_package_file("reservations.yaml"))


def _m(text: str) -> int:
    return int(parse_cpu("cpu", text).value * 1000)


def _b(text: str) -> int:
    return int(parse_memory("memory", text).value)


def _tiers(total: Decimal, tiers: list[list[Any]]) -> Decimal:
    """Sum of fraction x the part of ``total`` in each band (bands in order, ``None`` = the rest)."""
    out, start = Decimal(0), Decimal(0)
    for width, fraction in tiers:
        end = total if width is None else min(total, start + Decimal(str(width)))
        if end > start:
            out += (end - start) * Decimal(str(fraction))
        if width is None or end >= total:
            break
        start = end
    return out


def reserved(formula: str, cpu_m: int, memory: int, max_pods: int | None) -> tuple[int, int, int]:
    """(reserved millicores, reserved memory bytes, eviction bytes) of a node under a provider formula."""
    spec = formulas()["formulas"][formula]
    cpu, mem = spec["cpu"], spec["memory"]
    if "tiers" in cpu:
        cpu_res = int(_tiers(Decimal(cpu_m), [[None if w is None else w * 1000, f] for w, f in cpu["tiers"]]))
    else:
        cores = cpu_m // 1000
        table = {int(k): _m(v) for k, v in cpu["table"].items()}
        above = cpu["above"]
        if cores in table:
            cpu_res = table[cores]
        elif cores > above["cores"]:
            cpu_res = _m(above["base"]) + _m(above["per_core"]) * (cores - above["cores"])
        else:  # a small size between published points: the next point up
            cpu_res = table[min(k for k in table if k >= cores)]
    if "tiers_gib" in mem:
        if memory < mem["small_gib"] * GIB:
            mem_res = _b(mem["small"])
        else:
            mem_res = int(_tiers(Decimal(memory), [[None if w is None else w * GIB, f] for w, f in mem["tiers_gib"]]))
    else:
        pods = max_pods or 110
        mem_res = _b(mem["per_pod"]) * pods + _b(mem["base"])
        if "at_most" in mem:
            mem_res = min(mem_res, int(memory * Decimal(str(mem["at_most"]))))
    return cpu_res, mem_res, _b(spec["eviction"])


def compute(
    *,
    cpu_m: int,
    memory: int,
    reservations: dict[str, Any],
    daemonsets: tuple[int, int],
    max_pods: int | None,
    measured: tuple[int, int] | None,
) -> Allocatable:
    """The allocatable of one node: a measured value when the profile gives one, else the formula."""
    ds_cpu, ds_mem = daemonsets
    if measured is not None:
        return Allocatable(cpu_m, memory, cpu_m - measured[0], memory - measured[1], 0, ds_cpu, ds_mem, "measured")
    formula = reservations.get("formula", "fixed")
    if formula == "fixed":
        parts = [r for r in (reservations.get("kube_reserved"), reservations.get("system_reserved")) if r]
        res_cpu, res_mem = sum(_m(r["cpu"]) for r in parts), sum(_b(r["memory"]) for r in parts)
        eviction = _b(reservations.get("eviction", "100Mi"))
        return Allocatable(cpu_m, memory, res_cpu, res_mem, eviction, ds_cpu, ds_mem, "profile's fixed reservations")
    res_cpu, res_mem, eviction = reserved(formula, cpu_m, memory, max_pods or reservations.get("max_pods"))
    return Allocatable(cpu_m, memory, res_cpu, res_mem, eviction, ds_cpu, ds_mem, f"{formula} formula")
