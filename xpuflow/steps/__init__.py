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
import os
from typing import Any

__all__ = ["STEPS", "step_function", "build_parser", "run"]

STEPS = {
    "preprocess": "xpuflow.steps.preprocess:preprocess",
    "train": "xpuflow.steps.train:train",
    "train_tpu": "xpuflow.steps.train_tpu:train_tpu",
    "evaluate": "xpuflow.steps.evaluate:evaluate",
    "export": "xpuflow.steps.export:export",
    "validate_on_device": "xpuflow.steps.validate:validate_on_device",
    "chunk": "xpuflow.steps.rag.chunk:chunk",
    "embed": "xpuflow.steps.rag.embed:embed",
    "index": "xpuflow.steps.rag.index:index",
    "batch_infer": "xpuflow.steps.rag.batch_infer:batch_infer",
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


# Directory-valued options: an object-store URL (s3://, gs://, ...) is staged through a local directory.
DIRECTORY_INPUTS = ("data", "model")
COMPLETE_MARKER = "_COMPLETE"


def run(name: str, argv: list[str]) -> dict[str, Any]:
    """Run step ``name`` with CLI ``argv``; directory inputs/outputs may be object-store URLs.

    An input URL must hold a complete output (its ``_COMPLETE`` marker), or be a single file, which
    is passed on as a URL for the step to read (``batch_infer --data s3://bucket/rows.parquet``); an output URL is
    written locally first, uploaded, then marked complete, so a half-uploaded output is
    never taken for a finished one.
    """
    import tempfile

    args = vars(build_parser(name).parse_args(argv))
    with tempfile.TemporaryDirectory(prefix=f"xpuflow-{name}-") as tmp:
        for key in DIRECTORY_INPUTS:
            if key in args and _remote(args[key]):
                args[key] = _download(args[key], os.path.join(tmp, key))
        upload_to = args.get("output") if _remote(args.get("output")) else None
        if upload_to:
            args["output"] = os.path.join(tmp, "output")
        result = step_function(name)(**args)
        if upload_to:
            _upload(args["output"], upload_to)
    return result


def _remote(value: Any) -> bool:
    return isinstance(value, str) and "://" in value and not value.startswith("file://")


def _download(url: str, local: str) -> str:
    import fsspec

    from .io import StepError

    fs, root = fsspec.core.url_to_fs(url)
    if fs.isfile(root):  # a single file (a Parquet data set): the step reads it through fsspec itself
        return url
    if not fs.exists(f"{root}/{COMPLETE_MARKER}"):
        raise StepError(f"{url}: no {COMPLETE_MARKER} marker, so not a finished step output (a failed or running "
                        "upstream step). Fix: rerun the upstream step.")
    fs.get(f"{root}/", local + "/", recursive=True)
    return local


def _upload(local: str, url: str) -> None:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(root, exist_ok=True)
    fs.put(local + "/", f"{root}/", recursive=True)
    fs.pipe_file(f"{root}/{COMPLETE_MARKER}", b"")  # last: the output is complete
