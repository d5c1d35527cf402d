"""``train_tpu`` (TPU): the training loop of ``train`` on torch_xla (PJRT).

Same model and data interfaces, same checkpoint format and resume semantics as the
GPU ``train`` step (a checkpoint written by one loads in the other: tensors are
moved to the CPU before saving). XLA specifics: ``torch_xla.device()``, a
``torch_xla.sync()`` at the end of every step, ``xm.optimizer_step`` (which also
all-reduces gradients across processes), ``MpDeviceLoader`` and bf16 autocast.

Multi-core: ``cores > 1`` (or ``cores=0`` for every device) shards each global batch
across the devices with SPMD: one process, the model replicated, the batch split on
a ``data`` mesh axis, and XLA inserting the gradient all-reduce. We chose SPMD over
``torch_xla.launch`` because it keeps one process and one program: the data order,
the checkpoints and the resume are exactly those of the single-device run, and the
result matches it (the tests check this on XLA:CPU with two devices). It is also the
path that runs here: ``torch_xla.launch`` with two XLA:CPU devices aborts in torch_xla
2.9's CPU rendezvous even for a minimal all-reduce, so a launch path could not be tested.

Without torch_xla the step says so in one line and trains with plain PyTorch on the
device it finds, which ``metrics.json`` records. On XLA:CPU (``PJRT_DEVICE=CPU``) the
same XLA code runs on the CPU; on GKE the placement sets ``PJRT_DEVICE=TPU``.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Any

from .io import StepError
from .loop import check_options, check_scalars, fit
from .models import DEFAULT_ARCH
from .runtime import Runtime, setup
from ..compute import Compute
from ..dsl.step import step

__all__ = ["train_tpu", "XlaRuntime", "xla_available"]

log = logging.getLogger("xpuflow.train_tpu")


def xla_available() -> bool:
    try:
        import torch_xla  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class XlaRuntime(Runtime):
    """Runtime hooks for torch_xla; the device is an XLA device (TPU, or CPU under PJRT_DEVICE=CPU)."""

    mesh: Any = None  # an SPMD mesh over every device when cores > 1

    @property
    def name(self) -> str:
        return f"xla:{os.environ.get('PJRT_DEVICE', 'TPU').lower()}"

    @property
    def devices(self) -> int:
        return 1 if self.mesh is None else int(self.mesh.size())

    def autocast(self) -> Any:
        import torch

        return torch.autocast("xla", dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def wrap(self, net: Any, compile: bool) -> Any:
        if compile:
            import torch

            return torch.compile(net, backend="openxla")
        return net

    def loader_options(self) -> dict[str, Any]:
        return {}

    def device_batches(self, loader: Any) -> Any:
        if self.mesh is None:
            import torch_xla.distributed.parallel_loader as pl

            yield from pl.MpDeviceLoader(loader, self.device)
            return
        import torch_xla.distributed.spmd as xs

        for xb, yb in loader:
            xb, yb = xb.to(self.device), yb.to(self.device)
            xs.mark_sharding(xb, self.mesh, ("data", None))  # each device takes its rows of the batch
            xs.mark_sharding(yb, self.mesh, ("data",))
            yield xb, yb

    def optimizer_step(self, opt: Any, scaler: Any) -> None:
        import torch_xla.core.xla_model as xm

        xm.optimizer_step(opt)

    def sync(self) -> None:
        import torch_xla

        torch_xla.sync()

    def wait(self) -> None:
        import torch_xla.core.xla_model as xm

        xm.wait_device_ops()

    def stop_requested(self, local: bool) -> bool:
        return local  # one process drives every device

    def gather(self, obj: Any) -> Any:
        return obj

    def teardown(self) -> None:
        return None


def _xla_runtime(precision: str, seed: int, cores: int) -> XlaRuntime:
    if cores != 1 and os.environ.get("PJRT_DEVICE", "").upper() == "CPU":
        os.environ.setdefault("CPU_NUM_DEVICES", str(cores or 2))  # XLA:CPU exposes this many devices
    import numpy as np
    import torch
    import torch_xla
    import torch_xla.core.xla_model as xm
    import torch_xla.runtime as xr

    if precision not in ("auto", "bf16", "fp32"):
        raise StepError(f"train_tpu: precision={precision!r} is not valid: auto, bf16 or fp32 (TPUs compute in bf16).")
    mesh = None
    if cores != 1:
        import torch_xla.distributed.spmd as xs

        xr.use_spmd()
        available = xr.global_runtime_device_count()
        n = available if cores == 0 else cores
        if n > available:
            raise StepError(f"train_tpu: cores={cores} but only {available} XLA devices are visible.")
        mesh = xs.Mesh(np.arange(n), (n, 1), ("data", "model"))
    torch.manual_seed(seed)
    xm.set_rng_state(seed)
    return XlaRuntime(
        device=torch_xla.device(),
        precision="bf16" if precision == "auto" else precision,
        rank=0,
        world_size=1,
        local_rank=0,
        mesh=mesh,
    )


@step(compute=Compute.tpu(version="v5e", topology="2x4", spot="prefer"), resumable=True, minutes=15,
      inputs=("data",), outputs=("output",), check=functools.partial(check_scalars, "train_tpu"))
def train_tpu(
    data: str = "out/data",
    output: str = "out/model",
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    model: str = DEFAULT_ARCH,
    model_kwargs: str = "{}",
    checkpoint_dir: str = "",
    checkpoint_every: int = 50,
    on_mismatch: str = "fresh",
    precision: str = "auto",
    cores: int = 1,
    compile: bool = False,
) -> dict[str, Any]:
    """Train on the preprocessed ``data`` with torch_xla; returns the metrics written to ``metrics.json``."""
    options = check_options(
        "train_tpu", data=data, output=output, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, seed=seed, model=model, model_kwargs=model_kwargs, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, on_mismatch=on_mismatch, compile=compile, num_workers=0,
    )
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 0:
        raise StepError(f"train_tpu: cores={cores!r} is not valid: a whole number >= 1, or 0 for every device.")
    if not xla_available():
        rt = setup("auto", "fp32" if precision == "auto" else precision, False, seed)
        log.warning("train_tpu: torch_xla is not installed; training with plain PyTorch on %s", rt.device.type)
        return fit(rt, options, step_name="train_tpu")
    rt = _xla_runtime(precision, seed, cores)
    if rt.mesh is not None and options.batch_size % rt.devices:
        raise StepError(f"train_tpu: batch_size={options.batch_size} is not divisible by the {rt.devices} devices.")
    return fit(rt, options, step_name="train_tpu")
