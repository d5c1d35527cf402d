"""``Compute``: what one pipeline step needs, declared once, validated when built.

    Compute.cpu(cpu="2", memory="4Gi")
    Compute.gpu(count=1, model="l4")
    Compute.tpu(version="v5e", topology="2x4")
    Compute.npu(device="intel-npu")

A ``Compute`` knows nothing about clusters; ``Cluster.place(compute)`` resolves
it against a cluster profile into a ``Placement``. Everything here is immutable;
change a declaration with ``compute.replace(...)``, which validates again.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

from .accelerators import Accelerator, Gpu, Npu, Tpu
from .errors import ComputeError, invalid, whole_number
from .params import Param, accepts_parameters, replaced_params
from .quantity import MAX_INT64, Quantity, parse_cpu, parse_memory
from .security import Security

__all__ = ["Compute", "Security", "KINDS", "PURPOSES"]

Kind = Literal["cpu", "gpu", "tpu", "npu"]
KINDS: tuple[str, ...] = ("cpu", "gpu", "tpu", "npu")
PURPOSES: tuple[str, ...] = ("general", "training", "inference")
SPOT_CHOICES = (True, False, "prefer")  # spot only, on-demand only, spot first with on-demand fallback
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MAX_RETRIES = 20


def _purpose_of(where: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Accept ``pool=``, the old name of ``purpose=``, for one release: warn, and refuse both at once."""
    if "pool" not in kwargs:
        return kwargs
    kwargs = dict(kwargs)
    old = kwargs.pop("pool")
    if "purpose" in kwargs:
        raise ComputeError(invalid("pool", old, "unset when purpose= is given (pool= is the deprecated name of "
                                   "purpose=)", where=where, fix=f"keep purpose={kwargs['purpose']!r} and drop pool="))
    warnings.warn(f"{where}: pool= is deprecated and will be removed in the next release; write purpose={old!r} "
                  "(the step's purpose, not a node pool)", DeprecationWarning, stacklevel=3)
    kwargs["purpose"] = old
    return kwargs


def _pool_renamed(constructor: Any) -> Any:
    @functools.wraps(constructor)
    def build(cls: type, *args: Any, **kwargs: Any) -> Any:
        return constructor(cls, *args, **_purpose_of(f"Compute.{constructor.__name__}", kwargs))

    return build


_DEFAULT = object()  # sentinel: "use the kind's default"


