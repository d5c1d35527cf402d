"""``export`` (CPU): a trained model as fp32 ONNX, static-QDQ INT8 ONNX and, per target, the NPU artifact.

Runs on the CPU (conversion, calibration and compilation are CPU work); the
artifact records the NPU it is for. Steps, each gated:

1. torch -> ONNX (opset 21, static shapes, batch 1 by default), ``onnx.checker``
   full check, fp32 parity with torch on the validation split;
2. ``quant_pre_process``, then static QDQ calibrated on batches streamed from the
   validation split, with the target's settings (QNN: ``get_qnn_qdq_config``);
3. the target: ``qnn-htp`` is checked on the QNN HTP backend with CPU fallback
   disabled (a failure names every node it cannot run), compiled to an EPContext
   model + context binary and run in the HTP simulator; ``cpu-int8`` runs on the CPU EP;
4. gates: top-1 agreement with fp32 and accuracy drop, for the CPU INT8 run and the
   target's own run.

Outputs in ``output/``: ``model.onnx``, ``model.int8.onnx``, the target's files and
``export.json``, published whole (see :mod:`.staging`): a failed gate or a refused input leaves a previous
export as it was. See docs/steps/export.md.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import StepError, local_path
from .report import FORMAT
from ...compute import Compute
from ...dsl.step import step

__all__ = ["export", "FORMAT"]

log = logging.getLogger("xpuflow.export")


# conversion, calibration and compilation are CPU work; memory sized for calibration
@step(compute=Compute.cpu(cpu="2", memory="8Gi"), minutes=10, inputs=("model", "data"), outputs=("output",))
def export(
    model: str = "out/model",
    data: str = "out/data",
    output: str = "out/export",
    target: str = "qnn-htp",
    activations: str = "uint8",
    per_channel: bool = True,
    opset: int = 21,
    batch_size: int = 1,
    calibration_split: str = "validation",
    calibration_batches: int = 256,
    calibration_method: str = "minmax",
    min_agreement: float = 0.99,
    max_accuracy_drop: float = 1.0,
    max_parity_diff: float = 1e-4,
    latency_runs: int = 300,
    allow_architecture: str = "",
) -> dict[str, Any]:
    """Export ``model`` (model.pt or its directory) for ``target``; returns what ``output/export.json`` records.

    ``allow_architecture``: comma-separated ``package.module:factory`` a model file may name besides the built-in
    ones (also ``XPUFLOW_ALLOWED_ARCHITECTURES``); any other architecture is refused before it is imported.
    """
    from .calibration import SplitStream, check_data
    from .onnx_export import OPSETS
    from .quantize import METHODS
    from .targets import adapter_for, check_activations, resolve

    started = time.perf_counter()
    _check_number("opset", opset, int, OPSETS.start, OPSETS.stop - 1)
    _check_number("batch_size", batch_size, int, 1, None)
    _check_number("calibration_batches", calibration_batches, int, 1, None,
                  hint="calibration_batches=0 is an empty calibration set")
    _check_number("latency_runs", latency_runs, int, 1, None)
    _check_number("min_agreement", min_agreement, (int, float), 0, 1)
    _check_number("max_accuracy_drop", max_accuracy_drop, (int, float), 0, 100)
    _check_number("max_parity_diff", max_parity_diff, (int, float), 0, None)
    if calibration_method not in METHODS:
        from ...errors import did_you_mean

        raise StepError(f"export: calibration_method={calibration_method!r} is not valid: one of "
                        f"{', '.join(METHODS)}.{did_you_mean(calibration_method, METHODS)}")
    out = local_path(output)
    data_dir = local_path(data)
    spec = resolve(target)
    activations = check_activations(spec, activations)
    adapter = adapter_for(spec)
    environment = adapter.environment()
    net, meta, model_file = _load(model, allow_architecture)
    features = check_data(data_dir, meta, ("validation", calibration_split))
    shape = [batch_size, *map(int, meta["input_shape"][1:])]
    val = SplitStream(data_dir, "validation", features, batch_size)
    calib = SplitStream(data_dir, calibration_split, features, batch_size, max_batches=calibration_batches)
    if val.rows == 0:
        raise StepError(f"export: the validation split of data={data!r} has 0 rows: nothing to check the export "
                        "on and an empty calibration set. Fix: preprocess with val_fraction > 0.")
    if calib.full_batches == 0:
        raise StepError(f"export: empty calibration set: the {calibration_split} split has {calib.rows} rows, fewer "
                        f"than one batch of batch_size={batch_size}. Fix: calibrate on a split with rows, or a "
                        "smaller batch_size.")
    job = _Job(spec=spec, adapter=adapter, environment=environment, net=net, meta=meta, model_file=model_file,
               shape=shape, opset=opset, val=val, calib=calib, activations=activations, per_channel=per_channel,
               per_channel_used=bool(per_channel and spec.per_channel), method=calibration_method,
               min_agreement=min_agreement, max_accuracy_drop=max_accuracy_drop, max_parity_diff=max_parity_diff,
               latency_runs=latency_runs, started=started)
    from .staging import Staging

    with Staging(out) as st:
        return _run(st, job)


@dataclass(frozen=True)
class _Job:
    """Everything checked and resolved before the staging directory is made."""

    spec: Any
    adapter: Any
    environment: dict[str, Any]
    net: Any
    meta: dict[str, Any]
    model_file: Path
    shape: list[int]
    opset: int
    val: Any
    calib: Any
    activations: str
    per_channel: bool
    per_channel_used: bool
    method: str
    min_agreement: float
    max_accuracy_drop: float
    max_parity_diff: float
    latency_runs: int
    started: float


def _run(st: Any, job: _Job) -> dict[str, Any]:
    import torch

    from . import gates
    from .calibration import StreamReader, collect
    from .onnx_export import cpu_session, export_onnx
    from .quantize import calibration_method, preprocess_model, quantize_model
    from .report import LATENCY_SESSION, assemble, describe_files, latency

    timings: dict[str, float] = {}
    t = time.perf_counter()
    fp32_path = st.path("model.onnx")
    onnx_info = export_onnx(job.net, job.shape, fp32_path, job.opset)
    timings["onnx_export"] = time.perf_counter() - t
    produced = onnx_info["outputs"][0]["shape"] if len(onnx_info["outputs"]) == 1 else None
    if produced != [job.shape[0], len(job.meta["classes"])]:
        raise StepError(f"export: the model's outputs are {[o['shape'] for o in onnx_info['outputs']]} for input "
                        f"{job.shape}; expected one output of shape [{job.shape[0]}, {len(job.meta['classes'])}] "
                        f"(batch, classes {job.meta['classes']}).")

    def run_torch(x: Any) -> Any:
        with torch.inference_mode():
            return job.net(torch.from_numpy(x)).numpy()

    fp32 = cpu_session(fp32_path)
    in_name = fp32.get_inputs()[0].name
    torch_logits, labels = collect(job.val, run_torch)
    fp32_logits, _ = collect(job.val, lambda x: fp32.run(None, {in_name: x})[0])
    parity = gates.compare(torch_logits, fp32_logits, labels)
    gates.check_parity(parity, job.max_parity_diff)

    t = time.perf_counter()
    pre_path = st.path("model.pre.onnx")
    external = len(onnx_info["files"]) > 1
    pre_info = preprocess_model(fp32_path, pre_path, external)
    reader = StreamReader(job.calib, in_name)
    config = job.adapter.quant_config(pre_path, reader, activations=job.activations,
                                      per_channel=job.per_channel_used, method=calibration_method(job.method))
    int8_path = st.path("model.int8.onnx")
    quant_info = quantize_model(pre_path, int8_path, config, external)
    timings["quantize"] = time.perf_counter() - t

    t = time.perf_counter()
    target_check = job.adapter.check(int8_path)  # structural: before the quality gates, so its report comes first
    int8 = cpu_session(int8_path)
    int8_logits, _ = collect(job.val, lambda x: int8.run(None, {in_name: x})[0])
    int8_vs_fp32 = gates.compare(fp32_logits, int8_logits, labels)
    gates.check_quality("the INT8 model on the CPU EP", int8_vs_fp32, job.min_agreement, job.max_accuracy_drop)
    result = job.adapter.build(int8_path, st.dir, lambda run: collect(job.val, run))
    target_vs_fp32 = None
    if result.logits is not None:
        target_vs_fp32 = gates.compare(fp32_logits, result.logits, labels)
        gates.check_quality(f"the {job.spec.name} run ({result.details.get('ran', job.spec.execution_provider)})",
                            target_vs_fp32, job.min_agreement, job.max_accuracy_drop)
    timings["target"] = time.perf_counter() - t

    feed = {in_name: next(job.val.batches(pad=True))[0]}
    lat = {"batch": job.shape[0], "session": LATENCY_SESSION, "fp32": latency(fp32, feed, job.latency_runs),
           "int8": latency(int8, feed, job.latency_runs)}
    lat["int8_speedup_vs_fp32_p50"] = round(lat["fp32"]["p50_us"] / lat["int8"]["p50_us"], 3)

    roles = {name: "fp32 ONNX" + (" (external data)" if name.endswith(".data") else "")
             for name in onnx_info["files"]}
    roles.update({name: "INT8 static QDQ ONNX" + (" (external data)" if name.endswith(".data") else "")
                  for name in quant_info["files"]})
    roles.update(result.files)
    files = describe_files(st.dir, roles)
    timings["total"] = time.perf_counter() - job.started
    report = assemble(job, onnx=onnx_info, preprocess=pre_info, quantized=quant_info, calibrated=reader.fed,
                      files=files, parity=parity, int8_vs_fp32=int8_vs_fp32, target_vs_fp32=target_vs_fp32,
                      target_check={**target_check, **result.details}, latency=lat, timings=timings)
    st.commit(list(files), report)
    log.info("export: %s -> %s: int8 agreement %.2f%%, accuracy %.2f%% -> %.2f%%, int8 %.2fx the fp32 size",
             job.spec.name, st.output, 100 * int8_vs_fp32["agreement"], 100 * parity["accuracy"],
             100 * int8_vs_fp32["accuracy"], report["sizes"]["int8_to_fp32"])
    return report


def _check_number(name: str, value: Any, kind: Any, low: float | None, high: float | None, hint: str = "") -> None:
    ok = isinstance(value, kind) and not isinstance(value, bool)
    ok = ok and (low is None or value >= low) and (high is None or value <= high)
    if not ok or value != value:  # NaN
        span = f">= {low}" if high is None else f"between {low} and {high}"
        what = "a whole number" if kind is int else "a number"
        raise StepError(f"export: {name}={value!r} is not valid: {what} {span}.{' (' + hint + ')' if hint else ''}")


def _load(model: str, allow: str) -> tuple[Any, dict[str, Any], Path]:
    from ..models import load_model

    path = local_path(model)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise StepError(f"export: model={model!r}: no model file at {os.fspath(path)!r}. Fix: pass the train step's "
                        "output directory or its model.pt.")
    try:
        net, meta = load_model(path, allow=allow)
    except StepError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise StepError(f"export: model file {os.fspath(path)!r} is an xpuflow model with incomplete metadata "
                        f"({type(e).__name__}: {e}). Fix: re-save it with the train step.") from e
    shape = meta.get("input_shape")
    if not (isinstance(shape, list) and len(shape) >= 2 and all(isinstance(d, int) and d > 0 for d in shape)):
        raise StepError(f"export: model file {os.fspath(path)!r} records input_shape={shape!r}: expected a static "
                        "shape [batch, features, ...] of positive whole numbers.")
    return net, meta, path
