"""The training loop shared by ``train`` (CUDA/CPU) and ``train_tpu`` (XLA).

Device specifics live in the :class:`~xpuflow.steps.runtime.Runtime` hooks; the loop
owns data order, checkpoints, resume, SIGTERM, metrics and the output files, so a
checkpoint written by one step loads in the other (tensors are saved on the CPU).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import as_whole
from .checkpoint import ON_MISMATCH, Checkpointer, restore_rng, rng_state
from .checkpoint_async import BackgroundSaver, writer_process
from .checkpoint_writer import WriterProcess
from .io import StepError, is_url, local_path, write_json
from .models import build_model, save_model
from .preprocess import read_split
from .progress import Progress, last_progress
from .publish import publish
from .report import write_curves
from .runtime import Runtime

__all__ = ["Options", "check_options", "fit", "PREEMPTED_EXIT_CODE", "GKE_SPOT_WINDOW_S"]

log = logging.getLogger("xpuflow.train")
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: the pod was asked to stop and saved its state
GKE_SPOT_WINDOW_S = 15.0


@dataclass(frozen=True)
class Options:
    data: str
    output: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    model: str
    model_kwargs: dict[str, Any]
    checkpoint_dir: str
    checkpoint_every: int
    compile: bool
    num_workers: int
    on_mismatch: str = "fresh"


def check_scalars(step: str, **values: Any) -> dict[str, Any]:
    """The options' own checks (whole-number bounds, model_kwargs JSON); ``@step(check=...)`` runs them before a
    flow starts. Returns model_kwargs parsed and the whole numbers as ``int`` (a sweep's ``numpy.int64`` seed or
    batch size is one); other keys are ignored."""
    checked: dict[str, Any] = {}
    for name, low in (("epochs", 1), ("batch_size", 1), ("checkpoint_every", 1), ("num_workers", 0), ("seed", None)):
        if name not in values:  # train_tpu has no num_workers
            continue
        value = values[name]
        number = as_whole(value)  # int, numpy integers
        if number is None or (low is not None and number < low):
            allowed = "a whole number" + (f" >= {low}" if low is not None else "")
            raise StepError(f"{step}: {name}={value!r} is not valid: {allowed}.")
        checked[name] = number
    if values.get("on_mismatch", "fresh") not in ON_MISMATCH:
        raise StepError(f"{step}: on_mismatch={values['on_mismatch']!r} is not valid: fresh (start over when the "
                        "checkpoints are of another run) or refuse (stop).")
    raw = values.get("model_kwargs", "{}")
    try:
        return {**checked, "model_kwargs": json.loads(raw) if isinstance(raw, str) else dict(raw)}
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise StepError(f"{step}: model_kwargs={raw!r} is not valid: a JSON object ({e}).") from e


def check_options(step: str, **values: Any) -> Options:
    values.update(check_scalars(step, **values))
    return Options(**values)


class _Stop:
    """Set by SIGTERM; the loop checks it after every step."""

    requested = False

    @classmethod
    def handler(cls, signum: int, frame: Any) -> None:
        cls.requested = True


def _install_sigterm() -> Any:
    _Stop.requested = False
    try:
        return signal.signal(signal.SIGTERM, _Stop.handler)
    except ValueError:  # not the main thread (an embedding runner): no checkpoint on SIGTERM here
        log.warning("train: not in the main thread; SIGTERM will not trigger a checkpoint")
        return None


def _order(n: int, batch_size: int, seed: int, epoch: int) -> list[Any]:
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    return [perm[i * batch_size:(i + 1) * batch_size] for i in range(n // batch_size)]


def _evaluate(model: Any, x: Any, y: Any, rt: Runtime) -> tuple[float, float]:
    import torch

    model.eval()
    total_loss = torch.zeros((), device=rt.device)
    correct = torch.zeros((), device=rt.device)
    with torch.no_grad(), rt.autocast():
        for start in range(0, len(x), 4096):  # one fixed shape per chunk: no recompilation on XLA
            xb, yb = x[start:start + 4096].to(rt.device), y[start:start + 4096].to(rt.device)
            logits = model(xb).float()
            total_loss += torch.nn.functional.cross_entropy(logits, yb, reduction="sum")
            correct += (logits.argmax(1) == yb).sum()
    rt.sync()
    model.train()
    return total_loss.item() / max(1, len(x)), correct.item() / max(1, len(x))


def fit(rt: Runtime, o: Options, *, step_name: str = "train") -> dict[str, Any]:
    """Train on ``o.data`` with runtime ``rt``; publish model.pt, metrics.json, curves.png as ``o.output``.

    The output is published whole at the end (:func:`~xpuflow.steps.publish.publish`): a refused,
    failed or stopped run leaves the previous output's files as they were. Checkpoints inside the
    output directory (the default ``output/checkpoints``) go with the old output when the new one
    is switched in.
    """
    out = local_path(o.output)
    if not rt.main:  # only the first process writes outputs
        return _fit(rt, o, step_name, out, None, None)
    inside = [] if o.checkpoint_dir else ["checkpoints"]  # what a stopped run leaves in the output
    if o.checkpoint_dir and not is_url(o.checkpoint_dir):
        relative = os.path.relpath(os.path.abspath(local_path(o.checkpoint_dir)), os.path.abspath(out))
        inside = [] if relative.startswith("..") or relative == "." else [Path(relative).parts[0]]
    with (publish(out, markers=("metrics.json", "progress.log", *inside), who=step_name) as staging,
          writer_process(o.checkpoint_dir or str(out / "checkpoints"), step_name, rt.device.type == "cuda") as writer):
        return _fit(rt, o, step_name, out, staging, writer)


def _fit(rt: Runtime, o: Options, step_name: str, out: Path, staging: Path | None,
         writer: WriterProcess | None) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    started = time.perf_counter()
    if o.batch_size % rt.world_size:
        raise StepError(f"{step_name}: batch_size={o.batch_size} is not divisible by the {rt.world_size} processes.")
    x_train, y_train, stats = read_split(o.data, "train")
    x_val, y_val, _ = read_split(o.data, "validation")
    if len(x_train) < o.batch_size:
        raise StepError(f"{step_name}: {len(x_train)} training rows are fewer than batch_size={o.batch_size}.")
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    xv, yv = torch.from_numpy(x_val), torch.from_numpy(y_val)
    classes = stats["classes"]

    net = build_model(o.model, xt.shape[1], len(classes), o.model_kwargs).to(rt.device)
    runnable = rt.wrap(net, o.compile)
    steps_per_epoch = len(xt) // o.batch_size
    total_steps = steps_per_epoch * o.epochs
    opt = torch.optim.AdamW(net.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    scaler = torch.amp.GradScaler("cuda" if rt.device.type == "cuda" else "cpu", enabled=rt.precision == "fp16")

    identity = run_identity(o, (x_train, y_train, x_val, y_val), stats, net)
    ckpt = Checkpointer(o.checkpoint_dir or out / "checkpoints", identity, who=step_name, writer=rt.main)
    saver = BackgroundSaver(ckpt, writer)
    if ckpt.remote and rt.main:
        out.mkdir(parents=True, exist_ok=True)  # progress.log beside the remote checkpoints' output
    progress_path = Path(ckpt.root if not ckpt.remote else out) / "progress.log"
    history: list[dict[str, Any]] = []
    interruptions: list[dict[str, Any]] = []
    save_times = saver.write_seconds
    step, partial_loss = 0, 0.0  # partial: loss summed over this epoch's steps done before a resume
    resumed = ckpt.latest(map_location="cpu", on_mismatch=o.on_mismatch, remove=rt.main)
    if resumed:
        step, state = resumed
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty: an fp32 or bf16 run's (no scaler); fp16 here starts a fresh one
            scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        restore_rng(rngs[rt.rank] if isinstance(rngs, list) else rngs)
        history, interruptions = state["history"], state["interruptions"]
        save_times.extend(state["save_times"])
        partial_loss = state["epoch_loss"]
        last = max(last_progress(progress_path), step)
        interruptions.append({"resumed_from_step": step, "last_step_before": last, "rpo_steps": last - step,
                              "rto_seconds": None, "written_by": state.get("written_by", "train")})
        log.info("%s: resumed from checkpoint step %d (last step before the stop: %d)", step_name, step, last)
    previous = _install_sigterm()
    progress = Progress.open(progress_path, step, step_name) if rt.main else None
    bar = _progress_bar(total_steps, step, rt, step_name)
    local_batch = o.batch_size // rt.world_size
    mixed = rt.precision != "fp32"
    samples, train_seconds = 0, 0.0

    def checkpoint(epoch_loss: Any) -> None:
        """Pack the state into host memory here; the write runs in the background (one at a time)."""
        begun = time.perf_counter()
        rngs = rt.gather(rng_state())  # every rank takes part
        if not rt.main:
            return
        saver.submit(step, {
            "step": step, "model": net.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "rng": rngs,
            "history": history, "interruptions": interruptions, "save_times": save_times,
            "epoch": step // steps_per_epoch, "batch_in_epoch": step % steps_per_epoch,
            "epoch_loss": float(epoch_loss) if step % steps_per_epoch else 0.0, "written_by": step_name,
        }, started=begun)

    try:
        while step < total_steps:
            epoch, first = divmod(step, steps_per_epoch)
            order = _order(len(xt), o.batch_size, o.seed, epoch)[first:]
            shards = [b[rt.rank * local_batch:(rt.rank + 1) * local_batch] for b in order]
            if o.num_workers == 0 and rt.device.type == "cpu":
                loader: Any = ((xt[idx], yt[idx]) for idx in shards)  # in memory already: index, no DataLoader
            else:
                # its own generator: a DataLoader iterator otherwise draws from the global RNG, which would
                # shift dropout masks after a mid-epoch resume; sampler of index tensors + batch_size=None:
                # each batch is one tensor index, not 64 collated samples
                loader = DataLoader(TensorDataset(xt, yt), sampler=shards, batch_size=None,
                                    num_workers=o.num_workers, generator=torch.Generator().manual_seed(o.seed + epoch),
                                    **rt.loader_options())
            epoch_loss, epoch_start = torch.zeros((), device=rt.device) + partial_loss, time.perf_counter()
            partial_loss = 0.0
            for xb, yb in rt.device_batches(loader):
                if mixed:
                    with rt.autocast():
                        loss = torch.nn.functional.cross_entropy(runnable(xb), yb)
                else:  # fp32: no context entered at every step (~2 us of a small model's loop)
                    loss = torch.nn.functional.cross_entropy(runnable(xb), yb)
                opt.zero_grad(set_to_none=True)
                (scaler.scale(loss) if scaler.is_enabled() else loss).backward()
                rt.optimizer_step(opt, scaler)
                sched.step()
                rt.sync()
                step += 1
                epoch_loss += loss.detach() if loss.dtype == torch.float32 else loss.detach().float()
                samples += o.batch_size
                if progress is not None:
                    progress.mark(step)
                if interruptions and interruptions[-1]["rto_seconds"] is None:
                    interruptions[-1]["rto_seconds"] = round(time.perf_counter() - started, 3)
                if bar is not None:
                    bar.update(1)
                if rt.stop_requested(_Stop.requested):
                    checkpoint(epoch_loss)  # within the grace period, before exiting
                    saver.wait()  # durable before the exit
                    log.warning("%s: SIGTERM at step %d: checkpoint saved, exiting for a restart", step_name, step)
                    raise SystemExit(PREEMPTED_EXIT_CODE)
                if step % o.checkpoint_every == 0 and step < total_steps:
                    checkpoint(epoch_loss)
            rt.wait()  # queued device work belongs to this epoch's time
            train_seconds += time.perf_counter() - epoch_start
            if step % steps_per_epoch == 0:
                val_loss, val_acc = _evaluate(net, xv, yv, rt)
                history.append({"epoch": epoch + 1, "train_loss": epoch_loss.item() / steps_per_epoch,
                                "val_loss": val_loss, "val_accuracy": val_acc, "step": step})
                if bar is None and rt.main:
                    log.info("epoch %d/%d  train_loss %.4f  val_loss %.4f  val_acc %.4f",
                             epoch + 1, o.epochs, history[-1]["train_loss"], val_loss, val_acc)
        saver.wait()  # the last write is durable (and a failed one raised) before the outputs
    finally:
        try:
            saver.close()  # waits for the write in flight: a second Ctrl-C may end it
        finally:
            if progress is not None:
                progress.close()
            if bar is not None:
                bar.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    metrics = {
        "step": step_name,
        "epochs": history,
        "final": history[-1] if history else {},
        "samples_per_second": round(samples / train_seconds, 1) if train_seconds else None,
        "device": rt.name,
        "precision": rt.precision,
        "world_size": rt.world_size,
        "devices": rt.devices,
        "steps": step,
        "batch_size": o.batch_size,
        "interruptions": interruptions,
        "rpo_steps": [i["rpo_steps"] for i in interruptions],
        "rto_seconds": [i["rto_seconds"] for i in interruptions],
        "checkpoint_save_seconds_max": round(max(save_times), 4) if save_times else None,
        "checkpoint_fits_gke_spot_window": (max(save_times) < GKE_SPOT_WINDOW_S) if save_times else None,
        "checkpoint_stall_seconds_max": round(max(saver.stall_seconds), 4) if saver.stall_seconds else None,
        "checkpoint_writer": saver.writer,
        "compiled": o.compile,
    }
    if staging is not None:
        meta = {
            "architecture": o.model, "model_kwargs": o.model_kwargs, "input_shape": [1, int(xt.shape[1])],
            "classes": classes, "features": stats["features"],
            "normalisation": {"mean": stats["mean"], "std": stats["std"]},
            "trained_on": {"device": rt.name, "precision": rt.precision, "world_size": rt.world_size,
                           "step": step_name},
        }
        save_model(staging / "model.pt", net, meta)
        write_curves(staging / "curves.png", history)
        write_json(staging / "metrics.json", metrics)  # last; published when fit() returns
    rt.teardown()
    return metrics


def run_identity(o: Options, arrays: tuple[Any, ...], stats: dict[str, Any], net: Any) -> dict[str, Any]:
    """What makes a checkpoint this run's: the data, the options that change the result, the architecture.

    Not in it: where the run trains (device, precision, processes, compile), so a run moves
    between a GPU and a TPU step, or to more processes, and still resumes.
    """
    import numpy as np

    data = hashlib.sha256(json.dumps([stats["features"], stats["classes"]]).encode())
    for array in arrays:
        data.update(np.ascontiguousarray(array).data)
    shapes = [[k, list(v.shape), str(v.dtype)] if hasattr(v, "dtype") else [k, type(v).__name__]  # extra state
              for k, v in net.state_dict().items()]
    return {  # in the order a mismatch names them
        "features": len(stats["features"]), "classes": len(stats["classes"]), "model": o.model,
        "model_kwargs": json.dumps(o.model_kwargs, sort_keys=True),
        "architecture": hashlib.sha256(json.dumps(shapes).encode()).hexdigest()[:16], "data": data.hexdigest()[:16],
        "seed": o.seed, "lr": o.lr, "weight_decay": o.weight_decay, "batch_size": o.batch_size, "epochs": o.epochs,
    }


def _progress_bar(total: int, done: int, rt: Runtime, desc: str) -> Any:
    if not rt.main or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="step", desc=desc, dynamic_ncols=True)
