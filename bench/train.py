"""Samples/s of the ``train`` step against a bare PyTorch loop, in one process.

Preprocesses the built-in digits data (``xpuflow.steps.preprocess.preprocess``)
into a temporary directory, then runs, alternately and in this process:

- ``step``        ``xpuflow.steps.train.train(...)`` with its defaults (checkpoint every 50 steps);
- ``step-nockpt`` the same call with ``checkpoint_every`` set out of reach (no checkpoint);
- ``bare``        a hand-written loop: same model (``xpuflow.steps.models.mlp``), same train split
                  tensors (``read_split``), same batch size and per-epoch shuffling, AdamW +
                  CosineAnnealingLR, same epochs and seed, same torch thread count, plain
                  ``x[idx]`` batches instead of a DataLoader; it evaluates the validation split
                  after each epoch and saves its weights, like the step;
- ``bare+dl``     diagnostic: the bare loop, fed by a DataLoader built as the step builds it;
- ``step-sync``   diagnostic: the default step with each checkpoint written on the training thread
                  (as before asynchronous checkpoints), for the same-process comparison;
- ``step-thread`` diagnostic: the default step with its checkpoints written by a thread of this process
                  (``XPUFLOW_CHECKPOINT_WRITER=thread``, the writer for object storage and CUDA) instead of
                  the writer process.

Reported (medians over the repetitions, after one untimed warm-up round):

- headline: samples/s of the training loop, i.e. the step's own ``samples_per_second``
  from its metrics (time inside the epochs' batch loops, checkpoints included,
  validation excluded) against the bare loop timed the same way; goal >= 0.95x;
- wall time of the whole call (data loading, model build, evaluation, outputs);
- a per-step diagnostic: each training step's start is taken by a forward pre-hook on the model (the
  step's and the bare loop's alike, nothing in the step changed); each step position's median duration
  over the rounds, summed, gives a ratio that single slow rounds do not move;
- checkpoint write time (each ``Checkpointer.save`` call, as the writer timed it): since checkpoints
  are asynchronous this runs in the writer process; the training thread's own time per
  checkpoint (waiting for a previous write + packing the state into host memory) is the step's
  ``checkpoint_stall_seconds_max``.

The per-epoch training losses of the step and the bare loop are compared: the same
numbers mean both did the same work.

    .venv/bin/python bench/train.py                       # 20 epochs, 7 rounds, torch's thread count
    .venv/bin/python bench/train.py --threads 1 --reps 31 # the figures in docs/benchmarks.md

On a small machine shared with other work, ``--threads 1`` gives steadier figures: two
intra-op threads on two busy cores slow every variant many times over.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NO_CHECKPOINT = 10**9


class StepClock:
    """When each training step began: a forward pre-hook on the model, for batches of the training size.

    Nothing in the step is changed to time it; the same hook times the bare loop. Consecutive starts
    within an epoch give each step's duration, including a checkpoint taken after it.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size, self.starts = batch_size, []

    def attach(self, net):  # type: ignore[no-untyped-def]
        net.register_forward_pre_hook(self._hook)
        return net

    def _hook(self, module, args) -> None:  # type: ignore[no-untyped-def]
        if args and getattr(args[0], "shape", (0,))[0] == self.batch_size:  # not the validation chunks
            self.starts.append(time.perf_counter())

    def durations(self, steps_per_epoch: int) -> list[float]:
        """Each step's duration but the last of each epoch (evaluation follows it)."""
        return [b - a for e in range(0, len(self.starts), steps_per_epoch)
                for a, b in zip(self.starts[e:e + steps_per_epoch], self.starts[e + 1:e + steps_per_epoch])]


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def bare_loop(data: str, out: Path, epochs: int, batch_size: int, lr: float, seed: int, hidden: int = 128,
              dataloader: bool = False) -> dict:
    """The reference: what a user would write by hand for the same training.

    ``dataloader=True`` (diagnostic variant ``bare+dl``) fetches the batches through a
    DataLoader built as the step builds it, to show what that costs on its own.
    """
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from xpuflow.steps.models import mlp
    from xpuflow.steps.preprocess import read_split

    started = time.perf_counter()
    torch.manual_seed(seed)
    x_train, y_train, stats = read_split(data, "train")
    x_val, y_val, _ = read_split(data, "validation")
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    xv, yv = torch.from_numpy(x_val), torch.from_numpy(y_val)
    clock = StepClock(batch_size)
    net = clock.attach(mlp(xt.shape[1], len(stats["classes"]), hidden=hidden))
    steps_per_epoch = len(xt) // batch_size
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps_per_epoch * epochs)
    samples, loop_seconds, losses = 0, 0.0, []
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)  # the step's shuffling
        perm = torch.randperm(len(xt), generator=g)
        epoch_loss = torch.zeros(())
        shards = [perm[i * batch_size:(i + 1) * batch_size] for i in range(steps_per_epoch)]
        if dataloader:
            batches = DataLoader(TensorDataset(xt, yt), batch_sampler=shards,
                                 generator=torch.Generator().manual_seed(seed + epoch))
        epoch_start = time.perf_counter()
        if not dataloader:
            batches = ((xt[idx], yt[idx]) for idx in shards)
        for xb, yb in batches:
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            epoch_loss += loss.detach()
            samples += batch_size
        loop_seconds += time.perf_counter() - epoch_start
        net.eval()
        with torch.no_grad():
            F.cross_entropy(net(xv), yv).item()
        net.train()
        losses.append(epoch_loss.item() / steps_per_epoch)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / "model.pt")
    return {"samples_per_second": samples / loop_seconds, "wall": time.perf_counter() - started,
            "step_seconds": clock.durations(steps_per_epoch), "train_losses": losses, "save_seconds": []}


