"""The export targets: a registry of data, plus one small adapter per target that runs here.

A target names the execution provider (EP) the INT8 model is built for, the
NPU it is meant to run on, and the quantization settings that NPU accepts. A
target whose adapter cannot run in this image stays in the registry as data,
marked unavailable with the reason, and is refused with that reason: adding
one (OpenVINO NPU, VitisAI, CoreML) is a registry entry plus an adapter with
the four methods of :class:`Adapter`.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ...errors import did_you_mean
from ..io import StepError

__all__ = ["Target", "TARGETS", "Adapter", "TargetResult", "resolve", "adapter_for", "supported"]


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    execution_provider: str
    npu: str | None  # the device the artifact is for; None for a CPU target
    npu_vendor: str | None
    compute_device: str | None  # the same device in xpuflow's accelerator catalog, where it is there
    activations: tuple[str, ...]  # activation types offered; the first is the default
    weights: str  # weight type, e.g. "int8 symmetric"
    per_channel: bool  # per-channel weight scales supported
    adapter: str | None  # "module:Class"
    requires: tuple[str, ...] = ()  # Python modules the adapter needs
    available: bool = True
    reason: str = ""  # why it is not available here


TARGETS: dict[str, Target] = {
    "qnn-htp": Target(
        name="qnn-htp",
        description="Qualcomm Hexagon NPU (HTP) through onnxruntime-qnn; checked strictly (no CPU fallback), "
        "compiled to an EPContext model + context binary, run in the HTP simulator on x86_64",
        execution_provider="QNNExecutionProvider", npu="qualcomm-hexagon-htp", npu_vendor="qualcomm",
        compute_device=None,  # a Snapdragon SoC NPU; the catalog's qualcomm-ai100 is a different device
        activations=("uint8", "uint16"), weights="uint8 (QNN default; per-channel where QNN takes it)",
        per_channel=True, adapter="xpuflow.steps.export.qnn:QnnHtp", requires=("onnxruntime_qnn",),
    ),
    "cpu-int8": Target(
        name="cpu-int8",
        description="generic ONNX Runtime INT8 (static QDQ) on the CPU execution provider",
        execution_provider="CPUExecutionProvider", npu=None, npu_vendor=None, compute_device=None,
        activations=("uint8",), weights="int8 symmetric", per_channel=True,
        adapter="xpuflow.steps.export.cpu:CpuInt8",
    ),
    "openvino-npu": Target(
        name="openvino-npu", description="Intel Core Ultra NPU through the OpenVINO EP (device_type NPU)",
        execution_provider="OpenVINOExecutionProvider", npu="intel-npu", npu_vendor="intel", compute_device="intel-npu",
        activations=("uint8",), weights="int8 symmetric", per_channel=True, adapter=None,
        requires=("onnxruntime_openvino",), available=False,
        reason="needs the onnxruntime-openvino package and an Intel NPU driver, neither of which is in this image, "
        "and no adapter is written yet (the OpenVINO EP silently falls back to the CPU for ops the NPU lacks, "
        "so an adapter must check node placement before it can claim NPU compatibility)",
    ),
    "vitisai": Target(
        name="vitisai", description="AMD Ryzen AI NPU through the VitisAI EP (INT8 QDQ only, vaip_config.json)",
        execution_provider="VitisAIExecutionProvider", npu="amd-ryzen-ai-npu", npu_vendor="amd", compute_device=None,
        activations=("uint8",), weights="int8 symmetric", per_channel=True, adapter=None,
        available=False, reason="needs AMD's Ryzen AI software (Windows, VitisAI EP build), not in this image; "
        "no adapter is written yet",
    ),
    "coreml": Target(
        name="coreml", description="Apple Neural Engine through the CoreML EP (MLProgram)",
        execution_provider="CoreMLExecutionProvider", npu="apple-neural-engine", npu_vendor="apple",
        compute_device=None,
        activations=("uint8",), weights="int8 symmetric", per_channel=True, adapter=None,
        available=False, reason="the CoreML EP exists only in ONNX Runtime builds for macOS/iOS; no adapter is "
        "written yet",
    ),
}


@dataclass
class TargetResult:
    """What an adapter adds: files it wrote into the staging directory, figures, and logits to gate."""

    files: dict[str, str]  # file name -> role
    details: dict[str, Any]
    logits: Any = None  # the target's own outputs on the validation split (None: nothing beyond the CPU INT8 run)


class Adapter(Protocol):
    target: Target

    def environment(self) -> dict[str, Any]:
        """Versions of what the target needs; raises StepError when it is missing here."""

    def quant_config(self, model_path: Path, reader: Any, *, activations: str, per_channel: bool,
                     method: Any) -> Any:
        """An onnxruntime.quantization StaticQuantConfig with this target's settings."""

    def check(self, int8_path: Path) -> dict[str, Any]:
        """Can the target run the whole INT8 model? Raises StepError with a per-node report when not."""

    def build(self, int8_path: Path, staging: Path, run_split: Any) -> TargetResult:
        """Compile what the target needs into ``staging`` and run it on the validation split.

        ``run_split(run)`` feeds the validation split through ``run(x) -> logits`` and returns the logits.
        """


def supported() -> list[str]:
    return [name for name, t in TARGETS.items() if t.available]


def resolve(name: str) -> Target:
    """The registry entry for ``name``; unknown and unavailable targets are refused with the supported list."""
    here = ", ".join(supported())
    if name not in TARGETS:
        listed = [n for n, t in TARGETS.items() if not t.available]
        raise StepError(f"export: target={name!r} is not valid: one of {here} (supported here); "
                        f"{', '.join(listed)} are listed but unavailable.{did_you_mean(name, TARGETS)} "
                        "Fix: pick a supported target.")
    target = TARGETS[name]
    if not target.available:
        raise StepError(f"export: target={name!r} is not available here: {target.reason}. "
                        f"Supported here: {here}.")
    missing = [m for m in target.requires if importlib.util.find_spec(m) is None]
    if missing:
        raise StepError(f"export: target={name!r} needs the Python package(s) {', '.join(missing)}, which are not "
                        f"installed in this image. Fix: install them (e.g. pip install onnxruntime-qnn) or pick "
                        f"another target ({here}).")
    return target


def adapter_for(target: Target) -> Adapter:
    assert target.adapter, target.name
    module, _, attr = target.adapter.partition(":")
    return getattr(importlib.import_module(module), attr)(target)


def check_activations(target: Target, activations: str) -> str:
    if activations not in target.activations:
        raise StepError(f"export: activations={activations!r} is not valid for target {target.name!r}: one of "
                        f"{', '.join(target.activations)}.{did_you_mean(activations, target.activations)}")
    return activations
