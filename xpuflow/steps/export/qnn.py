"""``qnn-htp``: Qualcomm Hexagon NPU (HTP) through the onnxruntime-qnn plugin execution provider.

The PyPI wheel is a plugin EP: its library is registered with ONNX Runtime
once per process, then a session asks for the EP's devices with the HTP
backend. On Linux x86_64 the HTP backend is a simulator of the Hexagon NPU, so
the check is real (QNN's op support and its HTP graph compiler), only the
clock is not.

1. strict check: a session on the HTP backend with CPU fallback disabled
   (``session.disable_cpu_ep_fallback=1``); if it fails, a second session with
   fallback allowed records which EP took each node, and the step fails with a
   compatibility report naming every node and op the NPU cannot run;
2. EPContext: ``ep.context_enable=1`` with ``ep.context_embed_mode=0`` writes a
   small ONNX model with one EPContext node plus the compiled context binary;
3. the EPContext model runs in the simulator, strictly again, on the validation
   split; its logits are compared with fp32 and gated by the caller.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from ..io import StepError
from .targets import Target, TargetResult

__all__ = ["QnnHtp", "QnnCompatibilityError", "htp_session", "compatibility_report", "CONTEXT_MODEL"]

CONTEXT_MODEL = "model.int8_ctx.onnx"
_QDQ = ("QuantizeLinear", "DequantizeLinear")


class QnnCompatibilityError(StepError):
    """The HTP backend cannot run the whole model; ``report`` names each node it cannot run."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, e.g. across a process pool
        return type(self), (str(self), self.report)


def _devices() -> list[Any]:
    """The QNN EP's devices, registering the plugin library on first use in this process."""
    import onnxruntime as ort
    import onnxruntime_qnn as qnn

    name = qnn.get_ep_name()
    devices = [d for d in ort.get_ep_devices() if d.ep_name == name]
    if not devices:
        try:
            ort.register_execution_provider_library(name, qnn.get_library_path())
        except Exception as e:
            raise StepError(f"export: target 'qnn-htp': cannot register the QNN EP library "
                            f"{qnn.get_library_path()}: {e}") from e
        devices = [d for d in ort.get_ep_devices() if d.ep_name == name]
    if not devices:
        raise StepError("export: target 'qnn-htp': the QNN EP registered but reports no device.")
    return devices


def provider_options() -> dict[str, str]:
    import onnxruntime_qnn as qnn

    return {"backend_path": qnn.get_qnn_htp_path()}


def htp_session(path: Path, *, strict: bool = True, context_file: Path | None = None,
                record_assignment: bool = False, log_level: int = 3) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = log_level
    if strict:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    if record_assignment:
        so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    if context_file is not None:
        so.add_session_config_entry("ep.context_enable", "1")
        so.add_session_config_entry("ep.context_file_path", str(context_file))
        so.add_session_config_entry("ep.context_embed_mode", "0")
    so.add_provider_for_devices(_devices(), provider_options())
    return ort.InferenceSession(str(path), sess_options=so)


def _assignment(session: Any) -> dict[str, list[tuple[str, str]]]:
    placed: dict[str, list[tuple[str, str]]] = {}
    for sub in session.get_provider_graph_assignment_info():
        placed.setdefault(sub.ep_name, []).extend((n.name, n.op_type) for n in sub.get_nodes())
    return placed


def compatibility_report(path: Path, error: str) -> dict[str, Any]:
    """Which nodes of ``path`` the HTP backend takes and which it leaves to the CPU."""
    import onnx

    nodes = [(n.name, n.op_type) for n in onnx.load(str(path), load_external_data=False).graph.node]
    report: dict[str, Any] = {"model": path.name, "nodes": len(nodes), "strict_session_error": error}
    try:
        placed = _assignment(htp_session(path, strict=False, record_assignment=True, log_level=4))
    except Exception as e:  # the HTP graph compiler itself failed: no per-node answer
        report.update(unsupported=None, placement_error=str(e))
        return report
    on_npu = {n for n, _ in placed.get("QNNExecutionProvider", [])}
    unsupported = [{"node": n, "op": op, "assigned_to": ep} for ep, items in placed.items()
                   if ep != "QNNExecutionProvider" for n, op in items]
    unsupported += [{"node": n, "op": op, "assigned_to": None} for n, op in nodes
                    if n not in on_npu and all(n != u["node"] for u in unsupported)]
    # QuantizeLinear/DequantizeLinear nodes next to an unsupported op leave the NPU with it: list the cause first
    cause = [u for u in unsupported if u["op"] not in _QDQ] or unsupported
    ops: dict[str, int] = {}
    for u in cause:
        ops[u["op"]] = ops.get(u["op"], 0) + 1
    # the file's nodes only: the EP may add its own (e.g. it quantizes a float bias for the HTP)
    report.update(nodes_on_npu=len(on_npu & {n for n, _ in nodes}), unsupported=cause, unsupported_ops=ops,
                  left_with_them=[u for u in unsupported if u not in cause])
    return report


