"""train_tpu on XLA:CPU: steps/s of the step vs a bare torch_xla loop, and graph compilations per epoch.

Run in the XLA venv (the data comes from the main venv's preprocess step):

    .venv/bin/python -m xpuflow step preprocess --output /tmp/xpuflow-bench-data
    PJRT_DEVICE=CPU .venv-xla/bin/python bench/train_tpu.py --data /tmp/xpuflow-bench-data

Same model (xpuflow.steps.models:mlp), same data, same batch size, same optimizer
(AdamW + cosine schedule), same bf16 autocast, in the same process, alternated
A B A B. Goal: the step >= 0.95x the bare loop, and no recompilation after the first
steps of the first epoch (XLA metrics printed below).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("PJRT_DEVICE", "CPU")


def bare_loop(data: str, epochs: int, batch_size: int, seed: int) -> tuple[float, list[int]]:
    """A hand-written torch_xla loop; returns (steps/s, uncached compiles after each epoch)."""
    import torch
    import torch_xla
    import torch_xla.core.xla_model as xm
    import torch_xla.debug.metrics as met
    import torch_xla.distributed.parallel_loader as pl
    from torch.utils.data import DataLoader, TensorDataset

    from xpuflow.steps.models import mlp
    from xpuflow.steps.preprocess import read_split

    x, y, stats = read_split(data, "train")
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(seed)
    dev = torch_xla.device()
    model = mlp(xt.shape[1], len(stats["classes"])).to(dev)
    steps_per_epoch = len(xt) // batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps_per_epoch * epochs)
    compiles, steps, seconds = [], 0, 0.0
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        loader = DataLoader(TensorDataset(xt, yt), batch_size=batch_size, sampler=torch.randperm(len(xt), generator=g).tolist(),
                            drop_last=True)
        start = time.perf_counter()
        for xb, yb in pl.MpDeviceLoader(loader, dev):
            with torch.autocast("xla", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            xm.optimizer_step(opt)
            sched.step()
            torch_xla.sync()
            steps += 1
        loss.item()  # wait for the last step
        seconds += time.perf_counter() - start
        compiles.append(int(met.counter_value("UncachedCompile") or 0))
    return steps / seconds, compiles


def step_run(data: str, epochs: int, batch_size: int, seed: int) -> tuple[float, dict]:
    import torch_xla.debug.metrics as met

    from xpuflow.steps.train_tpu import train_tpu

    with tempfile.TemporaryDirectory() as out:
        metrics = train_tpu(data=data, output=out, epochs=epochs, batch_size=batch_size, seed=seed,
                            checkpoint_every=10**9)
    return metrics["samples_per_second"] / batch_size, {"uncached_compiles_total": met.counter_value("UncachedCompile")}


def compiles_per_epoch(data: str, epochs: int, batch_size: int) -> list[int]:
    """Uncached compilations after each epoch of the step, in a fresh process (the counters are global)."""
    import json
    import subprocess
    import sys

    code = f"""
import json, os, tempfile
os.environ.setdefault("PJRT_DEVICE", "CPU")
import torch_xla.debug.metrics as met
from xpuflow.steps import loop
counts = []
original = loop._evaluate
def counting(*a, **k):
    result = original(*a, **k)
    counts.append(int(met.counter_value("UncachedCompile") or 0))
    return result
loop._evaluate = counting
from xpuflow.steps.train_tpu import train_tpu
with tempfile.TemporaryDirectory() as out:
    train_tpu(data={data!r}, output=out, epochs={epochs}, batch_size={batch_size}, checkpoint_every=10**9)
print(json.dumps({{"per_epoch": counts, "report": met.short_metrics_report()}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    data_out = json.loads(out.stdout.strip().splitlines()[-1])
    print(data_out["report"])
    return data_out["per_epoch"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bare_rates, step_rates = [], []
    bare_loop(args.data, 1, args.batch_size, 0)  # warm the compilation cache for both
    for _ in range(args.repeats):
        rate, _ = bare_loop(args.data, args.epochs, args.batch_size, 0)
        bare_rates.append(rate)
        rate, _ = step_run(args.data, args.epochs, args.batch_size, 0)
        step_rates.append(rate)
    bare, step = statistics.median(bare_rates), statistics.median(step_rates)
    print(f"bare torch_xla loop: {bare:.1f} steps/s (median of {args.repeats}: {[round(r, 1) for r in bare_rates]})")
    print(f"train_tpu step:      {step:.1f} steps/s (median of {args.repeats}: {[round(r, 1) for r in step_rates]})")
    print(f"ratio step/bare: {step / bare:.3f}x (goal >= 0.95x)")
    per_epoch = compiles_per_epoch(args.data, args.epochs, args.batch_size)
    new = [b - a for a, b in zip([0, *per_epoch], per_epoch)]
    print(f"uncached XLA compilations, cumulative after each epoch: {per_epoch}; new per epoch: {new}")
    print("goal (no recompilation after the first epoch):", "met" if all(n == 0 for n in new[1:]) else "NOT met")
    from figures import Ratio, record

    record("train_tpu", {"bare_steps_per_s": bare, "step_steps_per_s": step, "bare_runs": bare_rates,
                         "step_runs": step_rates, "compilations_cumulative": per_epoch, "epochs": args.epochs},
           [Ratio("train_tpu step / bare torch_xla loop (steps/s)", step / bare, goal=0.95)],
           title="train_tpu on XLA:CPU vs a bare torch_xla loop")


if __name__ == "__main__":
    main()