def step_run(data: str, out: Path, epochs: int, batch_size: int, lr: float, seed: int, hidden: int,
             checkpoint_every: int, synchronous: bool = False, writer: str = "") -> dict:
    from xpuflow.steps import checkpoint_async, loop
    from xpuflow.steps.train import train

    saves: list[float] = []
    clock = StepClock(batch_size)
    build = loop.build_model
    close = checkpoint_async.BackgroundSaver.close
    submit = checkpoint_async.BackgroundSaver.submit

    def write_here(self, step, state, started=None):  # type: ignore[no-untyped-def]
        self.write_seconds.append(self.ckpt.save(step, state))  # on the training thread, as before

    def closing(self):  # type: ignore[no-untyped-def]
        close(self)
        saves.extend(self.write_seconds)  # each write's seconds, as the writer (process or thread) timed it

    checkpoint_async.BackgroundSaver.close = closing
    loop.build_model = lambda *a, **k: clock.attach(build(*a, **k))  # the step's model, timed like the bare one
    if writer:
        os.environ["XPUFLOW_CHECKPOINT_WRITER"] = writer
    if synchronous:
        checkpoint_async.BackgroundSaver.submit = write_here
    try:
        started, cpu_thread, cpu_process = time.perf_counter(), time.thread_time(), time.process_time()
        metrics = train(data=data, output=str(out), epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                        checkpoint_every=checkpoint_every, device="cpu", model_kwargs=json.dumps({"hidden": hidden}))
        wall = time.perf_counter() - started
        cpu_thread, cpu_process = time.thread_time() - cpu_thread, time.process_time() - cpu_process
    finally:
        loop.build_model = build
        os.environ.pop("XPUFLOW_CHECKPOINT_WRITER", None)
        checkpoint_async.BackgroundSaver.close = close
        checkpoint_async.BackgroundSaver.submit = submit
    if metrics["interruptions"]:
        raise SystemExit(f"step run did not train from scratch: {metrics['steps']} steps")
    return {"samples_per_second": metrics["samples_per_second"], "wall": wall,
            "train_losses": [e["train_loss"] for e in metrics["epochs"]], "save_seconds": saves,
            "metrics_save_max": metrics["checkpoint_save_seconds_max"], "steps": metrics["steps"],
            "stall_max": metrics["checkpoint_stall_seconds_max"], "cpu_thread": cpu_thread, "cpu_process": cpu_process,
            "step_seconds": clock.durations(metrics["steps"] // epochs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, default=128,
                        help="width of the MLP's hidden layers (default: the step's; larger = larger checkpoints)")
    parser.add_argument("--reps", type=int, default=7, help="timed rounds (each runs the four variants)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for all runs (default: torch's own)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    logging.basicConfig(level=logging.ERROR)
    import torch

    from xpuflow.steps.preprocess import preprocess

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="xpuflow-bench-train-") as tmp:
        data = str(Path(tmp) / "data")
        stats = preprocess(output=data, seed=args.seed)
        n_train = stats["rows"]["train"]
        steps_per_epoch = n_train // args.batch_size
        print(f"digits: {n_train} training rows, {steps_per_epoch} steps/epoch x {args.epochs} epochs "
              f"= {steps_per_epoch * args.epochs} steps, batch {args.batch_size}, model mlp (hidden {args.hidden}), "
              "AdamW + cosine, "
              f"torch {torch.__version__}, {threads} thread(s), stderr tty: {sys.stderr.isatty()}, "
              f"load average: {loadavg()}")

        counter = iter(range(10**6))

        def run(kind: str) -> dict:
            out = Path(tmp) / f"run-{next(counter)}"
            common = (data, out, args.epochs, args.batch_size, args.lr, args.seed, args.hidden)
            if kind in ("bare", "bare+dl"):
                return bare_loop(*common, dataloader=kind == "bare+dl")
            return step_run(*common, checkpoint_every=NO_CHECKPOINT if kind == "step-nockpt" else 50,
                            synchronous=kind == "step-sync", writer="thread" if kind == "step-thread" else "")

        kinds = ("step", "bare", "step-nockpt", "bare+dl", "step-sync", "step-thread")
        for kind in kinds:  # warm-up: lazy imports (matplotlib), first-call allocations
            run(kind)
        results: dict[str, list[dict]] = {k: [] for k in kinds}
        for i in range(args.reps):
            order = kinds if i % 2 == 0 else kinds[::-1]  # A B C D, D C B A, ...
            for kind in order:
                r = run(kind)
                results[kind].append(r)
            print(f"  round {i + 1}: " + ", ".join(
                f"{k} {results[k][-1]['samples_per_second']:,.0f} samples/s ({results[k][-1]['wall']:.2f} s wall)"
                for k in kinds), flush=True)

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    drift = max(abs(a - b) for r_step in results["step"] + results["step-nockpt"] + results["bare+dl"]
                + results["step-sync"] + results["step-thread"]
                for a, b in zip(r_step["train_losses"], results["bare"][0]["train_losses"]))
    saves = [s for r in results["step"] for s in r["save_seconds"]]
    per_run = len(results["step"][0]["save_seconds"])
    print(f"load average after: {loadavg()}")
    print()
    print(f"{'variant':12s} {'samples/s':>10s} {'wall s':>8s}  (medians of {args.reps})")
    summary: dict = {"epochs": args.epochs, "batch_size": args.batch_size, "threads": threads, "reps": args.reps,
                     "steps": steps_per_epoch * args.epochs, "torch": torch.__version__, "loss_max_abs_diff": drift,
                     "loadavg_after": loadavg()}
    for kind in kinds:
        summary[kind] = {"samples_per_second": med(kind, "samples_per_second"), "wall_seconds": med(kind, "wall")}
        print(f"{kind:12s} {med(kind, 'samples_per_second'):10,.0f} {med(kind, 'wall'):8.3f}")
    bare_sps, bare_wall = med("bare", "samples_per_second"), med("bare", "wall")
    for kind in ("step", "step-nockpt"):
        ratio = med(kind, "samples_per_second") / bare_sps
        ratio_wall = bare_wall / med(kind, "wall")
        summary[kind].update(ratio_samples_per_second=ratio, ratio_wall=ratio_wall)
        label = "default, checkpoint_every=50" if kind == "step" else f"checkpoint_every={NO_CHECKPOINT}"
        print(f"ratio step/bare ({label}): samples/s {ratio:.3f}x (headline; goal >= 0.95x: "
              f"{'met' if ratio >= 0.95 else 'NOT met'}), wall time of the call {ratio_wall:.3f}x")
    if saves:
        summary["checkpoint"] = {"saves_per_run": per_run, "median_seconds": statistics.median(saves),
                                 "max_seconds": max(saves),
                                 "share_of_loop": statistics.median(sum(r["save_seconds"]) * r["samples_per_second"]
                                                                    / (summary["steps"] * args.batch_size)
                                                                    for r in results["step"]),
                                 "stall_max_seconds_median": med("step", "stall_max")}
        c = summary["checkpoint"]
        print(f"checkpoint write (Checkpointer.save, in the writer process): {per_run} per run, median "
              f"{c['median_seconds'] * 1000:.1f} ms, max {c['max_seconds'] * 1000:.1f} ms, {c['share_of_loop']:.1%} of "
              f"the training-loop time; training thread per checkpoint (wait + pack): max "
              f"{c['stall_max_seconds_median'] * 1000:.2f} ms (median of runs)")
    dl = med("bare+dl", "samples_per_second") / bare_sps
    summary["bare+dl"]["ratio_samples_per_second"] = dl
    print(f"diagnostic: the bare loop fed by the step's DataLoader (batch_sampler over a TensorDataset): {dl:.3f}x the bare loop")
    sync = med("step-sync", "samples_per_second") / bare_sps
    summary["step-sync"]["ratio_samples_per_second"] = sync
    print(f"diagnostic: the step with its checkpoints written on the training thread (synchronous): {sync:.3f}x "
          "the bare loop")
    threaded = med("step-thread", "samples_per_second") / bare_sps
    summary["step-thread"]["ratio_samples_per_second"] = threaded
    print(f"diagnostic: the step with its checkpoints written by a thread of the training process: {threaded:.3f}x "
          "the bare loop")
    if per_run:
        cpu = {f"{kind}_{clock}": (med(kind, f"cpu_{clock}") - med("step-nockpt", f"cpu_{clock}")) / per_run
               for kind in ("step", "step-sync") for clock in ("thread", "process")}
        summary["checkpoint"]["cpu_seconds_per_checkpoint"] = cpu
        print(f"CPU time per checkpoint (medians, minus step-nockpt's; steady on a busy machine): training thread "
              f"{cpu['step_thread'] * 1000:.2f} ms (synchronous: {cpu['step-sync_thread'] * 1000:.2f} ms), "
              f"training process {cpu['step_process'] * 1000:.2f} ms (not counting the writer process) "
              f"(synchronous: {cpu['step-sync_process'] * 1000:.2f} ms)")
    def per_step_total(kind: str) -> float:
        """Each step position's median duration over the rounds, summed: outliers of single rounds left out."""
        return sum(statistics.median(column) for column in zip(*(r["step_seconds"] for r in results[kind])))

    bare_total = per_step_total("bare")
    per_step = {kind: bare_total / per_step_total(kind) for kind in ("step", "step-nockpt", "step-thread")}
    summary["per_step_ratio"] = per_step
    print("diagnostic, per step (each step's duration from its forward to the next, median per step over the rounds, "
          "summed; steadier than samples/s): " + ", ".join(f"{kind} {ratio:.3f}x" for kind, ratio in per_step.items())
          + " the bare loop")
    print(f"per-epoch training loss, step vs bare: max |difference| {drift:.2e} (same work when ~0)")
    from figures import Ratio, record

    record("train", summary, [Ratio("step / bare loop, default checkpoints (samples/s)",
                                    summary["step"]["ratio_samples_per_second"], goal=0.95),
                              Ratio("step / bare loop, no periodic checkpoint (samples/s)",
                                    summary["step-nockpt"]["ratio_samples_per_second"], goal=0.95),
                              Ratio("bare loop + DataLoader / bare loop (diagnostic)", dl),
                              Ratio("step / bare loop, checkpoints written on the training thread (diagnostic)",
                                    sync),
                              Ratio("step / bare loop, checkpoints written by a thread (diagnostic)", threaded),
                              Ratio("step / bare loop, per-step medians summed (diagnostic)", per_step["step"])],
           title=f"train step vs a bare PyTorch loop, {threads} thread(s), median of {args.reps}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