@dataclass(frozen=True, kw_only=True)
class Compute:
    """What a step needs. Build with ``Compute.cpu/gpu/tpu/npu``."""

    kind: Kind
    cpu_request: Quantity
    memory_request: Quantity
    cpu_limit: Quantity | None = None
    memory_limit: Quantity | None = None
    ephemeral_storage: Quantity | None = None
    shm: Quantity | None = None
    accelerator: Accelerator | None = None
    spot: bool | Literal["prefer"] = False
    purpose: str = "general"  # what the step does (PURPOSES); the profile's pools say which purposes they serve
    timeout: int | None = None
    retries: int = 0
    priority_class: str | None = None
    grace_period: int | None = None
    security: Security = field(default_factory=Security)
    queue: str | None = None  # Kueue LocalQueue (the cluster profile's kueue.local_queues)
    priority: str | None = None  # Kueue WorkloadPriorityClass (the profile's kueue.priorities)
    require_topology: str | None = None  # Kueue topology level (profile kueue.topology.levels) for all pods
    prefer_topology: str | None = None
    claim: bool = False  # request the accelerator through a DRA ResourceClaim (profile dra:)
    # values a KFP pipeline parameter gives at run time: (constructor argument, Param); see xpuflow/params.py
    params: tuple[tuple[str, Param], ...] = ()

    # ------------------------------------------------------------------ build
    def __post_init__(self) -> None:
        where = f"Compute.{self.kind}" if self.kind in KINDS else "Compute"
        if self.kind not in KINDS:
            raise ComputeError(invalid("kind", self.kind, f"one of {', '.join(KINDS)}", choices=KINDS, where="Compute"))
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen
        cpu = self.cpu_request if isinstance(self.cpu_request, Quantity) else parse_cpu("cpu", self.cpu_request, where=where)
        mem = (
            self.memory_request
            if isinstance(self.memory_request, Quantity)
            else parse_memory("memory", self.memory_request, where=where)
        )
        set_("cpu_request", cpu)
        set_("memory_request", mem)
        cpu_limit = cpu if self.cpu_limit is None else _as_q(parse_cpu, "cpu_limit", self.cpu_limit, where)
        mem_limit = mem if self.memory_limit is None else _as_q(parse_memory, "memory_limit", self.memory_limit, where)
        for name, limit, request, req_name in (
            ("cpu_limit", cpu_limit, cpu, "cpu"),
            ("memory_limit", mem_limit, mem, "memory"),
        ):
            if limit < request:
                raise ComputeError(
                    invalid(name, limit.text, f"a limit at or above the request ({req_name}={request.text!r})",
                            where=where, fix=f"raise {name} or lower {req_name}")
                )
        set_("cpu_limit", cpu_limit)
        set_("memory_limit", mem_limit)
        if self.ephemeral_storage is not None:
            set_("ephemeral_storage", _as_q(parse_memory, "ephemeral_storage", self.ephemeral_storage, where))
        if self.shm is not None:
            shm = _as_q(parse_memory, "shm", self.shm, where)
            if not shm < mem_limit:
                raise ComputeError(
                    invalid("shm", shm.text, f"less than the memory limit ({mem_limit.text}), since a memory-backed "
                            "/dev/shm counts against it", where=where, fix="lower shm or raise memory")
                )
            set_("shm", shm)
        self._check_accelerator(where)
        if not (isinstance(self.spot, bool) or self.spot == "prefer"):
            raise ComputeError(invalid("spot", self.spot, "True (spot nodes only), False (on-demand only) or 'prefer' "
                                       "(spot first, on-demand when no spot node is free)", where=where,
                                       choices=("prefer",)))
        if self.purpose not in PURPOSES:
            raise ComputeError(
                invalid("purpose", self.purpose, f"one of {', '.join(PURPOSES)}", where=where, choices=PURPOSES,
                        fix="training and inference work use separate node pools; pick the purpose of this step")
            )
        if self.timeout is not None:  # a numpy integer (a sweep's) is kept as an int, as YAML and JSON need
            limit = f"whole seconds >= 1 and <= {MAX_INT64} (an int64), or None for no limit"
            set_("timeout", whole_number(where, "timeout", self.timeout, low=1, high=MAX_INT64, allowed=limit))
        set_("retries", whole_number(where, "retries", self.retries, low=0, high=_MAX_RETRIES,
                                     allowed=f"a whole number from 0 to {_MAX_RETRIES}"))
        if self.priority_class is not None and not (
            isinstance(self.priority_class, str) and len(self.priority_class) <= 253 and _DNS_SUBDOMAIN.match(self.priority_class)
        ):
            raise ComputeError(
                invalid("priority_class", self.priority_class, "the name of a PriorityClass (lowercase DNS subdomain)",
                        where=where, fix="use the name shown by `kubectl get priorityclass`")
            )
        if self.grace_period is not None:
            grace = "whole seconds from 0 to 3600 (the pod's terminationGracePeriodSeconds)"
            set_("grace_period", whole_number(where, "grace_period", self.grace_period, low=0, high=3600, allowed=grace))
        if not isinstance(self.security, Security):
            raise ComputeError(invalid("security", self.security, "a xpuflow.Security", where=where,
                                       fix="pass security=Security(...)"))
        from .kueue import check_compute_options

        check_compute_options(self, where)

    def _check_accelerator(self, where: str) -> None:
        expected = {"cpu": type(None), "gpu": Gpu, "tpu": Tpu, "npu": Npu}[self.kind]
        if not isinstance(self.accelerator, expected):
            raise ComputeError(
                invalid("accelerator", self.accelerator, f"{expected.__name__} for a {self.kind} Compute", where=where,
                        fix=f"build it with Compute.{self.kind}(...)")
            )

    # ------------------------------------------------------------ constructors
    @classmethod
    @_pool_renamed
    @accepts_parameters
    def cpu(cls, *, cpu: str | int | float = "1", memory: str | int = "2Gi", purpose: str = "general",
            **options: Any) -> Compute:
        """CPU-only work: data preparation, orchestration, export and compilation."""
        return cls(kind="cpu", cpu_request=cpu, memory_request=memory, purpose=purpose, **_options("cpu", options))

    @classmethod
    @_pool_renamed
    @accepts_parameters
    def gpu(
        cls,
        count: int = 1,
        model: str | list[str] | tuple[str, ...] | None = None,
        *,
        vendor: str = "nvidia",
        mig: str | None = None,
        gpu_memory: str | None = None,
        cpu: str | int | float = "4",
        memory: str | int = "16Gi",
        shm: Any = _DEFAULT,
        purpose: str = "training",
        **options: Any,
    ) -> Compute:
        """Whole GPUs (``count``) of a ``model``, or ``count`` MIG slices of profile ``mig``.

        ``model`` may be a list of acceptable models in order of preference
        (``["h100-80gb", "a100-80gb"]``); ``gpu_memory="40Gi"`` accepts any model with at
        least that much memory, the cheapest that fits first.

        Training pods get a memory-backed ``/dev/shm`` (data loader workers need it)
        unless ``shm=None``; its default is a quarter of the memory limit, at most 8Gi.
        """
        if isinstance(model, list):
            model = tuple(model)
        accelerator = Gpu(vendor=vendor, model=model, count=count, mig=mig, gpu_memory=gpu_memory)
        return cls._with_shm("gpu", accelerator, cpu, memory, shm, purpose, options)

    @classmethod
    @_pool_renamed
    @accepts_parameters
    def tpu(
        cls,
        version: str,
        topology: str,
        *,
        chips_per_host: int | None = None,
        cpu: str | int | float = "8",
        memory: str | int = "32Gi",
        shm: Any = _DEFAULT,
        purpose: str = "training",
        **options: Any,
    ) -> Compute:
        """A Cloud TPU slice; ``google.com/tpu`` is set to the chips of one host.

        ``chips_per_host`` is optional: when given it must match the catalog for that topology.
        """
        accelerator = Tpu(version=version, topology=topology, chips_per_host=chips_per_host)
        return cls._with_shm("tpu", accelerator, cpu, memory, shm, purpose, options)

    @classmethod
    @_pool_renamed
    @accepts_parameters
    def npu(
        cls,
        device: str,
        count: int = 1,
        *,
        cpu: str | int | float = "1",
        memory: str | int = "4Gi",
        purpose: str = "inference",
        **options: Any,
    ) -> Compute:
        """An NPU or inference accelerator device class from the catalog (``intel-npu``, ...)."""
        accelerator = Npu(device=device, count=count)
        return cls(kind="npu", cpu_request=cpu, memory_request=memory, accelerator=accelerator,
                   purpose=purpose, **_options("npu", options))

    @classmethod
    def _with_shm(cls, kind: Kind, accelerator: Accelerator, cpu: Any, memory: Any, shm: Any, purpose: str,
                  options: dict[str, Any]) -> Compute:
        opts = _options(kind, options)
        if shm is _DEFAULT:
            shm = None
            if purpose == "training":
                limit = opts.get("memory_limit", memory)
                shm = _default_shm(parse_memory("memory_limit" if "memory_limit" in opts else "memory", limit,
                                                where=f"Compute.{kind}"))
        return cls(kind=kind, cpu_request=cpu, memory_request=memory, accelerator=accelerator, shm=shm, purpose=purpose,
                   **opts)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "compute") -> Compute:
        """Build from plain data, e.g. ``{"kind": "gpu", "count": 2, "model": "l4"}`` (YAML, CLI)."""
        if not isinstance(data, dict):
            raise ComputeError(invalid("compute", data, "a mapping with a 'kind' key", where=where))
        data = dict(data)
        kind = data.pop("kind", None)
        if kind not in KINDS:
            raise ComputeError(invalid("kind", kind, f"one of {', '.join(KINDS)}", where=where, choices=KINDS))
        if "security" in data and isinstance(data["security"], dict):
            data["security"] = Security(**data["security"])
        try:
            return getattr(cls, kind)(**data)
        except ComputeError as e:
            raise ComputeError(f"{where}: {e}") from e
        except TypeError as e:
            raise ComputeError(f"{where}: {e}. Fix: see `help(xpuflow.Compute.{kind})` for the accepted keys.") from e

    def replace(self, **changes: Any) -> Compute:
        """A copy with ``changes`` applied and validated (``cpu``/``memory`` name the requests)."""
        changes = _purpose_of("Compute.replace", changes)
        for short, full in (("cpu", "cpu_request"), ("memory", "memory_request")):
            if short in changes:
                changes[full] = changes.pop(short)
        for request, limit in (("cpu_request", "cpu_limit"), ("memory_request", "memory_limit")):
            # a limit that equals its request follows it, as it did when it was defaulted
            if request in changes and limit not in changes and getattr(self, limit) == getattr(self, request):
                changes[limit] = None
        if self.params and "params" not in changes:  # a value given now replaces its pipeline parameter
            changes["params"] = replaced_params(self.params, changes)
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ views
    @property
    def pool(self) -> str:
        """Deprecated name of :attr:`purpose` (a node pool is the cluster's; this is what the step does)."""
        warnings.warn("Compute.pool is deprecated: read Compute.purpose (pool= will be removed in the next release)",
                      DeprecationWarning, stacklevel=2)
        return self.purpose

    @property
    def chips(self) -> int | None:
        """TPU chips in the whole slice (None unless a TPU Compute)."""
        return self.accelerator.chips if isinstance(self.accelerator, Tpu) else None

    @property
    def chips_per_host(self) -> int | None:
        return self.accelerator.chips_per_host if isinstance(self.accelerator, Tpu) else None

    @property
    def hosts(self) -> int:
        """Pods (one per VM) that this step spans: >1 only for multi-host TPU slices."""
        return self.accelerator.hosts if isinstance(self.accelerator, Tpu) else 1

    @property
    def hardware(self) -> str:
        """A short human description: ``cpu 2 / 4Gi``, ``1x nvidia l4``, ``tpu v5e 2x4``."""
        text = self.accelerator.describe() if self.accelerator else f"cpu {self.cpu_request} / {self.memory_request}"
        shown = [f"{name}={p.name}" for name, p in self.params if (name.removesuffix("_limit"), p) not in self.params
                 or not name.endswith("_limit")]  # a limit that follows its request is not shown twice
        if shown:
            text += f" ({', '.join(shown)} at run time)"
        return text


def _as_q(parser: Any, name: str, value: Any, where: str) -> Quantity:
    return value if isinstance(value, Quantity) else parser(name, value, where=where)


_COMMON = {
    "cpu_limit", "memory_limit", "ephemeral_storage", "shm", "spot", "timeout", "retries",
    "priority_class", "grace_period", "security", "queue", "priority", "require_topology", "prefer_topology", "claim",
}


def _options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - _COMMON)
    if unknown:
        raise ComputeError(
            invalid("option", unknown[0], f"one of {', '.join(sorted(_COMMON))}", where=f"Compute.{kind}",
                    choices=_COMMON, fix="remove it or correct its spelling")
        )
    return options


def _default_shm(memory_limit: Quantity) -> str:
    mib = min(int(memory_limit.value) // 4, 8 * 2**30) // 2**20
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"
