"""Export step: INT8 ONNX Runtime latency vs torch eager fp32, INT8 size vs fp32, export wall time.

Same process, same thread count for both: torch eager fp32 under
``torch.inference_mode()`` with ``torch.set_num_threads(T)``, against ONNX Runtime
on the CPU EP with ``intra_op_num_threads=T``, ``inter_op_num_threads=1``,
sequential execution and ``ORT_ENABLE_ALL`` (the session the export step times).
ONNX Runtime fp32 runs too, so the INT8 gain is not confused with the framework
overhead that ONNX Runtime removes. The runners are interleaved in rounds so that
drift of the machine hits all of them alike.

Goals: INT8 ORT >= 2x faster than torch eager fp32 at batch 1 (p50); INT8 file
<= 0.3x the fp32 file for both cpu-int8 and qnn-htp, accuracy drop <= 1 point, top-1 agreement
>= 99 %. Figures also in bench/results/export.json and export.png.

    .venv/bin/python bench/export.py [--model DIR --data DIR | --hidden 128] [--batch 1] [--threads 1]
        [--rounds 5] [--runs 2000]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from figures import Ratio, record


def timed(fn, feed, runs: int) -> np.ndarray:
    out = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        fn(feed)
        out[i] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="a train output (default: train the default MLP, 10 epochs, here)")
    parser.add_argument("--data", help="a preprocess output (default: preprocess builtin:digits here)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=128,
                        help="MLP width when training here (default 128: the default MLP)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--target", default="cpu-int8", help="the export timed for latency (default cpu-int8)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (data, model, exports)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import onnxruntime as ort
    import torch

    from xpuflow.steps.export import export
    from xpuflow.steps.models import load_model
    from xpuflow.steps.preprocess import preprocess, read_split
    from xpuflow.steps.train import train

    work = Path(tempfile.mkdtemp(prefix="xpuflow-bench-export-"))
    data = args.data or str(work / "data")
    model = args.model or str(work / "model")
    if not args.data:
        preprocess(output=data)
    if not args.model:
        train(data=data, output=model, epochs=10, checkpoint_every=1000,
              model_kwargs=json.dumps({"hidden": args.hidden}))

    walls = {}
    for target in dict.fromkeys([args.target, "cpu-int8", "qnn-htp"]):
        start = time.perf_counter()
        report = export(model=model, data=data, output=str(work / f"export-{target}"), target=target,
                        batch_size=args.batch, latency_runs=50)
        walls[target] = (time.perf_counter() - start, report)
    report = walls[args.target][1]
    out = work / f"export-{args.target}"

    torch.set_num_threads(args.threads)
    net, _ = load_model(Path(model) / "model.pt")
    x, _, _ = read_split(data, "validation")
    feed = x[: args.batch].copy()
    xt = torch.from_numpy(feed)

    def session(path: Path, level: ort.GraphOptimizationLevel) -> ort.InferenceSession:
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = level
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    all_opt = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    fp32, int8 = session(out / "model.onnx", all_opt), session(out / "model.int8.onnx", all_opt)
    int8_basic = session(out / "model.int8.onnx", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)

    def torch_eager(v):
        with torch.inference_mode():
            return net(v)

    runners = {
        "torch eager fp32": (torch_eager, xt),
        "ORT fp32": (lambda f: fp32.run(None, f), {"input": feed}),
        "ORT int8 (ORT_ENABLE_ALL)": (lambda f: int8.run(None, f), {"input": feed}),
        "ORT int8 (ORT_ENABLE_BASIC)": (lambda f: int8_basic.run(None, f), {"input": feed}),
    }
    samples: dict[str, list[np.ndarray]] = {name: [] for name in runners}
    for name, (fn, f) in runners.items():  # warm-up
        timed(fn, f, 200)
    for _ in range(args.rounds):
        for name, (fn, f) in runners.items():
            samples[name].append(timed(fn, f, args.runs))
    stats = {}
    for name, parts in samples.items():
        t = np.concatenate(parts) * 1e6
        stats[name] = (float(np.percentile(t, 50)), float(np.percentile(t, 95)))

    hidden = net[0].out_features
    print(f"model: MLP 64 -> {hidden} -> {hidden} -> 10{' (the default)' if hidden == 128 else ''}, "
          f"batch {args.batch}, threads {args.threads}, {args.rounds} rounds x {args.runs} runs, interleaved; "
          f"torch {torch.__version__}, onnxruntime {ort.__version__}")
    for name, (p50, p95) in stats.items():
        print(f"  {name:<30} p50 {p50:8.2f} us   p95 {p95:8.2f} us")
    eager, ort32, ort8 = stats["torch eager fp32"][0], stats["ORT fp32"][0], stats["ORT int8 (ORT_ENABLE_ALL)"][0]
    speedup = eager / ort8
    print(f"INT8 ORT vs torch eager fp32 (p50): {speedup:.2f}x faster "
          f"(goal >= 2x: {'met' if speedup >= 2 else 'NOT met'})")
    print(f"INT8 ORT vs ORT fp32 (p50): {ort32 / ort8:.2f}x ({'faster' if ort8 < ort32 else 'slower'}: "
          "the INT8 gain itself, without torch's framework overhead)")
    ratios = [Ratio("INT8 ORT / torch eager fp32 speed (p50)", speedup, goal=2.0),
              Ratio("INT8 ORT / ORT fp32 speed (p50)", ort32 / ort8)]
    figures = {"batch": args.batch, "threads": args.threads, "hidden": hidden, "latency_us": stats, "targets": {}}
    for target, (wall, rep) in walls.items():
        sizes, acc = rep["sizes"], rep["accuracy"]
        size = sizes["int8_to_fp32"]
        print(f"INT8 file vs fp32 file: {target} {sizes['int8_bytes']} / {sizes['fp32_bytes']} bytes = {size:.3f}x "
              f"(goal <= 0.3x: {'met' if size <= 0.3 else 'NOT met'})")
        print(f"  accuracy ({target}, validation, {acc['rows']} rows): fp32 {acc['fp32']:.4f}, int8 {acc['int8']:.4f} "
              f"(drop {acc['drop_points']:.2f} points, goal <= 1), top-1 agreement {acc['agreement']:.4f} (goal >= 0.99)"
              + (f"; on the target: {acc['target']:.4f}, agreement {acc['target_agreement']:.4f}"
                 if acc.get("target") is not None else ""))
        print(f"  export + quantize wall time: {wall:.2f} s (step timings {json.dumps(rep['timings_s'])})")
        ratios.append(Ratio(f"INT8 file / fp32 file ({target})", size, goal=0.3, better="lower"))
        ratios.append(Ratio(f"top-1 agreement INT8 / fp32 ({target})", acc["agreement"], goal=0.99))
        figures["targets"][target] = {"sizes": sizes, "accuracy": acc, "wall_s": wall, "timings_s": rep["timings_s"]}
    record("export", figures, ratios, title="export: INT8 (ONNX Runtime, QDQ) vs fp32, default MLP, batch "
                                             f"{args.batch}")
    if args.keep:
        print(f"files: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
