"""torch -> ONNX with static shapes and a fixed opset, one self-contained file when it fits, fully checked.

- ``torch.onnx.export(dynamo=True)`` with no ``dynamic_shapes``: every dimension,
  batch included, is fixed, which is what NPU compilers want;
- opset 21 by default: the first with 16-bit QuantizeLinear/DequantizeLinear in the
  standard domain (QNN uint16 activations) and what ONNX Runtime 1.32 and QNN take;
- the exporter may put weights in external data (``model.onnx.data``): the model is
  loaded with ``load_external_data=True`` and saved as one file when under 1.5 GiB
  (protobuf's limit is 2 GiB), else kept as one external data file beside it;
- the exporter's debugging metadata (Python stack traces with this machine's paths,
  FX node text) is dropped: it is not needed to run the model and leaks build paths;
- ``onnx.checker.check_model(full_check=True)`` (with strict shape inference) must pass.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..io import StepError

__all__ = ["DEFAULT_OPSET", "OPSETS", "export_onnx", "save", "consolidate", "cpu_session", "io_signature"]

DEFAULT_OPSET = 21
OPSETS = range(18, 24)  # the dynamo exporter starts at 18; 23 is the newest ONNX Runtime 1.32 runs
INPUT, OUTPUT = "input", "logits"
SINGLE_FILE_LIMIT = 3 << 29  # 1.5 GiB
_DEBUG_KEYS = ("pkg.torch.", "namespace")


def export_onnx(model: Any, shape: list[int], path: Path, opset: int) -> dict[str, Any]:
    """Write ``model`` for inputs of exactly ``shape`` to ``path``; returns what was written."""
    import onnx
    import torch

    scratch = path.parent / ".torch-export"
    scratch.mkdir()
    raw = scratch / path.name
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), _quiet("onnxscript", "onnx_ir", "torch.onnx"):
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(model, (torch.zeros(shape, dtype=torch.float32),), str(raw), dynamo=True,
                              opset_version=opset, input_names=[INPUT], output_names=[OUTPUT],
                              external_data=True, verbose=False)
        proto = onnx.load(str(raw), load_external_data=True)
    except StepError:
        raise
    except Exception as e:  # the exporter's errors name the unsupported op or construct
        raise StepError(f"export: torch.onnx.export could not convert the model to ONNX opset {opset}: "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}. Fix: use ops "
                        "the ONNX exporter supports, or another opset.") from e
    finally:
        exported_external = any(p.name != raw.name for p in scratch.iterdir()) if scratch.exists() else False
        shutil.rmtree(scratch, ignore_errors=True)
    _strip_debug_metadata(proto)
    version = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if version != opset:
        raise StepError(f"export: asked for opset {opset}, the exporter wrote {version}.")
    files = save(proto, path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise StepError(f"export: the exported ONNX model fails onnx.checker (full check): {e}") from e
    return {"opset": opset, "files": files, "exporter_wrote_external_data": exported_external,
            "saved_as": "one file" if len(files) == 1 else "model + external data", **io_signature(path)}


def save(proto: Any, path: Path) -> list[str]:
    """Save as one file when it fits comfortably under protobuf's 2 GiB, else with one external data file."""
    import onnx

    if proto.ByteSize() <= SINGLE_FILE_LIMIT:
        onnx.save(proto, str(path))
        return [path.name]
    onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=path.name + ".data", size_threshold=1024)
    return [path.name, path.name + ".data"]


def consolidate(path: Path) -> list[str]:
    """Fold ``path``'s external data (if any) back into one file when small; returns the files it now has."""
    import onnx

    data = path.with_name(path.name + ".data")
    if not data.exists():
        return [path.name]
    proto = onnx.load(str(path), load_external_data=True)
    data.unlink()
    return save(proto, path)


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """The exporter's optimizer logs every pass at INFO; keep warnings and errors only."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _strip_debug_metadata(proto: Any) -> None:
    def clean(props: Any) -> None:
        keep = [p for p in props if not p.key.startswith(_DEBUG_KEYS)]
        del props[:]
        props.extend(keep)

    for node in proto.graph.node:
        clean(node.metadata_props)
    for value in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info, *proto.graph.initializer):
        clean(value.metadata_props)
    clean(proto.graph.metadata_props)


def io_signature(path: Path) -> dict[str, Any]:
    """Names, shapes and element types of the graph inputs and outputs (initializers excluded)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}

    def describe(v: Any) -> dict[str, Any]:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
        return {"name": v.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name}

    return {"inputs": [describe(v) for v in proto.graph.input if v.name not in inits],
            "outputs": [describe(v) for v in proto.graph.output]}


def cpu_session(path: Path, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session: one intra-op thread, all graph optimizations, sequential execution."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise StepError(f"export: ONNX Runtime cannot load {path.name} on the CPU: {e}") from e
