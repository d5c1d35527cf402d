"""numpy views of Arrow arrays, and Arrow arrays over numpy buffers, without pyarrow's pandas shim.

``Array.to_numpy``, ``pyarrow.array(ndarray)`` and every Python scalar handed to a compute function
ask pyarrow's pandas shim whether the value is a pandas object, and the first question imports
pandas: ~0.25 s of CPU, holding the GIL, inside a step that never uses pandas (a fifth of
``preprocess`` on a 200 MB CSV). These helpers go through the buffers instead: no copy, no pandas.
Fixed-width numeric arrays only.
"""

from __future__ import annotations

from typing import Any

__all__ = ["values", "valid", "finite", "array"]

_NUMERIC = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64")


def values(arr: Any) -> Any:
    """The values of a numeric Arrow array as a read-only numpy view (the slots of nulls hold anything)."""
    import numpy as np

    dtype = np.dtype(_numpy_name(arr.type))
    if not len(arr):
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


def valid(arr: Any) -> Any:
    """Where an Arrow array holds a value (not null), as a numpy bool array; None when it has no nulls."""
    import numpy as np

    if not arr.null_count:
        return None
    bits = np.frombuffer(arr.buffers()[0], dtype=np.uint8)
    return np.unpackbits(bits, count=arr.offset + len(arr), bitorder="little")[arr.offset:].view(bool)


def finite(arr: Any) -> Any:
    """The finite values of a numeric Arrow array (nulls, NaN and infinities left out), as a new numpy array."""
    import numpy as np

    x, ok = values(arr), valid(arr)
    keep = np.isfinite(x)
    return x[keep if ok is None else keep & ok]


def array(data: Any) -> Any:
    """An Arrow array over a 1-D numpy array's buffer (no copy when it is contiguous; no nulls)."""
    import numpy as np
    import pyarrow as pa

    data = np.ascontiguousarray(data)
    if data.dtype.name not in _NUMERIC:
        raise TypeError(f"not a fixed-width numeric array: {data.dtype}")
    return pa.Array.from_buffers(getattr(pa, data.dtype.name)(), len(data), [None, pa.py_buffer(data)])


def _numpy_name(arrow_type: Any) -> str:
    name = {"float": "float32", "double": "float64"}.get(str(arrow_type), str(arrow_type))
    if name not in _NUMERIC:
        raise TypeError(f"not a fixed-width numeric Arrow type: {arrow_type}")
    return name
