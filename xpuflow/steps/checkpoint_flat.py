"""The payload of a checkpoint (``xpuflow.checkpoint/3``): one JSON line, then the tensors' bytes.

:class:`Packer` copies every tensor of a state into ONE CPU buffer (each at a 64-byte
aligned offset) and describes the rest of the state as a JSON line: containers and
numbers as they are, each tensor as a reference to its dtype, shape and offset. The
buffer is allocated once and reused from one checkpoint to the next (no fresh pages
to fault in), so it may be refilled only once the previous write has finished
(:class:`~xpuflow.steps.checkpoint_async.BackgroundSaver` keeps one write in flight).
Writing a packed state is hashing and writing two byte strings: work that releases
the GIL, so a writer thread hardly competes with a Python-bound training loop
(``torch.save`` pickled every object while holding it).

Reading parses the JSON and builds each tensor from the bytes (``torch.frombuffer``,
cloned): nothing in a checkpoint file is ever executed or unpickled.

The JSON encoding keeps what ``load_state_dict`` and ``random.setstate`` need: tuples
(``{"u": [...]}``), dicts with other than string keys (``{"k": [[key, value], ...]}``,
an optimizer's parameter indices), a module state dict's ``_metadata``; every dict is
tagged (``{"d": {...}}``) so a state's own key never reads as a tag.
"""

from __future__ import annotations

import functools
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Packed", "Packer", "pack", "unpack"]

ALIGN = 64
_SCALARS = (str, int, float, bool, type(None))
_EXACT = frozenset(_SCALARS)
_STR = {str}
_PLAIN = ((int, int.__int__), (float, float.__float__), (str, str.__str__))  # bool and None have no subclasses


@dataclass
class Packed:
    """A state ready to write: ``state`` (the encoded tree), ``table`` (the tensors' layout, JSON) and ``data``.

    The JSON line is built when first asked for (:attr:`line`), by the writer: plain data, so the
    training thread hands it over without encoding it.
    """

    state: Any
    table: bytes
    data: memoryview

    @functools.cached_property
    def line(self) -> bytes:
        """``{"state":...,"tensors":...}`` and a newline: what precedes the tensors' bytes."""
        return b'{"state":%s,"tensors":%s}\n' % (json.dumps(self.state, separators=(",", ":")).encode(), self.table)

    @property
    def nbytes(self) -> int:
        return len(self.line) + len(self.data)


class Packer:
    """Packs states into one reused buffer, grown when a state needs more.

    ``allocate(nbytes, pin)`` returns the buffer (a uint8 CPU tensor); the default allocates process
    memory, pinned when the state has CUDA tensors. A writer in another process passes one that
    maps memory both processes share (:mod:`~xpuflow.steps.checkpoint_writer`).
    """

    def __init__(self, allocate: Callable[[int, bool], Any] | None = None) -> None:
        self._allocate = allocate or _allocate
        self._buffer: Any = None  # a uint8 CPU tensor
        self._layout: list[tuple[Any, Any, bool]] = []  # (dtype, shape, on the CPU) of each tensor of the last state
        self._on_cpu = True  # all of them on the CPU
        self._views: list[Any] = []  # where each of those tensors goes in the buffer
        self._table = b"[]"  # their [dtype, shape, offset], JSON
        self._data = memoryview(b"")  # the buffer's bytes in use

    def pack(self, state: Any) -> Packed:
        """Copy ``state``'s tensors into the buffer and describe the rest; the caller's tensors may change at once."""
        import torch

        tensors: list[Any] = []
        try:
            tree = _encode(state, tensors, torch.Tensor)
        except TypeError as e:
            where = _where(state, lambda value: not isinstance(value, (dict, list, tuple, *_SCALARS, torch.Tensor)))
            raise TypeError(f"{e} at {where}; a checkpoint holds tensors, numbers, strings, None, lists, tuples and "
                            "dicts") from None
        except RecursionError:  # a container that holds itself, or hundreds of levels: no reader could rebuild it
            raise TypeError("it is nested too deeply (a container holding itself, or hundreds of levels); a checkpoint "
                            "holds a tree of tensors, numbers, strings, None, lists, tuples and dicts") from None
        try:
            self._copy(tensors)
        except (RuntimeError, NotImplementedError):  # looked into only then: a good state pays for no check
            bad = next((t for t in tensors if t.layout != torch.strided or t.is_quantized or t.is_meta), None)
            if bad is None:
                raise
            kind = ("quantized" if bad.is_quantized else "meta" if bad.is_meta
                    else str(bad.layout).removeprefix("torch."))
            raise TypeError(f"a checkpoint cannot hold a {kind} tensor, at {_where(state, lambda value: value is bad)}; "
                            "it holds dense tensors with their data (to_dense(), dequantize())") from None
        return Packed(tree, self._table, self._data)

    def _copy(self, tensors: list[Any]) -> None:
        import torch

        layout = [(t.dtype, t.shape, t.is_cpu) for t in tensors]
        if layout != self._layout:
            self._plan(layout, pin=any(t.is_cuda for t in tensors))
        with torch.no_grad():
            if self._on_cpu:
                if tensors:
                    torch._foreach_copy_(self._views, tensors)  # one call for all: a copy_ each costs ~4 us
            else:  # from a device (CUDA into the pinned buffer, XLA): tensor by tensor
                for view, tensor in zip(self._views, tensors):
                    view.copy_(tensor)

    def _plan(self, layout: list[tuple[Any, Any, bool]], pin: bool) -> None:
        offsets, end = [], 0
        for dtype, shape, _ in layout:
            offsets.append(end)
            size = _numel(shape) * dtype.itemsize
            end += -(-size // ALIGN) * ALIGN
        if self._buffer is None or self._buffer.numel() < end:
            self._views, self._data = [], memoryview(b"")  # no view of the old buffer outlives it
            self._buffer = self._allocate(max(end, ALIGN), pin)
        self._buffer.zero_()  # the padding between tensors is written too: zeros, never what the memory held before
        self._views = [self._buffer[o:o + _numel(s) * d.itemsize].view(d).view(s)
                       for o, (d, s, _) in zip(offsets, layout)]
        self._table = json.dumps([[str(d).removeprefix("torch."), list(s), o] for o, (d, s, _) in zip(offsets, layout)],
                                 separators=(",", ":")).encode()
        self._layout, self._data = layout, memoryview(self._buffer.numpy())[:end]
        self._on_cpu = all(cpu for *_, cpu in layout)


def _allocate(nbytes: int, pin: bool) -> Any:
    import torch

    return torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin and torch.cuda.is_available())


