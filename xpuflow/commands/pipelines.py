"""Find a pipeline by name or file, as a flow (neutral) and as a KFP pipeline module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from ..errors import ComputeError
from ..flows import FLOW_NAMES, Flow, flow

__all__ = ["resolve_flow", "pipeline_file", "load_kfp_module"]


def resolve_flow(name: str) -> Flow:
    """``train_gpu_export_npu`` or ``pipelines/train_gpu_export_npu.py`` -> its Flow."""
    return flow(Path(name).stem if name.endswith(".py") else name)


def pipeline_file(name: str) -> Path:
    """The KFP pipeline file: a path as given, else ``pipelines/<name>.py`` here or beside the package."""
    candidates = [Path(name)] if name.endswith(".py") else []
    stem = Path(name).stem
    candidates += [Path.cwd() / "pipelines" / f"{stem}.py", Path(__file__).resolve().parents[2] / "pipelines" / f"{stem}.py"]
    for path in candidates:
        if path.is_file():
            return path
    raise ComputeError(
        f"pipeline={name!r}: no pipeline file found (looked in {', '.join(str(c) for c in candidates)}). "
        f"Fix: pass a path to a .py file defining build(cluster) or `pipeline`; xpuflow's own: {', '.join(FLOW_NAMES)}."
    )


def load_kfp_module(name: str) -> ModuleType:
    path = pipeline_file(name)
    module_name = f"xpuflow_pipeline_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def kfp_pipeline(name: str, cluster: str):
    """The pipeline function for ``cluster``: ``build(cluster)`` when the file has it, else ``pipeline``."""
    module = load_kfp_module(name)
    if hasattr(module, "build"):
        return module.build(cluster)
    if hasattr(module, "pipeline"):
        return module.pipeline
    raise ComputeError(f"{pipeline_file(name)} defines neither build(cluster) nor pipeline.")
