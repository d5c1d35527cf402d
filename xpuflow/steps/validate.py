"""``validate_on_device`` (NPU): run an export on its target device and compare it with fp32.

Runs the deployable artifact where it is meant to run: for ``qnn-htp`` the EPContext
model and its context binary on the QNN HTP backend (CPU fallback disabled; on
x86_64 the HTP backend is a simulator), for ``cpu-int8`` the INT8 model on the ONNX
Runtime CPU EP. Top-1 agreement with the fp32 ONNX model and accuracy on the split
are written to ``validation.json``, published whole (:mod:`xpuflow.steps.publish`). The data must fit
the export (features and classes, as ``evaluate`` checks). The step's own Compute is ``Compute.npu(...)``:
on a cluster it lands on an edge node pool with the device plugin's resource.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .io import StepError, read_finished, write_json
from .models import check_fits
from .preprocess import read_split
from .publish import publish
from ..compute import Compute
from ..dsl.step import step

__all__ = ["validate_on_device"]

log = logging.getLogger("xpuflow.validate")


def _session_for(folder: Path, report: dict[str, Any]) -> tuple[Any, str]:
    from .export.onnx_export import cpu_session

    target = report["target"]
    if target == "qnn-htp":
        from .export.qnn import htp_session

        ctx = [name for name, f in report["files"].items() if f["role"].startswith("EPContext")]
        if not ctx:
            raise StepError(f"validate_on_device: {folder} has no EPContext model for qnn-htp. Fix: re-run export.")
        return htp_session(folder / ctx[0], strict=True), "QNNExecutionProvider (HTP)"
    return cpu_session(folder / "model.int8.onnx"), "CPUExecutionProvider"


@step(compute=Compute.npu(device="intel-npu", count=1), inputs=("export", "data"), outputs=("output",))
def validate_on_device(export: str = "out/export", data: str = "out/data", output: str = "out/validate",
                       split: str = "test") -> dict[str, Any]:
    """Validate the export in ``export`` on ``split``; returns what ``validation.json`` records."""
    import numpy as np

    from .export.onnx_export import cpu_session

    folder = Path(export)
    report = read_finished(folder, "export.json", who="validate_on_device", option="export", producer="export")
    x, y, stats = read_split(data, split)
    shape = report["input"]["shape"]
    check_fits(stats, {"input_shape": shape, "features": report["input"].get("features") or None,
                       "classes": report["output"]["classes"]}, who="validate_on_device", data=data)
    device, provider = _session_for(folder, report)
    reference = cpu_session(folder / "model.onnx")
    name = report["input"]["name"]
    batch = shape[0]
    usable = (len(x) // batch) * batch
    on_device, fp32 = [], []
    for start in range(0, usable, batch):
        feed = {name: x[start:start + batch].astype(np.float32)}
        on_device.append(device.run(None, feed)[0])
        fp32.append(reference.run(None, feed)[0])
    dev = np.concatenate(on_device).argmax(1)
    ref = np.concatenate(fp32).argmax(1)
    labels = y[:usable]
    result = {
        "target": report["target"],
        "target_device": report.get("target_device", {}),
        "execution_provider": provider,
        "split": split,
        "rows": int(usable),
        "accuracy": float((dev == labels).mean()) if usable else 0.0,
        "accuracy_fp32": float((ref == labels).mean()) if usable else 0.0,
        "agreement_with_fp32": float((dev == ref).mean()) if usable else 0.0,
    }
    with publish(output, who="validate_on_device", markers=("validation.json",)) as staging:
        write_json(staging / "validation.json", result)
    log.info("validate_on_device: %s on %s: accuracy %.4f, agreement with fp32 %.4f over %d rows",
             result["target"], provider, result["accuracy"], result["agreement_with_fp32"], usable)
    return result
