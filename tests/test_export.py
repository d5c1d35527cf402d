"""export: real torch -> ONNX -> static QDQ INT8, the QNN HTP backend (simulator, strict), gates, bad input.

One model is trained per module with the real preprocess and train steps; every
export below runs the real step. Nothing of ours is mocked: the failure cases
feed the step real bad files and real bad calibration data.

Training, exports and ONNX Runtime/QNN sessions run in one spawned worker process
(``remote``), so the pytest process stays small: tests that fork and measure the
peak RSS of their child (ru_maxrss starts at the parent's RSS) are not disturbed.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import torch
from torch import nn

from xpuflow.dsl.load import load_step
from xpuflow.steps import build_parser
from xpuflow.steps.export import export
from xpuflow.steps.export.calibration import SplitStream, StreamReader, collect
from xpuflow.steps.export.gates import GateError, check_quality, compare
from xpuflow.steps.export.onnx_export import cpu_session
from xpuflow.steps.export.qnn import QnnCompatibilityError, htp_session
from xpuflow.steps.export.targets import TARGETS, resolve, supported
from xpuflow.steps.io import StepError
from xpuflow.steps.models import FORMAT, build_model, save_model
from xpuflow.steps.preprocess import preprocess
from xpuflow.steps.train import train

FEATURES = [f"px{r}_{c}" for r in range(8) for c in range(8)]


class Erf(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erf(x)


def erf_mlp(input_dim: int, num_classes: int, hidden: int = 32) -> nn.Module:
    """An architecture with an op (Erf) the QNN HTP backend does not run."""
    return nn.Sequential(nn.Linear(input_dim, hidden), Erf(), nn.Linear(hidden, num_classes))


@pytest.fixture(scope="module")
def worker():
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def remote(pool: ProcessPoolExecutor, fn, *args, **kwargs):
    """Run ``fn`` in the worker process; its result or its exception comes back."""
    return pool.submit(fn, *args, **kwargs).result(timeout=600)


@pytest.fixture(scope="module")
def model(worker, data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    remote(worker, train, data=str(data), output=str(out), epochs=6, checkpoint_every=1000)
    return out


@pytest.fixture(scope="module")
def qnn(worker, model, data, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("qnn") / "export"
    return out, remote(worker, export, model=str(model), data=str(data), output=str(out), target="qnn-htp",
                       latency_runs=100)


@pytest.fixture(scope="module")
def cpu(worker, model, data, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cpu") / "export"
    return out, remote(worker, export, model=str(model), data=str(data), output=str(out), target="cpu-int8",
                       latency_runs=100)


@pytest.fixture(scope="module")
def garbage_train(data, tmp_path_factory) -> Path:
    """The data with its train split replaced by extreme values (x 1000): calibrating on it ruins the scales."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out = tmp_path_factory.mktemp("garbage") / "data"
    shutil.copytree(data, out)
    table = pq.read_table(out / "train.parquet")
    for name in FEATURES:
        i = table.schema.get_field_index(name)
        scaled = pc.multiply(table.column(i), pa.scalar(1000.0, pa.float32()))
        table = table.set_column(i, table.schema.field(i), scaled)
    pq.write_table(table, out / "train.parquet")
    return out


