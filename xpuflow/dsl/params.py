"""A flow's parameter values, checked before any task runs.

    values = parse_params(flow, ["epochs=3", "lr=0.01"])   # ``xpuflow run --param``: text, typed per parameter
    values = check_params(flow, values)                     # names, types, then each task's step check

Each value is read as its flow parameter's type (int, float, bool, str, as the flow
function declares it) and bounded as a pipeline parameter is (an int64, a finite float).
Then every task whose step declares ``@step(check=...)`` has that check called with the
scalar values it would run with, so ``--param epochs=-1`` is refused before the first
step runs, in the step's own words (an XpuflowError or ValueError it raises becomes one line).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import XpuflowError, did_you_mean, invalid, shown
from ..quantity import MAX_INT64  # a KFP NUMBER_INTEGER is an int64
from .flow import Flow, FlowParam, Task
from .step import FlowError, Param, in_bounds

__all__ = ["parse_params", "check_params", "task_params"]

_INT = re.compile(r"[+-]?[0-9]{1,19}")
_BOOL = {"true": True, "false": False}


def parse_params(flow: Flow, pairs: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` texts, each parsed as the type of the flow parameter it names."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise FlowError(f"--param {shown(pair)} is not valid: write KEY=VALUE, e.g. --param epochs=3.")
        _known(flow, key)
        values[key] = _parse(flow, flow.params[key], text)
    return values


def check_params(flow: Flow, params: Mapping[str, Any]) -> dict[str, Any]:
    """The flow's parameter values (its defaults updated with ``params``), checked: names, types, step checks."""
    for key, value in params.items():
        _known(flow, key)
        _check_type(flow, flow.params[key], value)
    values = {**{k: p.default for k, p in flow.params.items()}, **params}
    for task in flow.tasks:
        check = task.step.check
        if check is None:
            continue
        try:
            check(**task_params(task, values))
        except (XpuflowError, ValueError) as e:  # a user's check may raise ValueError
            given = sorted(k for k, v in task.args.items() if isinstance(v, FlowParam) and v.name in params)
            via = f" (from parameter {', '.join(given)})" if given else ""
            raise FlowError(f"flow {flow.name!r}, task {task.name!r}{via}: {e}") from None
    return values


def task_params(task: Task, values: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar parameters ``task``'s step runs with: its defaults, the task's constants and flow values."""
    out = {name: p.default for name, p in task.step.params.items()}
    for key, value in task.args.items():
        if key in task.step.params:
            out[key] = values[value.name] if isinstance(value, FlowParam) else value
    return out


def _known(flow: Flow, key: str) -> None:
    if key not in flow.params:
        raise FlowError(f"flow {flow.name!r}: parameter {shown(key)} is not valid: one of "
                        f"{', '.join(flow.params) or '(none)'}.{did_you_mean(key, flow.params)}")


def _what(p: Param) -> str:
    return {bool: "true or false", int: "a whole number (an int64)", float: "a finite number", str: "text"}[p.type]


def _refuse(flow: Flow, p: Param, value: object) -> FlowError:
    example = str(p.default).lower() if p.type is bool else p.default
    return FlowError(invalid(f"parameter {p.name}", value, f"{_what(p)}, as parameter {p.name} of flow {flow.name!r} "
                             f"is declared (default {p.default!r})", fix=f"e.g. --param {p.name}={example}"))


def _parse(flow: Flow, p: Param, text: str) -> Any:
    if p.type is str:
        return text
    if not text.isascii():  # int() and float() read other scripts' digits; a pipeline parameter does not
        raise _refuse(flow, p, text)
    if p.type is bool:
        if text.lower() not in _BOOL:
            raise _refuse(flow, p, text)
        return _BOOL[text.lower()]
    if p.type is int:
        if not _INT.fullmatch(text) or abs(int(text)) > MAX_INT64:
            raise _refuse(flow, p, text)
        return int(text)
    try:
        number = float(text)
    except ValueError:
        raise _refuse(flow, p, text) from None
    if not math.isfinite(number):
        raise _refuse(flow, p, text)
    return number


def _check_type(flow: Flow, p: Param, value: Any) -> None:
    """A value given in Python (``Flow.run(**params)``, or parsed): of the parameter's type, bounded."""
    if p.type is bool:
        ok = isinstance(value, bool)
    elif p.type in (int, float):
        kinds = int if p.type is int else (int, float)
        ok = isinstance(value, kinds) and not isinstance(value, bool) and in_bounds(value)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise _refuse(flow, p, value)
