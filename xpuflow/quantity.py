"""Kubernetes resource quantities, parsed once and compared exactly.

Accepts what the Kubernetes API accepts for CPU and memory (``"500m"``, ``"2"``,
``"16Gi"``, ``"1e9"``, plain ints) and refuses common slips such as
``"16GB"``, ``"2 cores"``, ``""`` or negative values, naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from .errors import ComputeError, invalid

__all__ = ["Quantity", "parse_cpu", "parse_memory"]

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_RE = re.compile(rf"^(?P<num>{_NUMBER})(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")


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


def _parse(field: str, raw: object, *, allowed_suffixes: set[str], example: str, where: str) -> Quantity:
    allowed = f"a positive Kubernetes quantity such as {example}"
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ComputeError(invalid(field, raw, allowed, fix=f"write it as {example}", where=where))
    text = format(raw, "g") if isinstance(raw, float) else str(raw)
    match = _RE.match(text)
    if not match:
        fix = f"write it as {example}"
        if re.match(rf"^{_NUMBER}\s*[KMGTPE]B$", text, re.IGNORECASE):
            fix = f"Kubernetes has no 'B' suffix: use {text.strip()[:-1].rstrip()}i for binary units"
        elif text.startswith("-"):
            fix = "use a positive value"
        raise ComputeError(invalid(field, raw, allowed, fix=fix, where=where))
    suffix = match.group("suffix") or ""
    if suffix and suffix not in allowed_suffixes and not suffix[0] in "eE":
        raise ComputeError(
            invalid(field, raw, f"{allowed}; suffix {suffix!r} does not apply here", fix=f"write it as {example}", where=where)
        )
    try:
        number = Decimal(match.group("num"))
    except InvalidOperation as e:  # pragma: no cover - the regex admits only decimals
        raise ComputeError(invalid(field, raw, allowed, where=where)) from e
    if suffix in _BINARY:
        value = number * _BINARY[suffix]
    elif suffix in _DECIMAL:
        value = number * _DECIMAL[suffix]
    elif suffix == "m":
        value = number / 1000
    elif suffix:
        value = number * (Decimal(10) ** int(suffix[1:]))
    else:
        value = number
    if value <= 0:
        raise ComputeError(invalid(field, raw, allowed, fix="use a value greater than zero", where=where))
    return Quantity(text=text, value=value)


def parse_cpu(field: str, raw: object, *, where: str = "") -> Quantity:
    """CPU cores: ``2``, ``"0.5"``, ``"500m"``."""
    q = _parse(field, raw, allowed_suffixes={"m"}, example="'2', '0.5' or '500m'", where=where)
    if q.value < Decimal("0.001"):
        raise ComputeError(invalid(field, raw, "at least 1m (0.001 cores)", where=where))
    return q


def parse_memory(field: str, raw: object, *, where: str = "") -> Quantity:
    """Bytes: ``"16Gi"``, ``"512Mi"``, ``"1G"``, ``1073741824``."""
    q = _parse(
        field,
        raw,
        allowed_suffixes=set(_BINARY) | set(_DECIMAL),
        example="'512Mi', '16Gi' or '1G'",
        where=where,
    )
    if q.value != q.value.to_integral_value():
        raise ComputeError(invalid(field, raw, "a whole number of bytes", fix="use a binary suffix such as '1536Mi'", where=where))
    return q
