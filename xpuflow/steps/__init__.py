"""The ML steps: plain functions over files and URLs, with no orchestrator import.

Each step also runs from the command line, which is how a KubernetesPodOperator
or a plain Job calls it::

    xpuflow step preprocess --input builtin:digits --output /data/prep
    xpuflow step train --data /data/prep --output /data/model --epochs 10

Options are the function's keyword arguments, with ``_`` written as ``-``.
torch, pyarrow and friends are imported inside the functions, so importing this
package stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
from typing import Any

__all__ = ["STEPS", "step_function", "build_parser", "run"]

STEPS = {
    "preprocess": "xpuflow.steps.preprocess:preprocess",
    "train": "xpuflow.steps.train:train",
    "train_tpu": "xpuflow.steps.train_tpu:train_tpu",
}


def step_function(name: str) -> Any:
    from ..errors import did_you_mean
    from .io import StepError

    if name not in STEPS:
        raise StepError(f"step={name!r} is not valid: one of {', '.join(STEPS)}.{did_you_mean(name, STEPS)}")
    module, _, attr = STEPS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser(name: str, prog: str = "xpuflow step") -> argparse.ArgumentParser:
    """An argument parser generated from the step function's signature and docstring."""
    fn = step_function(name)
    parser = argparse.ArgumentParser(prog=f"{prog} {name}", description=(inspect.getdoc(fn) or "").split("\n")[0])
    for param in inspect.signature(fn).parameters.values():
        flag = "--" + param.name.replace("_", "-")
        default = param.default
        kind = {bool: _bool, int: int, float: float}.get(type(default), str)
        parser.add_argument(flag, dest=param.name, type=kind, default=default,
                            help=f"(default: {default!r})", metavar=type(default).__name__.upper())
    return parser


def run(name: str, argv: list[str]) -> dict[str, Any]:
    args = build_parser(name).parse_args(argv)
    return step_function(name)(**vars(args))
