"""Checkpoint format 3: tensors in one flat buffer, the rest as a JSON line; read back exactly, never unpickled.

What a user's state may hold comes back equal (dtypes, shapes, tuples, integer keys, a module's
``_metadata``); a checkpoint of format 2 (``torch.save`` payload) is another run's, in one line; a
checkpoint whose checksum holds but whose content lies is damaged, and the previous one is used.
(That each writer writes the state as it was at submit: tests/test_checkpoint_writer.py.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from pathlib import Path

import pytest
import torch

from xpuflow.steps.checkpoint import Checkpointer, decode_header
from xpuflow.steps.checkpoint_flat import unpack
from xpuflow.steps.io import StepError
from xpuflow.steps.train import train

MAGIC = b"XPUFLOW-CHECKPOINT\n"


def same(a, b, where="state"):
    assert type(a) is type(b) or isinstance(a, dict) and isinstance(b, dict), (where, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and a != a:
        assert b != b, where
    else:
        assert a == b, where


def test_every_kind_of_state_comes_back_exactly(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.AdamW(net.parameters())
    net(torch.randn(4, 5)).sum().backward()
    opt.step()
    state = {
        "step": 7, "model": net.state_dict(), "optimizer": opt.state_dict(),
        "dtypes": [torch.arange(6, dtype=d) for d in (torch.int8, torch.int64, torch.float16, torch.bfloat16,
                                                      torch.float64, torch.uint8)],
        "mask": torch.tensor([True, False, True]), "scalar": torch.tensor(2.5), "empty": torch.empty(0, 4),
        "transposed": torch.arange(12.0).reshape(3, 4).t(),  # not contiguous
        "numbers": [float("nan"), float("-inf"), 1e-300, 2**70, -3, None, True, "ünï\ncode"],
        "nested": ("a", (1, 2), {1: "one", (2, 3): [4]}), "d": {"t": {"u": 1, "k": 2}},  # keys like the tags
    }
    ckpt = Checkpointer(tmp_path, {"seed": 0})
    ckpt.save(7, state)
    step, back = ckpt.latest()
    assert step == 7
    same(state, back)
    assert back["model"]._metadata == state["model"]._metadata  # BatchNorm's version survives
    back["mask"][0] = False  # a tensor of its own, writable
    fresh = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.BatchNorm1d(3))
    fresh.load_state_dict(back["model"])
    torch.optim.AdamW(fresh.parameters()).load_state_dict(back["optimizer"])


def _write(path: Path, header: dict, payload: bytes) -> None:
    """A checkpoint file as the documented format lays it out, checksum computed as documented."""
    digest = hashlib.sha256(json.dumps([header["step"], header["identity"]], sort_keys=True).encode())
    digest.update(payload)
    header = {**header, "bytes": len(payload), "sha256": digest.hexdigest()}
    path.write_bytes(MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload)


def test_a_format_2_checkpoint_is_another_runs_in_one_line(tmp_path, caplog):
    import io

    buffer = io.BytesIO()
    torch.save({"step": 30, "w": torch.ones(3)}, buffer)  # what format 2 held: a torch.save payload
    old = {"format": "xpuflow.checkpoint/2", "seed": 0}
    _write(tmp_path / "ckpt-00000030.pt", {"format": old["format"], "step": 30, "identity": old}, buffer.getvalue())
    ckpt = Checkpointer(tmp_path, {"seed": 0})
    with pytest.raises(StepError) as refused:
        ckpt.latest(on_mismatch="refuse")
    message = str(refused.value)
    assert "\n" not in message and "checkpoint step 30" in message
    assert "format: 'xpuflow.checkpoint/3' here, 'xpuflow.checkpoint/2' there" in message
    assert ckpt.steps() == [30]  # refused: untouched
    with caplog.at_level(logging.WARNING):
        assert ckpt.latest(on_mismatch="fresh") is None
    [line] = [r.getMessage() for r in caplog.records]
    assert "xpuflow.checkpoint/2' there" in line and "starting fresh at step 0" in line
    assert ckpt.steps() == []


@pytest.mark.parametrize("lie", ["offset past the end", "not a dtype", "a pickle", "no state line"])
def test_a_checkpoint_whose_content_lies_is_damaged_and_the_previous_one_is_used(tmp_path, caplog, lie):
    ckpt = Checkpointer(tmp_path, {"seed": 0})
    ckpt.save(10, {"step": 10, "w": torch.ones(4)})
    identity = {"format": "xpuflow.checkpoint/3", "seed": 0}
    tensors = {"offset past the end": [["float32", [4], 64]], "not a dtype": [["Tensor", [4], 0]],
               "a pickle": [["float32", [4], 0]], "no state line": []}[lie]
    line = json.dumps({"state": {"d": {"step": 20, "w": {"t": 0}}}, "tensors": tensors}).encode() + b"\n"
    payload = {"a pickle": pickle.dumps({"step": 20}), "no state line": b"\x00" * 16}.get(lie, line + b"\x00" * 16)
    _write(tmp_path / "ckpt-00000020.pt", {"format": identity["format"], "step": 20, "identity": identity}, payload)
    with caplog.at_level(logging.WARNING):
        step, state = ckpt.latest()
    assert step == 10 and torch.equal(state["w"], torch.ones(4))
    [warning] = [r.getMessage() for r in caplog.records]
    assert "ckpt-00000020.pt is damaged" in warning and "falling back to the previous one" in warning
    assert "\n" not in warning


def test_a_model_whose_state_a_checkpoint_cannot_hold_is_one_line(data, tmp_path, monkeypatch):
    """A user's module (a package outside xpuflow) keeps a set in its extra state."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "setmodels.py").write_text(
        "import torch.nn as nn\n"
        "class Tagged(nn.Linear):\n"
        "    def get_extra_state(self):\n"
        "        return {'tags': {'a', 'b'}}\n"
        "    def set_extra_state(self, state):\n"
        "        pass\n"
        "def net(input_dim, num_classes):\n"
        "    return nn.Sequential(Tagged(input_dim, num_classes))\n")
    monkeypatch.syspath_prepend(str(package))
    out = tmp_path / "out"
    with pytest.raises(StepError) as failed:
        train(data=str(data), output=str(out), epochs=1, checkpoint_every=2, device="cpu", model="setmodels:net")
    message = str(failed.value)
    assert "\n" not in message and "checkpoint step 2 cannot be written" in message
    assert "a checkpoint cannot hold a set at state['model']['0._extra_state']['tags']" in message
    assert "Fix: make the model's state_dict" in message
    assert not (out / "model.pt").exists()


