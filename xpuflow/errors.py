"""Errors raised by xpuflow.

Every user-facing error is an :class:`XpuflowError`. Bad values are also
``ValueError`` so that ``except ValueError`` keeps working for callers that
do not know about xpuflow. Messages follow one shape, built by :func:`invalid`:

    <where>: <field>=<value!r> is not valid: <what is allowed>. Did you mean 'x'? Fix: <how>.
"""

from __future__ import annotations

import operator
import difflib
import re
from collections.abc import Iterable

__all__ = [
    "XpuflowError",
    "ComputeError",
    "ClusterFileError",
    "PlacementError",
    "RenderError",
    "ArgumentError",
    "PipelineFileError",
    "invalid",
    "did_you_mean",
    "shown",
    "as_whole",
    "whole_number",
]


class XpuflowError(Exception):
    """Base class of every error xpuflow raises on purpose. A URL's credentials in the message are masked here, so
    they reach no log (an Airflow or KFP task logs the exception itself, not the CLI's one line)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redacted(a) if isinstance(a, str) else a for a in args))


class ComputeError(XpuflowError, ValueError):
    """A ``Compute`` declaration holds a value that is not allowed."""


class ClusterFileError(XpuflowError, ValueError):
    """A cluster profile (YAML) is malformed; the message points at the YAML path."""


class PlacementError(XpuflowError):
    """The cluster has no node pool that can run the requested compute (a fit failure, not a bad ``Compute``)."""


class RenderError(XpuflowError):
    """A backend cannot express a setting of the placement; refused before rendering."""


class ArgumentError(RenderError, ValueError):
    """A renderer got a bad value that is not part of a ``Compute``: a manifest name, a pod count, a TTL."""


class PipelineFileError(XpuflowError, ValueError):
    """A pipeline, DAG or steps file given to ``xpuflow lint | plan`` cannot be read as one."""


def did_you_mean(value: object, choices: Iterable[str]) -> str:
    """Return " Did you mean 'x'?" for a near miss among ``choices``, else ""."""
    if not isinstance(value, str):
        return ""
    pool = list(choices)
    lowered = {c.lower(): c for c in pool}
    key = value.lower()
    # A name that others extend is ambiguous (a100 -> a100-40gb / a100-80gb; v5 -> v5e / v5p):
    # offer every extension rather than a shorter, different device (a100 is not a10).
    extensions = [c for low, c in lowered.items() if low.startswith(key) and low != key]
    if extensions:
        return " Did you mean " + " or ".join(repr(c) for c in extensions[:4]) + "?"
    matches = difflib.get_close_matches(key, list(lowered), n=1, cutoff=0.6)
    if not matches:
        return ""
    return f" Did you mean {lowered[matches[0]]!r}?"


def invalid(
    field: str,
    value: object,
    allowed: str,
    *,
    fix: str = "",
    where: str = "",
    choices: Iterable[str] = (),
) -> str:
    """Format the one message shape every xpuflow validation error uses."""
    head = f"{where}: " if where else ""
    hint = did_you_mean(value, choices)
    tail = f" Fix: {fix}" if fix else ""
    if tail and not tail.endswith("."):
        tail += "."
    return f"{head}{field}={shown(value)} is not valid: {allowed}.{hint}{tail}"


_SHOWN = 80  # characters of a bad value shown in a message


# a URL's user:password@, unless it is the documentation's own placeholder (a Fix's example URL stays readable)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)(?!user:password@)[^/?#@\s'\"]+@")


def redacted(text: str) -> str:
    """``text`` with the credentials of any URL in it (``scheme://user:password@host``) replaced by ``***``."""
    return _USERINFO.sub(r"\1***@", text)


def shown(value: object) -> str:
    """``repr(value)``, cut to a readable length: a message stays one short line whatever the input; a URL's
    credentials are masked."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * _SHOWN:
        return f"<an integer of {value.bit_length()} bits>"  # repr() of a huge int is slow, or refused
    text = redacted(repr(value))
    if len(text) > _SHOWN:
        return f"{text[:_SHOWN - 20]}... ({len(text)} characters)"
    return text


def as_whole(value: object) -> int | None:
    """``value`` as an ``int`` when it is a whole number (an int or a numpy integer, not a bool); else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:  # 1.0, "3", None
        return None


def whole_number(where: str, name: str, value: object, *, low: int, high: int | None = None, allowed: str,
                 fix: str = "") -> int:
    """``value`` as an ``int`` when it is a whole number (:func:`as_whole`) from ``low`` to ``high``; else a
    one-line :class:`ComputeError`."""
    number = as_whole(value)
    if number is None or number < low or (high is not None and number > high):
        raise ComputeError(invalid(name, value, allowed, fix=fix, where=where))
    return number
