"""``train`` (GPU): PyTorch training that survives spot preemption.

- one process, or many under ``torchrun`` (DDP: NCCL on GPUs, gloo on CPU); the
  global batch is split across ranks, so results match a single process;
- mixed precision (bf16 where supported, else fp16 with a grad scaler), pinned
  memory, optional ``torch.compile``;
- a checkpoint every ``checkpoint_every`` steps and on SIGTERM (model, optimizer,
  scheduler, scaler, every RNG, data position), packed on the training thread and
  written atomically in the background, checksummed and stamped with the run's identity;
  resumed from the newest intact one of the same run (``on_mismatch``: ``fresh`` or
  ``refuse`` for another run's); ``metrics.json`` records RPO (steps lost) and RTO
  (seconds from restart to the first new step) of every interruption.

Outputs in ``output/``: ``model.pt`` (see :mod:`xpuflow.steps.models`),
``metrics.json``, ``curves.png``. The loop itself is :func:`xpuflow.steps.loop.fit`.
"""

from __future__ import annotations

import functools
from typing import Any

from .loop import PREEMPTED_EXIT_CODE, check_options, check_scalars, fit
from .models import DEFAULT_ARCH
from .runtime import setup
from ..compute import Compute
from ..dsl.step import step

__all__ = ["train", "PREEMPTED_EXIT_CODE"]


# 3 CPU / 12Gi: what a one-GPU node of 4 vCPU / 16 GiB (g5.xlarge, NC4as_T4_v3) leaves allocatable to a pod;
# spot first with an on-demand fallback, since training resumes from its checkpoint
@step(compute=Compute.gpu(count=1, cpu="3", memory="12Gi", spot="prefer"), resumable=True, minutes=15,
      inputs=("data",), outputs=("output",), check=functools.partial(check_scalars, "train"))
def train(
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
    device: str = "auto",
    precision: str = "auto",
    compile: bool = False,
    deterministic: bool = False,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Train on the preprocessed ``data`` directory; returns the metrics written to ``metrics.json``."""
    options = check_options(
        "train", data=data, output=output, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        seed=seed, model=model, model_kwargs=model_kwargs, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, on_mismatch=on_mismatch, compile=compile, num_workers=num_workers,
    )
    return fit(setup(device, precision, deterministic, seed), options)
