"""Kubernetes resource quantities, parsed once and compared exactly.

Accepts what the Kubernetes API accepts for CPU and memory (``"500m"``, ``"2"``,
``"16Gi"``, ``"1e9"``, plain ints) and refuses common slips such as
``"16GB"``, ``"2 cores"``, ``""`` or negative values, naming the field.

Bounded like the API server: memory at most 2^63-1 bytes, CPU at most 2^63-1
millicores and in whole millicores (Kubernetes rounds finer values up). Parsing
takes bounded time and memory whatever the input (at most 64 characters, an
exponent of at most 100; checked before any arithmetic).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, Context, Decimal, localcontext

from .errors import ComputeError, invalid

__all__ = ["Quantity", "parse_cpu", "parse_memory", "MAX_INT32", "MAX_INT64"]

MAX_INT64 = 2**63 - 1  # Kubernetes: no quantity above 2^63-1; int64 fields (activeDeadlineSeconds, ...)
MAX_INT32 = 2**31 - 1  # Kubernetes: UIDs and GIDs, int32 fields
MAX_TEXT = 64  # characters of a quantity as written ("9223372036854775807" is 19)
_MAX_EXPONENT = 100  # 1e101 exceeds every bound; a larger exponent is refused before any arithmetic
_EXACT = Context(prec=MAX_TEXT + 2 * _MAX_EXPONENT)  # every product below is exact under this precision

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
# ASCII digits only, and the whole text (``$`` would let a trailing newline through to the manifest)
_RE = re.compile(rf"(?P<num>{_NUMBER})(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?", re.ASCII)


@dataclass(frozen=True, order=False)
class Quantity:
    """A validated quantity: ``text`` as written for Kubernetes, ``value`` in base units."""

    text: str
    value: Decimal

    def __str__(self) -> str:
        return self.text

    def __lt__(self, other: Quantity) -> bool:
        return self.value < other.value

    def __le__(self, other: Quantity) -> bool:
        return self.value <= other.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Quantity) and self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)

    @property
    def gib(self) -> float:
        return float(self.value) / 2**30


def _float_text(raw: float) -> str:
    """``16.0`` -> ``"16"``; a float that the short form would round (``123456789.0``) keeps all its digits."""
    short = format(raw, "g")
    return short if float(short) == raw else repr(raw)


def _parse(field: str, raw: object, *, allowed_suffixes: set[str], example: str, where: str, high: Decimal,
           high_text: str) -> Quantity:
    """Parse in bounded time and memory: short text, small exponents, exact arithmetic, ``0 < value <= high``."""
    allowed = f"a positive Kubernetes quantity such as {example}"
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ComputeError(invalid(field, raw, allowed, fix=f"write it as {example}", where=where))
    too_big, lower = f"at most {high_text}", "lower it to what one node offers"
    if isinstance(raw, int) and raw.bit_length() > 128:
        raise ComputeError(invalid(field, raw, too_big, fix=lower, where=where))
    text = _float_text(raw) if isinstance(raw, float) else str(raw)
    if len(text) > MAX_TEXT:
        raise ComputeError(invalid(field, raw, f"{allowed}, at most {MAX_TEXT} characters", where=where,
                                   fix=f"write it as {example}"))
    match = _RE.fullmatch(text)
    if not match:
        fix = f"write it as {example}"
        if re.match(rf"^{_NUMBER}\s*[KMGTPE]B$", text, re.IGNORECASE):
            fix = f"Kubernetes has no 'B' suffix: use {text.strip()[:-1].rstrip()}i for binary units"
        elif text.startswith("-"):
            fix = "use a positive value"
        raise ComputeError(invalid(field, raw, allowed, fix=fix, where=where))
    suffix = match.group("suffix") or ""
    exponent_form = bool(suffix) and suffix not in _BINARY and suffix not in _DECIMAL and suffix != "m"  # 1e9, 5E-3
    if suffix and suffix not in allowed_suffixes and not exponent_form:
        raise ComputeError(
            invalid(field, raw, f"{allowed}; suffix {suffix!r} does not apply here", fix=f"write it as {example}", where=where)
        )
    number = Decimal(match.group("num"))  # the regex admits only plain decimals of at most MAX_TEXT digits
    if exponent_form:
        exponent = int(suffix[1:])  # at most MAX_TEXT digits: cheap
        if number and exponent > _MAX_EXPONENT:
            raise ComputeError(invalid(field, raw, too_big, fix=lower, where=where))
        # clamped: below 1e-100 nothing valid remains (too small either way), and 0e999 is 0
        scale = Decimal(10) ** min(max(exponent, -_MAX_EXPONENT), _MAX_EXPONENT)
    else:
        scale = Decimal(_BINARY.get(suffix) or _DECIMAL.get(suffix) or 1) / (1000 if suffix == "m" else 1)
    with localcontext(_EXACT):
        value = number * scale
    if value <= 0:
        raise ComputeError(invalid(field, raw, allowed, fix="use a value greater than zero", where=where))
    if value > high:
        raise ComputeError(invalid(field, raw, too_big, fix=lower, where=where))
    return Quantity(text=text, value=value)


def parse_cpu(field: str, raw: object, *, where: str = "") -> Quantity:
    """CPU cores: ``2``, ``"0.5"``, ``"500m"``; from 1m to 2^63-1 millicores, in whole millicores."""
    q = _parse(field, raw, allowed_suffixes={"m"}, example="'2', '0.5' or '500m'", where=where,
               high=Decimal(MAX_INT64) / 1000, high_text=f"{MAX_INT64}m (2^63-1 millicores)")
    if q.value < Decimal("0.001"):
        raise ComputeError(invalid(field, raw, "at least 1m (0.001 cores)", where=where))
    with localcontext(_EXACT):
        millis = q.value * 1000
    if millis != millis.to_integral_value():
        raise ComputeError(invalid(field, raw, "whole millicores (Kubernetes rounds finer values up)", where=where,
                                   fix=f"write it as '{millis.to_integral_value(rounding=ROUND_CEILING)}m'"))
    return q


def parse_memory(field: str, raw: object, *, where: str = "") -> Quantity:
    """Bytes: ``"16Gi"``, ``"512Mi"``, ``"1G"``, ``1073741824``; a whole number of bytes up to 2^63-1."""
    q = _parse(
        field,
        raw,
        allowed_suffixes=set(_BINARY) | set(_DECIMAL),
        example="'512Mi', '16Gi' or '1G'",
        where=where,
        high=Decimal(MAX_INT64),
        high_text=f"{MAX_INT64} bytes (2^63-1, just under 8Ei)",
    )
    if q.value != q.value.to_integral_value():
        raise ComputeError(invalid(field, raw, "a whole number of bytes", fix="use a binary suffix such as '1536Mi'", where=where))
    return q
