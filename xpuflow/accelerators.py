"""Accelerator requests inside a ``Compute``: a catalog entry plus a count.

Names are matched exactly (case-insensitive) against ``catalog/accelerators.yaml``;
near misses get a "did you mean". Nothing here knows about clusters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .catalog import TpuShape, catalog
from .errors import ComputeError, invalid
from .quantity import MAX_INT32

__all__ = ["Gpu", "Tpu", "Npu", "Accelerator"]

_TOPOLOGY = re.compile(r"^\d+x\d+(x\d+)?$")


def _whole_count(where: str, value: object, what: str, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ComputeError(invalid("count", value, f"a whole number of {what} >= 1", where=where, fix=fix))
    if value > MAX_INT32:  # the per-node process count (numProcPerNode) is an int32
        raise ComputeError(invalid("count", value, f"at most {MAX_INT32} {what}", where=where,
                                   fix="ask for what one node holds"))
    return value


def _norm(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


@dataclass(frozen=True, kw_only=True)
class Gpu:
    """``count`` whole GPUs of ``model`` (any model of ``vendor`` when None), or MIG slices."""

    vendor: str = "nvidia"
    model: str | None = None
    count: int = 1
    mig: str | None = None

    def __post_init__(self) -> None:
        where = "Compute.gpu"
        cat = catalog()
        _whole_count(
            where, self.count, "GPUs",
            fix="GPUs are not shared by fractions; for part of a GPU ask for a MIG slice, "
                "e.g. Compute.gpu(model='a100-40gb', mig='1g.5gb')",
        )
        vendor = _norm(self.vendor)
        if vendor not in cat.gpu_vendors:
            raise ComputeError(invalid("vendor", self.vendor, f"one of {', '.join(cat.gpu_vendors)}",
                                       where=where, choices=cat.gpu_vendors))
        object.__setattr__(self, "vendor", vendor)
        model = _norm(self.model)
        if model is not None:
            if model not in cat.gpus:
                raise ComputeError(
                    invalid("model", self.model, f"a GPU model from the catalog: {', '.join(cat.gpus)}",
                            where=where, choices=cat.gpus,
                            fix="use the catalog name (`xpuflow catalog` lists them) or add the model to a cluster file")
                )
            if cat.gpus[model].vendor != vendor:
                raise ComputeError(
                    invalid("model", self.model, f"a {vendor} GPU ({model!r} is made by {cat.gpus[model].vendor})",
                            where=where, fix=f"pass vendor={cat.gpus[model].vendor!r} or choose a {vendor} model")
                )
            object.__setattr__(self, "model", model)
        if self.mig is not None:
            if model is None:
                raise ComputeError(
                    invalid("mig", self.mig, "a MIG profile together with the GPU model it slices", where=where,
                            fix="name the model too, e.g. Compute.gpu(model='a100-40gb', mig='1g.5gb')")
                )
            profiles = cat.gpus[model].mig
            mig = _norm(self.mig)
            if isinstance(mig, str) and mig.startswith("mig-"):
                mig = mig[4:]
            if mig not in profiles:
                allowed = f"a MIG profile of {model}: {', '.join(profiles)}" if profiles else f"nothing: {model} has no MIG profiles in the catalog"
                raise ComputeError(invalid("mig", self.mig, allowed, where=where, choices=profiles,
                                           fix="pick a listed profile, or drop mig for whole GPUs"))
            object.__setattr__(self, "mig", mig)

    def describe(self) -> str:
        what = self.model or "gpu (any model)"
        if self.mig:
            return f"{self.count}x {self.vendor} {what} mig {self.mig}"
        return f"{self.count}x {self.vendor} {what}"


@dataclass(frozen=True, kw_only=True)
class Tpu:
    """A TPU slice: ``version`` and ``topology``; shape facts come from the catalog."""

    version: str
    topology: str
    chips_per_host: int | None = None  # optional cross-check of the catalog's value

    def __post_init__(self) -> None:
        where = "Compute.tpu"
        cat = catalog()
        version = _norm(self.version)
        if version not in cat.tpus:
            raise ComputeError(invalid("version", self.version, f"one of {', '.join(cat.tpus)}",
                                       where=where, choices=cat.tpus))
        spec = cat.tpus[version]
        topology = _norm(self.topology)
        valid = ", ".join(spec.topologies)
        if not isinstance(topology, str) or not _TOPOLOGY.match(topology):
            raise ComputeError(invalid("topology", self.topology, f"a chip grid such as '2x4' or '2x2x1'; for "
                                       f"{version}: {valid}", where=where))
        if topology not in spec.topologies:
            raise ComputeError(
                invalid("topology", self.topology, f"a {version} topology: {valid}", where=where,
                        choices=spec.topologies, fix=f"pick one of the {version} topologies")
            )
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "topology", topology)
        shape = spec.shape(topology)
        if self.chips_per_host is not None and self.chips_per_host != shape.chips_per_host:
            table = ", ".join(f"{t}: {spec.shape(t).chips_per_host}" for t in spec.topologies)
            raise ComputeError(
                invalid("chips_per_host", self.chips_per_host,
                        f"{shape.chips_per_host} for {version} {topology} ({shape.machine_type}); "
                        f"{version} chips per host by topology: {table}", where=where,
                        fix="drop chips_per_host (the catalog knows it) or pick the topology that has it")
            )
        object.__setattr__(self, "chips_per_host", shape.chips_per_host)

    @property
    def shape(self) -> TpuShape:
        return catalog().tpus[self.version].shape(self.topology)

    @property
    def chips(self) -> int:
        return self.shape.chips

    @property
    def hosts(self) -> int:
        return self.shape.hosts

    @property
    def count(self) -> int:
        """Chips per host: what ``google.com/tpu`` is set to on each pod."""
        return self.chips_per_host

    def describe(self) -> str:
        shape = self.shape
        hosts = "1 host" if shape.hosts == 1 else f"{shape.hosts} hosts"
        return f"tpu {self.version} {self.topology} ({shape.chips} chips, {hosts})"


@dataclass(frozen=True, kw_only=True)
class Npu:
    """``count`` devices of an NPU/inference accelerator class from the catalog."""

    device: str
    count: int = 1

    def __post_init__(self) -> None:
        where = "Compute.npu"
        cat = catalog()
        device = _norm(self.device)
        if device not in cat.npus:
            raise ComputeError(invalid("device", self.device, f"one of {', '.join(cat.npus)}",
                                       where=where, choices=cat.npus))
        object.__setattr__(self, "device", device)
        _whole_count(where, self.count, "devices", fix="ask for one device or more")

    def describe(self) -> str:
        return f"{self.count}x {self.device}"


Accelerator = Gpu | Tpu | Npu
