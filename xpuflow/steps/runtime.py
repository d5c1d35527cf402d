"""Where a training step runs: device, precision, distributed process group.

The GPU rule: with CUDA visible, train on it. Without it, a local run falls back
to the CPU with a WARNING; inside a cluster, on a pod placed on a GPU node
(``KUBERNETES_SERVICE_HOST`` set and the placement's ``XPUFLOW_COMPUTE_KIND=gpu``),
the step fails at once and names the node, so it never trains silently on the
CPU of a paid GPU node.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from .io import StepError

__all__ = ["Runtime", "setup", "pick_device", "pick_precision"]

log = logging.getLogger("xpuflow.train")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Runtime:
    """One training process: where it runs, and the hooks the loop calls."""

    device: Any  # torch.device
    precision: str  # fp32 | bf16 | fp16
    rank: int
    world_size: int
    local_rank: int

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def autocast_dtype(self) -> Any:
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    @property
    def name(self) -> str:
        return self.device.type

    @property
    def devices(self) -> int:
        """Accelerators this run trains on (processes x devices each)."""
        return self.world_size

    # ---- hooks the training loop calls; XlaRuntime (train_tpu) overrides them
    def autocast(self) -> Any:
        if self.precision == "fp32":
            return contextlib.nullcontext()  # cheaper than a disabled autocast on every step
        import torch

        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def wrap(self, net: Any, compile: bool) -> Any:
        """The module the loop calls: compiled and/or DDP-wrapped; ``net`` keeps the plain weights."""
        import torch

        runnable = torch.compile(net) if compile else net
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.local_rank] if self.device.type == "cuda" else None
            runnable = DistributedDataParallel(runnable, device_ids=ids)
        return runnable

    def loader_options(self) -> dict[str, Any]:
        return {"pin_memory": self.device.type == "cuda"}

    def device_batches(self, loader: Any) -> Any:
        if self.device.type == "cpu":
            return loader  # already where the model is
        return ((xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)) for xb, yb in loader)

    def optimizer_step(self, opt: Any, scaler: Any) -> None:
        if scaler.is_enabled():  # fp16: unscale, skip steps with inf/nan gradients, adapt the scale
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()

    def sync(self) -> None:
        """End of a training step (XLA cuts and runs its graph here)."""

    def wait(self) -> None:
        """Block until the device has finished the queued work (for honest timings)."""
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def stop_requested(self, local: bool) -> bool:
        """Whether any process was asked to stop; every rank must agree on the step."""
        if not self.distributed:
            return local
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1.0 if local else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def gather(self, obj: Any) -> Any:
        """``obj`` from every rank (a list), or ``obj`` itself in a single process."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def teardown(self) -> None:
        import torch.distributed as dist

        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _node() -> str:
    node = os.environ.get("XPUFLOW_NODE_NAME") or os.environ.get("NODE_NAME")
    pool = os.environ.get("XPUFLOW_NODE_POOL", "?")
    return f"node {node or '(unknown: set NODE_NAME from spec.nodeName)'}, pod {socket.gethostname()}, node pool {pool}"


def pick_device(requested: str, local_rank: int, who: str = "train") -> Any:
    """CUDA when visible; else the CPU (a WARNING locally), refused in-cluster on a GPU placement.

    ``who`` names the step in the messages (the inference steps reuse the rule).
    """
    import torch

    verb = "train" if who == "train" else "run"
    if requested not in ("auto", "cuda", "cpu"):
        raise StepError(f"{who}: device={requested!r} is not valid: auto, cuda or cpu.")
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if in_cluster and os.environ.get("XPUFLOW_COMPUTE_KIND") == "gpu":
        raise StepError(
            f"{who}: no GPU is visible on {_node()}, yet this step was placed on a GPU node. Refusing to {verb} on "
            "the CPU of a paid GPU node. Fix: check the NVIDIA device plugin and driver on that node "
            "(`kubectl describe node`, `nvidia-smi`), or place the step with Compute.cpu()."
        )
    if requested == "cuda":
        raise StepError(f"{who}: device='cuda' but no CUDA device is visible. Fix: use device='auto' or 'cpu'.")
    if requested == "auto":
        doing = "training" if who == "train" else "running"
        log.warning("%s: no GPU visible, %s on the CPU (a local run; metrics record device: cpu)", who, doing)
    return torch.device("cpu")


def pick_precision(requested: str, device: Any, who: str = "train") -> str:
    import torch

    if requested not in PRECISIONS:
        raise StepError(f"{who}: precision={requested!r} is not valid: one of {', '.join(PRECISIONS)}.")
    if requested != "auto":
        if device.type == "cpu" and requested == "fp16":
            raise StepError(f"{who}: precision='fp16' needs a GPU. Fix: use 'bf16' or 'fp32' on the CPU.")
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def setup(device: str = "auto", precision: str = "auto", deterministic: bool = False, seed: int = 0) -> Runtime:
    """Initialise torch for this process (and the process group under torchrun)."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(seed)
    return Runtime(dev, pick_precision(precision, dev), rank, world, local_rank)
