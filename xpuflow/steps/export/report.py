"""The figures ``export.json`` records: file digests and sizes, CPU latency, versions."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

__all__ = ["sha256", "describe_files", "latency", "versions", "assemble", "LATENCY_SESSION", "FORMAT"]

FORMAT = "xpuflow.export/1"

LATENCY_SESSION = {"execution_provider": "CPUExecutionProvider", "intra_op_num_threads": 1,
                   "inter_op_num_threads": 1, "execution_mode": "sequential",
                   "graph_optimization_level": "ORT_ENABLE_ALL"}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe_files(folder: Path, roles: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {name: {"role": role, "bytes": (folder / name).stat().st_size, "sha256": sha256(folder / name)}
            for name, role in roles.items()}


def latency(session: Any, feed: dict[str, Any], runs: int, warmup: int = 50) -> dict[str, float]:
    """p50/p95 wall time of ``session.run`` at the exported (static) batch, in microseconds."""
    import numpy as np

    for _ in range(warmup):
        session.run(None, feed)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times[i] = time.perf_counter() - start
    return {"p50_us": round(float(np.percentile(times, 50)) * 1e6, 2),
            "p95_us": round(float(np.percentile(times, 95)) * 1e6, 2), "runs": runs}


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def assemble(job: Any, *, onnx: dict[str, Any], preprocess: dict[str, Any], quantized: dict[str, Any], calibrated: int,
             files: dict[str, dict[str, Any]], parity: dict[str, Any], int8_vs_fp32: dict[str, Any],
             target_vs_fp32: dict[str, Any] | None, target_check: dict[str, Any], latency: dict[str, Any],
             timings: dict[str, float]) -> dict[str, Any]:
    """The content of ``export.json``."""
    spec, meta = job.spec, job.meta
    fp32_bytes = sum(f["bytes"] for n, f in files.items() if n in onnx["files"])
    int8_bytes = sum(f["bytes"] for n, f in files.items() if n in quantized["files"])
    binary = sum(f["bytes"] for f in files.values() if f["role"] == "QNN context binary")
    norm = meta.get("normalisation") or {}
    features = meta.get("features") or []
    return {
        "format": FORMAT,
        "target": spec.name,
        "execution_provider": spec.execution_provider,
        "target_device": {"kind": "npu" if spec.npu else "cpu", "npu": spec.npu, "vendor": spec.npu_vendor,
                          "compute_device": spec.compute_device, "description": spec.description},
        "exported_on": "cpu (the export step's compute; the artifact is for target_device)",
        "opset": onnx["opset"],
        "input": {**onnx["inputs"][0], "features": features,
                  "normalisation": {"note": "standardise each feature as (x - mean) / std before feeding the model; "
                                    "not part of the graph",
                                    "mean": [norm.get("mean", {}).get(f) for f in features],
                                    "std": [norm.get("std", {}).get(f) for f in features]}},
        "output": {**onnx["outputs"][0], "classes": meta["classes"]},
        "source_model": {"file": job.model_file.name, "sha256": sha256(job.model_file),
                         "architecture": meta["architecture"], "model_kwargs": meta.get("model_kwargs")},
        "onnx": {"saved_as": onnx["saved_as"], "exporter_wrote_external_data": onnx["exporter_wrote_external_data"],
                 "static_shapes": True},
        "quantization": {"format": "QDQ", "mode": "static", "activations": job.activations, "weights": spec.weights,
                         "per_channel": job.per_channel_used, "per_channel_requested": job.per_channel,
                         "calibration": {"split": job.calib.split, "method": job.method, "batches": calibrated,
                                         "rows": calibrated * job.shape[0]},
                         "preprocess": preprocess, "opset": quantized["opset"], "ops": quantized["ops"]},
        "files": files,
        "sizes": {"fp32_bytes": fp32_bytes, "int8_bytes": int8_bytes, "int8_to_fp32": round(int8_bytes / fp32_bytes, 4),
                  "context_binary_bytes": binary or None},
        "accuracy": {"split": "validation", "rows": parity["rows"], "torch_fp32": parity["accuracy_reference"],
                     "fp32": parity["accuracy"], "int8": int8_vs_fp32["accuracy"],
                     "drop_points": int8_vs_fp32["accuracy_drop_points"], "agreement": int8_vs_fp32["agreement"],
                     "target": target_vs_fp32["accuracy"] if target_vs_fp32 else None,
                     "target_agreement": target_vs_fp32["agreement"] if target_vs_fp32 else None},
        "parity": {"fp32_vs_torch": {**parity, "tolerance": job.max_parity_diff}, "int8_vs_fp32": int8_vs_fp32,
                   "target_vs_fp32": target_vs_fp32},
        "gates": {"min_agreement": job.min_agreement, "max_accuracy_drop_points": job.max_accuracy_drop,
                  "max_parity_diff": job.max_parity_diff, "passed": True,
                  "checked": ["fp32_vs_torch", "int8_vs_fp32"] + (["target_vs_fp32"] if target_vs_fp32 else [])},
        "target_check": target_check,
        "latency_cpu_ort": latency,
        "environment": {**versions(), **job.environment},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
