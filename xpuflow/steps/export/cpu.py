"""``cpu-int8``: generic ONNX Runtime INT8 on the CPU execution provider (static QDQ, U8S8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .quantize import static_qdq_config
from .targets import Target, TargetResult

__all__ = ["CpuInt8"]


class CpuInt8:
    """uint8 asymmetric activations, int8 symmetric weights (per-channel by default); nothing to compile."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def environment(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__}

    def quant_config(self, model_path: Path, reader: Any, *, activations: str, per_channel: bool, method: Any) -> Any:
        return static_qdq_config(reader, activations=activations, weights="int8", per_channel=per_channel,
                                 method=method)

    def check(self, int8_path: Path) -> dict[str, Any]:
        return {"strict": False, "note": "the CPU EP runs every standard ONNX op"}

    def build(self, int8_path: Path, staging: Path, run_split: Any) -> TargetResult:
        # the INT8 model already ran on the CPU EP for the gates: nothing else to build or run
        return TargetResult(files={}, details={"runs_on": "CPUExecutionProvider", "npu": None})