class QnnHtp:
    def __init__(self, target: Target) -> None:
        self.target = target

    def environment(self) -> dict[str, Any]:
        import onnxruntime as ort
        import onnxruntime_qnn as qnn
        from onnxruntime_qnn import build_and_package_info as info

        _devices()
        machine = platform.machine().lower()
        return {"onnxruntime": ort.__version__, "onnxruntime_qnn": getattr(info, "__version__", None),
                "qnn_sdk": getattr(info, "qnn_version", None), "backend": Path(qnn.get_qnn_htp_path()).name,
                "htp": "simulator" if machine in ("x86_64", "amd64") else f"device or simulator ({machine})"}

    def quant_config(self, model_path: Path, reader: Any, *, activations: str, per_channel: bool, method: Any) -> Any:
        from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

        from .quantize import quant_type

        return get_qnn_qdq_config(str(model_path), reader, calibrate_method=method,
                                  activation_type=quant_type(activations), weight_type=quant_type("uint8"),
                                  per_channel=per_channel)

    def check(self, int8_path: Path) -> dict[str, Any]:
        """Strict session on the HTP backend; fails with a compatibility report."""
        try:
            session = htp_session(int8_path, strict=True, record_assignment=True)
        except Exception as e:
            report = compatibility_report(int8_path, str(e).strip())
            if report.get("unsupported"):
                listed = ", ".join(f"{u['node']} ({u['op']})" for u in report["unsupported"])
                extra = report["left_with_them"]
                message = (f"export: target 'qnn-htp': the Hexagon NPU (QNN HTP backend) cannot run "
                           f"{len(report['unsupported'])} node(s) of {int8_path.name} and CPU fallback is disabled: "
                           f"{listed}. Unsupported ops: "
                           f"{', '.join(f'{op} x{n}' for op, n in report['unsupported_ops'].items())}.")
                if extra:
                    message += (f" {len(extra)} quantize/dequantize node(s) around them would leave the NPU too "
                                f"({', '.join(u['node'] for u in extra)}): "
                                f"{len(report['unsupported']) + len(extra)} of {report['nodes']} nodes in all.")
                message += " Fix: replace these ops in the model, or export for target 'cpu-int8'."
            else:
                message = (f"export: target 'qnn-htp': the QNN HTP backend refused {int8_path.name}: "
                           f"{report.get('placement_error') or report['strict_session_error']}")
            raise QnnCompatibilityError(message, report) from e
        placed = _assignment(session)
        on_npu = len(placed.get("QNNExecutionProvider", []))
        return {"strict": True, "cpu_fallback": "disabled", "nodes_on_npu": on_npu,
                "nodes_elsewhere": sum(len(v) for k, v in placed.items() if k != "QNNExecutionProvider")}

    def build(self, int8_path: Path, staging: Path, run_split: Any) -> TargetResult:
        import onnx

        context = staging / CONTEXT_MODEL
        try:
            htp_session(int8_path, strict=True, context_file=context)
        except Exception as e:
            raise StepError(f"export: target 'qnn-htp': compiling the EPContext model failed: {e}") from e
        if not context.exists():
            raise StepError(f"export: target 'qnn-htp': the QNN EP did not write {context.name}.")
        ctx_nodes = [n for n in onnx.load(str(context)).graph.node if n.op_type == "EPContext"]
        binaries = sorted({onnx.helper.get_attribute_value(a).decode() for n in ctx_nodes for a in n.attribute
                           if a.name == "ep_cache_context"})
        if not ctx_nodes or not binaries or not all((staging / b).exists() for b in binaries):
            raise StepError(f"export: target 'qnn-htp': {context.name} does not reference a context binary that "
                            f"exists (EPContext nodes: {len(ctx_nodes)}, binaries: {binaries}).")
        sim = htp_session(context, strict=True)
        name = sim.get_inputs()[0].name
        logits, _ = run_split(lambda x: sim.run(None, {name: x})[0])
        files = {context.name: "EPContext model (QNN HTP)", **{b: "QNN context binary" for b in binaries}}
        details = {"epcontext_nodes": len(ctx_nodes), "context_model": context.name,
                   "context_binaries": binaries, "embed_mode": 0, "provider_options": {"backend_path": "libQnnHtp.so"},
                   "ran": "EPContext model on the HTP backend, strict (no CPU fallback)"}
        return TargetResult(files=files, details=details, logits=logits)
