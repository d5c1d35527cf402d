"""``train`` (GPU): PyTorch training that survives spot preemption.

- one process, or many under ``torchrun`` (DDP: NCCL on GPUs, gloo on CPU); the
  global batch is split across ranks, so results match a single process;
- mixed precision (bf16 where supported, else fp16 with a grad scaler), pinned
  memory, optional ``torch.compile``;
- a checkpoint every ``checkpoint_every`` steps and on SIGTERM (model, optimizer,
  scheduler, scaler, every RNG, data position), written atomically and resumed
  from the newest valid one; ``metrics.json`` records RPO (steps lost) and RTO
  (seconds from restart to the first new step) of every interruption.

Outputs in ``output/``: ``model.pt`` (see :mod:`xpuflow.steps.models`),
``metrics.json``, ``curves.png``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .checkpoint import Checkpointer, restore_rng, rng_state
from .io import StepError, local_path, write_json
from .models import DEFAULT_ARCH, build_model, save_model
from .preprocess import read_split
from .report import write_curves
from .runtime import Runtime, setup, teardown

__all__ = ["train", "PREEMPTED_EXIT_CODE"]

log = logging.getLogger("xpuflow.train")
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: the pod was asked to stop and saved its state
GKE_SPOT_WINDOW_S = 15.0


class _Stop:
    """Set by SIGTERM; the loop checks it after every step."""

    requested = False

    @classmethod
    def handler(cls, signum: int, frame: Any) -> None:
        cls.requested = True


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[Any]:
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    return [perm[i * batch_size:(i + 1) * batch_size] for i in range(n // batch_size)]


def _evaluate(model: Any, x: Any, y: Any, rt: Runtime) -> tuple[float, float]:
    import torch

    model.eval()
    total_loss, correct = 0.0, 0
    with torch.no_grad(), torch.autocast(rt.device.type, dtype=rt.autocast_dtype, enabled=rt.precision != "fp32"):
        for start in range(0, len(x), 4096):
            xb, yb = x[start:start + 4096].to(rt.device), y[start:start + 4096].to(rt.device)
            logits = model(xb).float()
            total_loss += torch.nn.functional.cross_entropy(logits, yb, reduction="sum").item()
            correct += int((logits.argmax(1) == yb).sum().item())
    model.train()
    return total_loss / max(1, len(x)), correct / max(1, len(x))


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
    device: str = "auto",
    precision: str = "auto",
    compile: bool = False,
    deterministic: bool = False,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Train on the preprocessed ``data`` directory; returns the metrics written to ``metrics.json``."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    started = time.perf_counter()
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("checkpoint_every", checkpoint_every, 1)):
        if not isinstance(value, int) or value < low:
            raise StepError(f"train: {name}={value!r} is not valid: a whole number >= {low}.")
    try:
        kwargs = json.loads(model_kwargs) if isinstance(model_kwargs, str) else dict(model_kwargs)
    except json.JSONDecodeError as e:
        raise StepError(f"train: model_kwargs={model_kwargs!r} is not valid JSON: {e}.") from e
    out = local_path(output)
    rt = setup(device, precision, deterministic, seed)
    if batch_size % rt.world_size:
        raise StepError(f"train: batch_size={batch_size} is not divisible by the {rt.world_size} processes.")
    x_train, y_train, stats = read_split(data, "train")
    x_val, y_val, _ = read_split(data, "validation")
    if len(x_train) < batch_size:
        raise StepError(f"train: {len(x_train)} training rows are fewer than batch_size={batch_size}.")
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    xv, yv = torch.from_numpy(x_val), torch.from_numpy(y_val)
    classes = stats["classes"]

    net = build_model(model, xt.shape[1], len(classes), kwargs).to(rt.device)
    runnable = torch.compile(net) if compile else net
    if rt.distributed:
        from torch.nn.parallel import DistributedDataParallel

        runnable = DistributedDataParallel(runnable, device_ids=[rt.local_rank] if rt.device.type == "cuda" else None)
    steps_per_epoch = len(xt) // batch_size
    total_steps = steps_per_epoch * epochs
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.precision == "fp16")

    ckpt = Checkpointer(checkpoint_dir or out / "checkpoints")
    progress_path = Path(ckpt.root if not ckpt.remote else out) / "progress.log"
    history: list[dict[str, Any]] = []
    interruptions: list[dict[str, Any]] = []
    save_times: list[float] = []
    step = 0
    partial_loss = 0.0  # loss summed over the steps of the current epoch done before a resume
    resumed = ckpt.latest(map_location="cpu")
    if resumed:
        step, state = resumed
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"][rt.rank] if isinstance(state["rng"], list) else state["rng"])
        history, interruptions, save_times = state["history"], state["interruptions"], state["save_times"]
        partial_loss = state["epoch_loss"]
        last = _last_progress(progress_path)
        interruptions.append({"resumed_from_step": step, "last_step_before": max(last, step),
                              "rpo_steps": max(last, step) - step, "rto_seconds": None})
        log.info("train: resumed from checkpoint step %d (last step before the stop: %d)", step, max(last, step))
    _Stop.requested = False
    previous = _install_sigterm()
    progress = os.open(progress_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if rt.main else None
    bar = _progress_bar(total_steps, step, rt)
    local_batch = batch_size // rt.world_size
    loader_kwargs = {"pin_memory": rt.device.type == "cuda", "num_workers": num_workers}
    samples, train_seconds = 0, 0.0

    def state_now(epoch_loss: Any) -> dict[str, Any]:
        rngs = _gather_rng(rt)
        return {"step": step, "model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(), "rng": rngs, "history": history, "interruptions": interruptions,
                "save_times": save_times, "epoch": step // steps_per_epoch, "batch_in_epoch": step % steps_per_epoch,
                "epoch_loss": float(epoch_loss) if step % steps_per_epoch else 0.0}

    def checkpoint(epoch_loss: Any) -> None:
        state = state_now(epoch_loss)
        if rt.main:
            save_times.append(ckpt.save(step, state))

    try:
        while step < total_steps:
            epoch, first = divmod(step, steps_per_epoch)
            order = _batches(len(xt), batch_size, seed, epoch)[first:]
            shards = [b[rt.rank * local_batch:(rt.rank + 1) * local_batch] for b in order]
            # its own generator: a DataLoader iterator otherwise draws from the global RNG, which would
            # shift dropout masks after a mid-epoch resume
            loader = DataLoader(TensorDataset(xt, yt), batch_sampler=shards,
                                generator=torch.Generator().manual_seed(seed + epoch), **loader_kwargs)
            epoch_loss, epoch_start = torch.zeros((), device=rt.device), time.perf_counter()
            if first:
                epoch_loss += partial_loss
            for xb, yb in loader:
                xb = xb.to(rt.device, non_blocking=True)
                yb = yb.to(rt.device, non_blocking=True)
                with torch.autocast(rt.device.type, dtype=rt.autocast_dtype, enabled=rt.precision != "fp32"):
                    loss = torch.nn.functional.cross_entropy(runnable(xb), yb)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                step += 1
                epoch_loss += loss.detach().float()
                samples += batch_size
                if progress is not None:
                    os.write(progress, b"%d\n" % step)
                if interruptions and interruptions[-1]["rto_seconds"] is None:
                    interruptions[-1]["rto_seconds"] = round(time.perf_counter() - started, 3)
                if bar is not None:
                    bar.update(1)
                if _stop_requested(rt):
                    checkpoint(epoch_loss)
                    log.warning("train: SIGTERM at step %d: checkpoint saved, exiting for a restart", step)
                    raise SystemExit(PREEMPTED_EXIT_CODE)
                if step % checkpoint_every == 0 and step < total_steps:
                    checkpoint(epoch_loss)
            train_seconds += time.perf_counter() - epoch_start
            if step % steps_per_epoch == 0:
                val_loss, val_acc = _evaluate(net, xv, yv, rt)
                partial_loss = 0.0
                history.append({"epoch": epoch + 1, "train_loss": epoch_loss.item() / steps_per_epoch,
                                "val_loss": val_loss, "val_accuracy": val_acc, "step": step})
                if bar is None and rt.main:
                    log.info("epoch %d/%d  train_loss %.4f  val_loss %.4f  val_acc %.4f",
                             epoch + 1, epochs, history[-1]["train_loss"], val_loss, val_acc)
    finally:
        if progress is not None:
            os.close(progress)
        if bar is not None:
            bar.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    metrics = {
        "epochs": history,
        "final": history[-1] if history else {},
        "samples_per_second": round(samples / train_seconds, 1) if train_seconds else None,
        "device": str(rt.device.type),
        "precision": rt.precision,
        "world_size": rt.world_size,
        "steps": step,
        "batch_size": batch_size,
        "interruptions": interruptions,
        "rpo_steps": [i["rpo_steps"] for i in interruptions],
        "rto_seconds": [i["rto_seconds"] for i in interruptions],
        "checkpoint_save_seconds_max": round(max(save_times), 4) if save_times else None,
        "checkpoint_fits_gke_spot_window": (max(save_times) < GKE_SPOT_WINDOW_S) if save_times else None,
        "compiled": compile,
    }
    if rt.main:
        meta = {
            "architecture": model, "model_kwargs": kwargs, "input_shape": [1, int(xt.shape[1])], "classes": classes,
            "features": stats["features"], "normalisation": {"mean": stats["mean"], "std": stats["std"]},
            "trained_on": {"device": metrics["device"], "precision": rt.precision, "world_size": rt.world_size},
        }
        out.mkdir(parents=True, exist_ok=True)
        save_model(out / "model.pt", net, meta)
        write_curves(out / "curves.png", history)
        write_json(out / "metrics.json", metrics)  # last
    teardown(rt)
    return metrics


def _install_sigterm() -> Any:
    try:
        return signal.signal(signal.SIGTERM, _Stop.handler)
    except ValueError:  # not the main thread (an embedding runner): no checkpoint on SIGTERM here
        log.warning("train: not in the main thread; SIGTERM will not trigger a checkpoint")
        return None


def _stop_requested(rt: Runtime) -> bool:
    if not rt.distributed:
        return _Stop.requested
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1.0 if _Stop.requested else 0.0], device=rt.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank stops at the same step
    return bool(flag.item())


def _gather_rng(rt: Runtime) -> Any:
    if not rt.distributed:
        return rng_state()
    import torch.distributed as dist

    states: list[Any] = [None] * rt.world_size
    dist.all_gather_object(states, rng_state())
    return states


def _last_progress(path: Path) -> int:
    try:
        lines = path.read_bytes().split()
    except OSError:
        return 0
    return int(lines[-1]) if lines else 0


def _progress_bar(total: int, done: int, rt: Runtime) -> Any:
    if not rt.main or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="step", desc="train", dynamic_ncols=True)
