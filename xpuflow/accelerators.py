"""Accelerator requests inside a ``Compute``: a catalog entry plus a count.

Names are matched exactly (case-insensitive) against ``catalog/accelerators.yaml``;
near misses get a "did you mean". Nothing here knows about clusters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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
    """``count`` whole GPUs, or MIG slices, of one model or of ordered candidate models.

    ``model`` is one catalog name, or a list of acceptable names in order of preference;
    ``gpu_memory`` ("40Gi") asks for any model of ``vendor`` with at least that much memory.
    ``candidates`` holds the resolved names (empty: any model of ``vendor``); ``ordered``
    says whether their order is the user's preference (a list) or open to the cheapest.
    """

    vendor: str = "nvidia"
    model: str | tuple[str, ...] | None = None
    count: int = 1
    mig: str | None = None
    gpu_memory: str | None = None
    candidates: tuple[str, ...] = field(default=(), init=False)
    ordered: bool = field(default=True, init=False)

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
        names = self._models(where, vendor)
        if self.gpu_memory is not None:
            if names:
                raise ComputeError(invalid("gpu_memory", self.gpu_memory, "a minimum without a model (the catalog "
                                           "picks the models)", where=where,
                                           fix="give model= or gpu_memory=, not both"))
            names = _with_memory(where, vendor, self.gpu_memory)
            object.__setattr__(self, "ordered", False)
        object.__setattr__(self, "candidates", names)
        model = names[0] if len(names) == 1 and self.gpu_memory is None else (names or None)
        object.__setattr__(self, "model", model)
        if self.mig is not None:
            if not isinstance(model, str):
                raise ComputeError(
                    invalid("mig", self.mig, "a MIG profile together with the one GPU model it slices", where=where,
                            fix="name one model, e.g. Compute.gpu(model='a100-40gb', mig='1g.5gb')")
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

    def _models(self, where: str, vendor: str) -> tuple[str, ...]:
        """The model names asked for, checked against the catalog, in the order given."""
        cat = catalog()
        raw = self.model
        if raw is None:
            return ()
        several = isinstance(raw, (list, tuple))
        if several and not raw:
            raise ComputeError(invalid("model", list(raw), "one catalog name or a non-empty list of them", where=where,
                                       fix="list at least one model, or drop model= for any model"))
        names: list[str] = []
        for item in (raw if several else [raw]):
            name = _norm(item)
            shown = f"model[{len(names)}]" if several else "model"
            if name not in cat.gpus:
                raise ComputeError(
                    invalid(shown, item, f"a GPU model from the catalog: {', '.join(cat.gpus)}", where=where,
                            choices=cat.gpus,
                            fix="use the catalog name (`xpuflow catalog` lists them) or add the model to a cluster file")
                )
            if cat.gpus[name].vendor != vendor:
                raise ComputeError(
                    invalid(shown, item, f"a {vendor} GPU ({name!r} is made by {cat.gpus[name].vendor})",
                            where=where, fix=f"pass vendor={cat.gpus[name].vendor!r} or choose a {vendor} model")
                )
            if name in names:
                raise ComputeError(invalid(shown, item, "each model once", where=where, fix="remove the repeat"))
            names.append(name)
        return tuple(names)

    @property
    def models(self) -> tuple[str, ...]:
        """The models named (one, or the ordered list); empty for any model or a memory minimum."""
        return () if self.gpu_memory is not None else self.candidates

    @property
    def min_memory_gib(self) -> float | None:
        """The ``gpu_memory`` minimum in GiB, if one was given."""
        from .quantity import parse_memory

        return None if self.gpu_memory is None else float(parse_memory("gpu_memory", self.gpu_memory).value) / 2**30

    def accepts(self, model: str) -> bool:
        """Whether a node's GPU ``model`` is one this request may run on."""
        cat = catalog()
        return cat.gpus[model].vendor == self.vendor and (not self.candidates or model in self.candidates)

    def describe(self) -> str:
        if self.gpu_memory is not None:
            what = f"gpu >= {self.gpu_memory} ({', '.join(self.candidates)})"
        elif len(self.candidates) > 1:
            what = "[" + ", ".join(self.candidates) + "]"
        else:
            what = self.model or "gpu (any model)"
        if self.mig:
            return f"{self.count}x {self.vendor} {what} mig {self.mig}"
        return f"{self.count}x {self.vendor} {what}"


def _with_memory(where: str, vendor: str, minimum: object) -> tuple[str, ...]:
    """Catalog models of ``vendor`` with at least ``minimum`` memory, smallest first."""
    from .quantity import parse_memory

    need = parse_memory("gpu_memory", minimum, where=where)
    models = [g for g in catalog().gpus.values() if g.vendor == vendor]
    fit = sorted((g for g in models if g.memory_gib * 2**30 >= need.value), key=lambda g: g.memory_gib)
    if not fit:
        largest = max(models, key=lambda g: g.memory_gib)
        raise ComputeError(
            invalid("gpu_memory", minimum, f"at most {largest.memory_gib}Gi: no {vendor} GPU in the catalog has more "
                    f"(the largest is {largest.name}, {largest.memory_gib} GiB)", where=where,
                    fix="lower the minimum, or spread the model over several GPUs (count=)")
        )
    return tuple(g.name for g in fit)


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