def test_a_value_a_checkpoint_cannot_hold_is_refused_before_anything_is_written(tmp_path):
    ckpt = Checkpointer(tmp_path, {"seed": 0})
    with pytest.raises(TypeError, match=r"cannot hold a bytes at state\['blob'\]"):
        ckpt.save(1, {"step": 1, "blob": b"raw"})
    assert ckpt.steps() == [] and list(tmp_path.iterdir()) == []


def test_the_same_state_is_written_as_the_same_bytes_whatever_the_buffer_held(tmp_path):
    """The bytes between tensors (alignment padding) are written too: zeros, not what the buffer held before
    (a fresh buffer's uninitialised memory, or an earlier state's tensors when the layout changes)."""
    from xpuflow.steps.checkpoint_flat import Packer

    def state(n: int) -> dict:
        return {"w": torch.arange(n, dtype=torch.float32), "b": torch.arange(7), "k": torch.ones(3, dtype=torch.int8)}

    garbage = torch.empty(1 << 16, dtype=torch.uint8).fill_(0xAB)  # freed: the allocator hands it out again
    del garbage
    reused = Packer()
    reused.pack({"big": torch.full((4096,), -1.0)})  # another layout first: the buffer holds its bytes
    a = reused.pack(state(100))
    b = Packer().pack(state(100))
    assert a.line == b.line and bytes(a.data) == bytes(b.data)
    assert bytes(a.data) == bytes(Packer().pack(state(100)).data)
    ckpt = Checkpointer(tmp_path, {"seed": 0})
    ckpt.save(1, a)
    first = (tmp_path / "ckpt-00000001.pt").read_bytes()
    ckpt.save(1, b)
    assert (tmp_path / "ckpt-00000001.pt").read_bytes() == first
