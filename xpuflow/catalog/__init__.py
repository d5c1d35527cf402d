"""The accelerator catalog: GPU models, MIG profiles, TPU slices, NPU devices.

Facts live in ``accelerators.yaml`` beside this module (with their sources);
this module only loads them, once, on first use, into small frozen records.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = [
    "GpuModel",
    "TpuVersion",
    "TpuShape",
    "NpuDevice",
    "catalog",
    "shipped_clusters",
    "read_yaml_text",
]


@dataclass(frozen=True)
class GpuModel:
    name: str
    vendor: str
    memory_gib: int
    product: str
    mig: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class TpuShape:
    """One TPU slice shape: topology -> chips, chips per host, hosts, machine type."""

    version: str
    topology: str
    chips: int
    chips_per_host: int
    hosts: int
    machine_type: str
    accelerator: str

    @property
    def multi_host(self) -> bool:
        return self.hosts > 1


@dataclass(frozen=True)
class TpuVersion:
    name: str
    accelerator: str
    machine_type: str
    chips_per_host: int
    topologies: tuple[str, ...]
    single_host: dict[str, dict[str, Any]]
    source: str

    def shape(self, topology: str) -> TpuShape:
        """The slice for ``topology``; callers check membership in ``topologies`` first."""
        chips = math.prod(int(d) for d in topology.split("x"))
        special = self.single_host.get(topology)
        if special:
            per_host, machine = int(special["chips_per_host"]), str(special["machine_type"])
        else:
            per_host, machine = self.chips_per_host, self.machine_type
        return TpuShape(
            version=self.name,
            topology=topology,
            chips=chips,
            chips_per_host=per_host,
            hosts=max(1, chips // per_host),
            machine_type=machine,
            accelerator=self.accelerator,
        )


@dataclass(frozen=True)
class NpuDevice:
    name: str
    vendor: str
    description: str
    resource: str
    labels: dict[str, str]
    source: str


@dataclass(frozen=True)
class Catalog:
    gpu_vendors: dict[str, str]  # vendor -> extended resource
    gpus: dict[str, GpuModel]
    tpus: dict[str, TpuVersion]
    tpu_resource: str
    npus: dict[str, NpuDevice]
    sources: dict[str, dict[str, str]]


def read_yaml_text(text: str, source: str = "xpuflow catalog") -> Any:
    """Parse YAML with the safe loader and its limits (xpuflow.safe_yaml: no alias bombs, no duplicate keys)."""
    from ..safe_yaml import loads

    return loads(text, source)


def _package_file(*parts: str) -> str:
    return resources.files(__package__).joinpath(*parts).read_text(encoding="utf-8")


@functools.cache
def catalog() -> Catalog:
    """Load ``accelerators.yaml`` once."""
    raw = read_yaml_text(_package_file("accelerators.yaml"))
    gpus = {
        name: GpuModel(
            name=name,
            vendor=g["vendor"],
            memory_gib=int(g["memory_gib"]),
            product=g["product"],
            mig=tuple(g.get("mig", ())),
            source=g["source"],
        )
        for name, g in raw["gpus"].items()
    }
    tpus = {
        name: TpuVersion(
            name=name,
            accelerator=t["accelerator"],
            machine_type=t["machine_type"],
            chips_per_host=int(t["chips_per_host"]),
            topologies=tuple(t["topologies"]),
            single_host=dict(t.get("single_host", {})),
            source=t["source"],
        )
        for name, t in raw["tpus"].items()
    }
    npus = {
        name: NpuDevice(
            name=name,
            vendor=n["vendor"],
            description=n["description"],
            resource=n["resource"],
            labels={str(k): str(v) for k, v in n.get("labels", {}).items()},
            source=n["source"],
        )
        for name, n in raw["npus"].items()
    }
    return Catalog(
        gpu_vendors={v: d["resource"] for v, d in raw["gpu_vendors"].items()},
        gpus=gpus,
        tpus=tpus,
        tpu_resource=raw["tpu_resource"],
        npus=npus,
        sources=raw["sources"],
    )


def shipped_clusters() -> tuple[str, ...]:
    """Names of the cluster profiles shipped in ``clusters/``."""
    folder = resources.files(__package__).joinpath("clusters")
    return tuple(sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")))


def cluster_file_text(name: str) -> str:
    return _package_file("clusters", f"{name}.yaml")