def pack(state: Any) -> Packed:
    """``state`` packed into a buffer of its own (a synchronous save)."""
    return Packer().pack(state)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _encode(obj: Any, tensors: list[Any], tensor: type) -> Any:
    if type(obj) in _EXACT:
        return obj
    if isinstance(obj, _SCALARS):  # a subclass (numpy.float64, an IntEnum): its plain value, as JSON writes it
        return next(plain(obj) for kind, plain in _PLAIN if isinstance(obj, kind))
    if isinstance(obj, tensor):
        tensors.append(obj)
        return {"t": len(tensors) - 1}
    if isinstance(obj, dict):
        if set(map(type, obj)) <= _STR:  # every key a str (checked in C: most dicts of a state)
            out: dict[str, Any] = {"d": {k: _encode(v, tensors, tensor) for k, v in obj.items()}}
        else:
            out = {"k": [[_encode(k, tensors, tensor), _encode(v, tensors, tensor)] for k, v in obj.items()]}
        meta = getattr(obj, "_metadata", None)
        if meta is not None:  # a module's state_dict: versions its load_state_dict reads
            out["m"] = _encode(meta, tensors, tensor)
        return out
    if isinstance(obj, list):
        return [_encode(v, tensors, tensor) for v in obj]
    if isinstance(obj, tuple):
        return {"u": [_encode(v, tensors, tensor) for v in obj]}
    raise TypeError(f"a checkpoint cannot hold a {type(obj).__name__}")


def _where(obj: Any, wrong: Callable[[Any], bool], path: str = "state") -> str:
    """Where in ``obj`` the first value ``wrong`` picks lies (keys looked at too): ``state['model']['x']``."""
    if wrong(obj):
        return path
    items: Any = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        if found := _where(key, wrong, f"{path} (a key)") or _where(value, wrong, f"{path}[{key!r}]"):
            return found
    return ""


def unpack(payload: memoryview | bytes, map_location: Any = "cpu") -> Any:
    """The state of a payload; ``ValueError`` (or ``KeyError``/``TypeError``) when it is not one."""
    import torch

    payload = memoryview(payload)
    end = _newline(payload)
    if end < 0:
        raise ValueError("no state line")
    head = json.loads(bytes(payload[:end]))
    data = payload[end + 1:]
    tensors = []
    for name, shape, offset in head["tensors"]:
        dtype = getattr(torch, name, None)
        if not isinstance(dtype, torch.dtype) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"not a tensor: {name} {shape}")
        count = _numel(tuple(shape))
        size = count * dtype.itemsize
        if not isinstance(offset, int) or offset < 0 or offset + size > len(data):
            raise ValueError("a tensor's bytes lie outside the payload")
        raw = bytearray(data[offset:offset + size])
        tensor = torch.frombuffer(raw, dtype=dtype, count=count) if count else torch.empty(0, dtype=dtype)
        tensor = tensor.reshape(shape)
        tensors.append(tensor if map_location in (None, "cpu") else tensor.to(map_location))
    return _decode(head["state"], tensors)


def _newline(payload: memoryview) -> int:
    """Where the state line ends (searched in growing pieces: the tensors' bytes need no copy)."""
    size = 1 << 12
    while True:
        at = bytes(payload[:size]).find(b"\n")
        if at >= 0 or size >= len(payload):
            return at
        size *= 4


def _decode(obj: Any, tensors: list[Any]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "t" in obj:
        return tensors[obj["t"]]
    if "u" in obj:
        return tuple(_decode(v, tensors) for v in obj["u"])
    if "d" in obj:
        items: Any = ((k, _decode(v, tensors)) for k, v in obj["d"].items())
    else:
        items = ((_decode(k, tensors), _decode(v, tensors)) for k, v in obj["k"])
    if "m" not in obj:
        return dict(items)
    out = OrderedDict(items)
    out._metadata = _decode(obj["m"], tensors)  # type: ignore[attr-defined]
    return out