def leftovers(out: Path) -> list[str]:
    """Anything an export left: files in the output, or staging directories beside it."""
    found = sorted(p.name for p in out.iterdir()) if out.exists() else []
    return found + sorted(p.name for p in out.parent.glob(f".{out.name}.*"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- qnn-htp, for real, strict


def test_qnn_htp_export_writes_every_artifact_and_a_complete_record(qnn):
    out, report = qnn
    assert json.loads((out / "export.json").read_text()) == report
    names = {"model.onnx", "model.int8.onnx", "model.int8_ctx.onnx", "model.int8_ctx_qnn.bin"}
    assert set(report["files"]) == names and sorted(p.name for p in out.iterdir()) == sorted(names | {"export.json"})
    for name, entry in report["files"].items():
        assert entry["sha256"] == digest(out / name) and entry["bytes"] == (out / name).stat().st_size
    assert not leftovers(out)[len(names) + 1:]  # no staging directory left beside the output
    assert report["target"] == "qnn-htp" and report["execution_provider"] == "QNNExecutionProvider"
    assert report["target_device"]["kind"] == "npu" and report["target_device"]["vendor"] == "qualcomm"
    assert report["opset"] == 21 and report["input"]["shape"] == [1, 64] and report["output"]["shape"] == [1, 10]
    assert report["input"]["features"] == FEATURES and len(report["input"]["normalisation"]["mean"]) == 64
    sizes = report["sizes"]
    assert sizes["fp32_bytes"] == report["files"]["model.onnx"]["bytes"]
    assert sizes["int8_to_fp32"] < 0.4
    assert sizes["context_binary_bytes"] == report["files"]["model.int8_ctx_qnn.bin"]["bytes"]
    acc = report["accuracy"]
    assert acc["rows"] == 290 and acc["fp32"] > 0.85 and acc["fp32"] == acc["torch_fp32"]
    assert acc["agreement"] >= 0.99 and acc["drop_points"] <= 1.0 and acc["target_agreement"] >= 0.99
    assert report["parity"]["fp32_vs_torch"]["max_abs_diff"] <= 1e-4
    assert report["gates"]["checked"] == ["fp32_vs_torch", "int8_vs_fp32", "target_vs_fp32"]
    check = report["target_check"]
    assert check["strict"] and check["cpu_fallback"] == "disabled" and check["nodes_elsewhere"] == 0
    assert check["nodes_on_npu"] > 0 and check["context_binaries"] == ["model.int8_ctx_qnn.bin"]
    assert report["environment"]["htp"] == "simulator" and report["environment"]["onnxruntime_qnn"]
    for kind in ("fp32", "int8"):
        lat = report["latency_cpu_ort"][kind]
        assert 0 < lat["p50_us"] <= lat["p95_us"]
    q = report["quantization"]
    assert q["activations"] == "uint8" and q["per_channel"] and q["calibration"]["batches"] == 256
    print(f"qnn-htp: agreement {acc['agreement']:.4f} (HTP sim {acc['target_agreement']:.4f}), accuracy "
          f"{acc['fp32']:.4f} -> {acc['int8']:.4f}, int8/fp32 size {sizes['int8_to_fp32']}")


def _inspect(out: Path) -> dict:
    """Facts about the ONNX files of an export, read with onnx (in the worker)."""
    import onnx
    from onnx import numpy_helper

    fp32 = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(fp32, full_check=True)
    dims = [d for v in (*fp32.graph.input, *fp32.graph.output) for d in v.type.tensor_type.shape.dim]
    int8 = onnx.load(str(out / "model.int8.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in int8.graph.initializer}
    ctx = out / "model.int8_ctx.onnx"
    return {
        "opset": [o.version for o in fp32.opset_import if o.domain in ("", "ai.onnx")],
        "static": all(d.HasField("dim_value") for d in dims),
        "torch_debug_metadata": any(p.key.startswith("pkg.torch.") for n in fp32.graph.node for p in n.metadata_props),
        "external": any(i.data_location == onnx.TensorProto.EXTERNAL
                        for i in onnx.load(str(out / "model.onnx"), load_external_data=False).graph.initializer),
        "int8_ops": sorted({n.op_type for n in int8.graph.node}),
        "weight_scale_shape": list(inits["0.weight_scale"].shape),
        "weight_dtype": str(inits["0.weight_quantized"].dtype),
        "weight_zero_points_all_zero": not inits["0.weight_zero_point"].any(),
        "ctx_ops": [n.op_type for n in onnx.load(str(ctx)).graph.node] if ctx.exists() else None,
    }


def test_onnx_files_are_static_checked_and_quantized_per_channel(worker, qnn):
    out, report = qnn
    facts = remote(worker, _inspect, out)
    assert facts["opset"] == [21] and facts["static"]  # static shapes, batch included
    assert not facts["torch_debug_metadata"] and not facts["external"]  # one file, no build paths
    assert report["onnx"] == {"saved_as": "one file", "exporter_wrote_external_data": True, "static_shapes": True}
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(facts["int8_ops"])
    assert facts["weight_scale_shape"] == [128] and facts["weight_dtype"] == "uint8"  # one scale per output channel
    assert facts["ctx_ops"] == ["EPContext"]


def _run_epcontext(out: Path, data: Path) -> dict:
    sim = htp_session(out / "model.int8_ctx.onnx", strict=True)
    stream = SplitStream(data, "validation", FEATURES, 1)
    logits, labels = collect(stream, lambda x: sim.run(None, {"input": x})[0])
    int8 = cpu_session(out / "model.int8.onnx")
    ref, _ = collect(stream, lambda x: int8.run(None, {"input": x})[0])
    return {"accuracy": float((logits.argmax(1) == labels).mean()),
            "agreement_with_cpu_int8": float((logits.argmax(1) == ref.argmax(1)).mean())}


def test_epcontext_model_runs_strictly_in_the_htp_simulator_from_the_output_dir(worker, qnn, data):
    out, report = qnn
    figures = remote(worker, _run_epcontext, out, data)
    assert figures["accuracy"] == report["accuracy"]["target"] and figures["agreement_with_cpu_int8"] >= 0.99


def test_an_op_the_npu_cannot_run_fails_with_a_compatibility_report(worker, data, tmp_path):
    torch.manual_seed(0)
    net = build_model(f"{__name__}:erf_mlp", 64, 10)
    meta = {"architecture": f"{__name__}:erf_mlp", "model_kwargs": {}, "input_shape": [1, 64],
            "classes": [str(i) for i in range(10)], "features": FEATURES, "normalisation": {}}
    save_model(tmp_path / "model.pt", net, meta)
    out = tmp_path / "export"
    with pytest.raises(QnnCompatibilityError, match=r"cannot run 1 node\(s\) of model\.int8\.onnx and CPU fallback "
                                                    r"is disabled: (\w+) \(Erf\)\. Unsupported ops: Erf x1\.") as info:
        remote(worker, export, model=str(tmp_path), data=str(data), output=str(out), target="qnn-htp",
               allow_architecture=f"{__name__}:erf_mlp")  # a user's architecture, allowed by the user
    report = info.value.report
    (erf,) = report["unsupported"]
    assert erf["op"] == "Erf" and erf["assigned_to"] == "CPUExecutionProvider"
    assert {u["op"] for u in report["left_with_them"]} <= {"QuantizeLinear", "DequantizeLinear"}
    assert report["nodes_on_npu"] == report["nodes"] - 1 - len(report["left_with_them"]) > 0
    print(info.value)
    assert leftovers(out) == []


# ---------------------------------------------------------------- cpu-int8


def test_cpu_int8_export_records_no_npu(worker, cpu):
    out, report = cpu
    assert set(report["files"]) == {"model.onnx", "model.int8.onnx"}
    assert report["target"] == "cpu-int8" and report["execution_provider"] == "CPUExecutionProvider"
    assert report["target_device"] == {**report["target_device"], "kind": "cpu", "npu": None, "vendor": None}
    assert report["sizes"]["context_binary_bytes"] is None and report["parity"]["target_vs_fp32"] is None
    assert report["accuracy"]["agreement"] >= 0.99 and report["accuracy"]["drop_points"] <= 1.0
    facts = remote(worker, _inspect, out)
    assert facts["weight_dtype"] == "int8" and facts["weight_zero_points_all_zero"]  # symmetric int8, per channel
    assert facts["weight_scale_shape"] == [128] and facts["ctx_ops"] is None


def _int8_facts(out: Path) -> dict:
    import onnx

    proto = onnx.load(str(out / "model.int8.onnx"))
    return {"int32_initializers": [i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT32],
            "metadata": [p.key for p in proto.metadata_props], "value_info": len(proto.graph.value_info)}


def test_int8_file_is_at_most_0_3x_the_fp32_file_for_both_targets(worker, cpu, qnn):
    """The default model: float32 biases (no int32 bias with a scale and zero point per channel beside it) and no
    quantizer bookkeeping in the file; accuracy and agreement gates as before."""
    for out, report in (cpu, qnn):
        assert report["sizes"]["int8_to_fp32"] <= 0.3, (report["target"], report["sizes"])
        assert report["accuracy"]["agreement"] >= 0.99 and report["accuracy"]["drop_points"] <= 1.0
        assert remote(worker, _int8_facts, out) == {"int32_initializers": [], "metadata": [], "value_info": 0}


def test_static_batch_larger_than_one_pads_the_last_batch(worker, model, data, tmp_path):
    report = remote(worker, export, model=str(model), data=str(data), output=str(tmp_path / "b4"), target="cpu-int8",
                    batch_size=4,
                    latency_runs=5)
    assert report["input"]["shape"] == [4, 64] and report["accuracy"]["rows"] == 290  # 290 = 72 * 4 + 2
    calibration = report["quantization"]["calibration"]
    assert calibration["batches"] == 72 and calibration["rows"] == 288


def _export_with_single_file_limit(limit: int, **kwargs) -> dict:
    from xpuflow.steps.export import onnx_export

    before, onnx_export.SINGLE_FILE_LIMIT = onnx_export.SINGLE_FILE_LIMIT, limit
    try:
        return export(**kwargs)
    finally:
        onnx_export.SINGLE_FILE_LIMIT = before


def test_a_model_too_big_for_one_file_keeps_external_data(worker, model, data, tmp_path):
    """The > 1.5 GiB path, on the small model: the size threshold is lowered, everything else runs as is."""
    out = tmp_path / "export"
    report = remote(worker, _export_with_single_file_limit, 0, model=str(model), data=str(data), output=str(out),
                    target="cpu-int8", latency_runs=5)
    assert set(report["files"]) == {"model.onnx", "model.onnx.data", "model.int8.onnx", "model.int8.onnx.data"}
    assert report["onnx"]["saved_as"] == "model + external data"
    assert not report["quantization"]["preprocess"]["optimization"]  # it cannot write > 2 GiB; skipped
    assert report["sizes"]["fp32_bytes"] == sum(report["files"][n]["bytes"] for n in ("model.onnx", "model.onnx.data"))
    assert report["accuracy"]["agreement"] >= 0.99
    assert remote(worker, _inspect, out)["external"]  # checked with its data beside it


# ---------------------------------------------------------------- gates


def test_garbage_calibration_fails_the_gate_and_leaves_no_export(worker, model, garbage_train, tmp_path):
    out = tmp_path / "export"
    with pytest.raises(GateError, match=r"quality gate failed for the INT8 model on the CPU EP: top-1 agreement "
                                        r"with fp32 is .*below min_agreement=99\.00%.*Nothing was exported") as info:
        remote(worker, export, model=str(model), data=str(garbage_train), output=str(out), target="cpu-int8",
               calibration_split="train")
    assert info.value.figures["agreement"] < 0.9
    assert leftovers(out) == []


def test_gates_are_configurable(worker, model, garbage_train, tmp_path):
    report = remote(worker, export, model=str(model), data=str(garbage_train), output=str(tmp_path / "loose"),
                    target="cpu-int8",
                    calibration_split="train", min_agreement=0.0, max_accuracy_drop=100.0, latency_runs=5)
    assert report["accuracy"]["agreement"] < 0.9 and report["gates"]["min_agreement"] == 0.0
    assert report["quantization"]["calibration"]["split"] == "train"


def test_a_failed_reexport_keeps_the_previous_export_byte_identical(worker, cpu, model, garbage_train, tmp_path):
    out = tmp_path / "export"
    shutil.copytree(cpu[0], out)
    before = {p.name: digest(p) for p in out.iterdir()}
    with pytest.raises(GateError):
        remote(worker, export, model=str(model), data=str(garbage_train), output=str(out), target="cpu-int8",
               calibration_split="train")
    assert {p.name: digest(p) for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no staging directory left beside it


def _damage_and_gate(out: Path, data: Path, damaged: Path) -> None:
    """Multiply the hidden activations' scales of a finished INT8 model by 400, then gate it against fp32."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(out / "model.int8.onnx"))
    for init in proto.graph.initializer:
        if init.name in ("relu_scale", "relu_1_scale"):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 400, init.name))
    onnx.save(proto, str(damaged))
    stream = SplitStream(data, "validation", FEATURES, 1)
    fp32, int8 = cpu_session(out / "model.onnx"), cpu_session(damaged)
    ref, labels = collect(stream, lambda x: fp32.run(None, {"input": x})[0])
    bad, _ = collect(stream, lambda x: int8.run(None, {"input": x})[0])
    check_quality("damaged", compare(ref, bad, labels), 0.99, 1.0)


def test_damaged_int8_scales_fail_the_gate(worker, cpu, data, tmp_path):
    """Corrupt the activation scales of a finished INT8 model: the same gate that guards the step refuses it."""
    with pytest.raises(GateError, match=r"quality gate failed for damaged: top-1 agreement .* accuracy drops") as info:
        remote(worker, _damage_and_gate, cpu[0], data, tmp_path / "damaged.onnx")
    assert info.value.figures["agreement"] < 0.9


def _stream_shapes(data: Path) -> tuple[int, list, list]:
    reader = StreamReader(SplitStream(data, "validation", FEATURES, 8, max_batches=5, read_rows=3), "input")
    feeds = list(iter(reader.get_next, None))
    full = SplitStream(data, "validation", FEATURES, 100).batches(pad=False)
    return reader.fed, [f["input"].shape for f in feeds], [x.shape for x, _, _ in full]


def test_calibration_reader_streams_static_batches(worker, data):
    fed, shapes, full = remote(worker, _stream_shapes, data)
    assert fed == 5 and shapes == [(8, 64)] * 5  # 5 of 36 batches, across reads of 3 rows
    assert full == [(100, 64)] * 2  # 290 rows: the partial batch is dropped for calibration


# ---------------------------------------------------------------- bad input, each refused before any output


def _saved(path: Path, blob: object) -> str:
    torch.save(blob, path)
    return str(path)


def _not_torch(t: Path) -> dict:
    (t / "x.pt").write_bytes(b"not a pickle, not a zip")
    return {"model": str(t / "x.pt")}


@pytest.fixture(scope="module")
def datasets(data, tmp_path_factory) -> dict[str, Path]:
    """Real preprocess outputs that do not fit: 4 features; no validation rows; no test rows."""
    folder = tmp_path_factory.mktemp("bad-data")
    rows = ["f0,f1,f2,f3,label"] + [f"{i},{i % 3},{i % 5},{i % 7},{i % 2}" for i in range(60)]
    (folder / "in.csv").write_text("\n".join(rows) + "\n")
    preprocess(input=str(folder / "in.csv"), output=str(folder / "narrow"))
    preprocess(output=str(folder / "no-validation"), val_fraction=0.0, test_fraction=0.0)
    preprocess(output=str(folder / "no-test"), test_fraction=0.0)
    return {"digits": data, **{p.name: p for p in folder.iterdir() if p.is_dir()}}


UNKNOWN_ARCH = {"format": FORMAT, "state_dict": {},
                "metadata": {"architecture": "nowhere.models:net", "input_shape": [1, 64], "classes": ["a", "b"]}}
BAD = [  # (id, overrides (a function of a scratch directory), expected message)
    ("not a torch file", _not_torch, r"cannot be loaded safely"),
    ("a bare state dict", lambda t: {"model": _saved(t / "sd.pt", nn.Linear(64, 10).state_dict())},
     r"is not an xpuflow model"),
    ("unknown architecture", lambda t: {"model": _saved(t / "u.pt", UNKNOWN_ARCH)},
     r"names architecture='nowhere\.models:net', which is neither built in nor allowed"),
    ("allowed architecture that is not installed", lambda t: {"model": _saved(t / "u.pt", UNKNOWN_ARCH),
                                                              "allow_architecture": "nowhere.models:net"},
     r"model='nowhere\.models:net': cannot import it"),
    ("metadata incomplete", lambda t: {"model": _saved(t / "i.pt", {"format": FORMAT, "state_dict": {},
                                                                     "metadata": {}})},
     r"records architecture=a NoneType that is not an import path"),
    ("metadata without input shape", lambda t: {"model": _saved(t / "i.pt", {
        "format": FORMAT, "state_dict": {}, "metadata": {"architecture": "xpuflow.steps.models:mlp"}})},
     r"incomplete metadata \(KeyError: 'input_shape'\)"),
    ("missing model", lambda t: {"model": str(t / "nothing")}, r"no model file at"),
    ("feature count differs", lambda t: {"data": "narrow"},
     r"model expects input shape \[1, 64\] \(64 features\) but data=.* has 4 features"),
    ("validation split empty", lambda t: {"data": "no-validation"},
     r"validation split of data=.* has 0 rows: .*empty calibration set"),
    ("calibration_batches zero", lambda t: {"calibration_batches": 0},
     r"calibration_batches=0 is not valid: a whole number >= 1\. \(calibration_batches=0 is an empty calibration set"),
    ("calibration split empty", lambda t: {"data": "no-test", "calibration_split": "test"},
     r"empty calibration set: the test split has 0 rows"),
    ("unknown target", lambda t: {"target": "qnn_htp"},
     r"target='qnn_htp' is not valid: one of qnn-htp, cpu-int8 \(supported here\); openvino-npu, vitisai, coreml are "
     r"listed but unavailable\. Did you mean 'qnn-htp'\?"),
    ("unavailable target", lambda t: {"target": "openvino-npu"},
     r"target='openvino-npu' is not available here: needs the onnxruntime-openvino package.*Supported here: qnn-htp, "
     r"cpu-int8\."),
    ("activations the target lacks", lambda t: {"activations": "uint16"},
     r"activations='uint16' is not valid for target 'cpu-int8': one of uint8"),
    ("calibration method typo", lambda t: {"calibration_method": "minmx"},
     r"calibration_method='minmx' .*Did you mean 'minmax'\?"),
    ("opset too old", lambda t: {"opset": 13}, r"opset=13 is not valid: a whole number between 18 and 23"),
    ("agreement above 1", lambda t: {"min_agreement": 99}, r"min_agreement=99 is not valid"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_refused_with_a_clear_message(case, worker, model, datasets, tmp_path):
    _, overrides, pattern = case
    kwargs = {"model": str(model), "data": "digits", "output": str(tmp_path / "export"), "target": "cpu-int8",
              **overrides(tmp_path)}
    kwargs["data"] = str(datasets[kwargs["data"]])
    with pytest.raises(StepError, match=pattern):
        remote(worker, export, **kwargs)
    assert leftovers(tmp_path / "export") == []


def test_target_registry_refuses_what_it_cannot_run():
    assert supported() == ["qnn-htp", "cpu-int8"]
    for name, target in TARGETS.items():
        if target.available:
            assert resolve(name) is target and target.adapter
        else:
            assert target.reason and target.npu
            with pytest.raises(StepError, match=rf"target={name!r} is not available here"):
                resolve(name)
    assert TARGETS["openvino-npu"].compute_device == "intel-npu"  # the catalog device validate_on_device asks for


def test_step_is_registered_with_the_cli():
    assert load_step("export") is export and export.compute.kind == "cpu"
    options = {a.dest: a.default for a in build_parser("export")._actions if a.dest != "help"}
    assert options["target"] == "qnn-htp" and options["opset"] == 21 and options["min_agreement"] == 0.99
    assert options["max_accuracy_drop"] == 1.0 and options["activations"] == "uint8" and options["batch_size"] == 1


# ---------------------------------------------------------------- validate_on_device


@pytest.fixture(scope="module")
def fewer_classes(data, tmp_path_factory) -> Path:
    """The digits test rows of classes 0-4 only, preprocessed: the same features, other classes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(data / "test.parquet")
    keep = [i for i, label in enumerate(table.column("label").to_pylist()) if label < 5]
    folder = tmp_path_factory.mktemp("fewer")
    pq.write_table(table.take(pa.array(keep)), folder / "rows.parquet")
    preprocess(input=str(folder / "rows.parquet"), output=str(folder / "data"), test_fraction=0.5)
    return folder / "data"


def test_validate_on_device_refuses_other_classes_and_keeps_its_previous_result(worker, cpu, data, fewer_classes,
                                                                               tmp_path):
    from xpuflow.steps.validate import validate_on_device

    out = tmp_path / "validate"
    result = remote(worker, validate_on_device, export=str(cpu[0]), data=str(data), output=str(out))
    assert result["agreement_with_fp32"] >= 0.99 and result["execution_provider"] == "CPUExecutionProvider"
    before = digest(out / "validation.json")
    with pytest.raises(StepError, match=r"^validate_on_device: the data's classes \(5: 0, 1, 2, 3, 4\) differ from "
                                        r"the model's \(10: 0, 1, .*\): its labels would be scored against the wrong "
                                        r"classes\."):
        remote(worker, validate_on_device, export=str(cpu[0]), data=str(fewer_classes), output=str(out))
    assert digest(out / "validation.json") == before and leftovers(out) == ["validation.json"]
