"""The ML steps: plain functions over files and URLs, each declared with ``@step`` (its Compute).

Each step also runs from the command line, which is how a KubernetesPodOperator
or a plain Job calls it; so does any ``@step`` of yours, by import path::

    xpuflow step preprocess --input builtin:digits --output /data/prep
    xpuflow step train --data /data/prep --output /data/model --epochs 10
    xpuflow step my_project.steps:clean --raw s3://bucket/raw --out s3://bucket/clean

Options are the function's parameters, with ``_`` written as ``-``. torch, pyarrow
and friends are imported inside the functions, so importing this package stays cheap.
"""

from __future__ import annotations

import argparse
import inspect
import os
from typing import Any

from ..dsl.step import Step

__all__ = ["BUILTINS", "builtin_name", "builtin_names", "builtin_steps", "build_parser", "run", "wait"]

# Where xpuflow's own steps live (for `xpuflow step NAME`); each declares itself with @step.
BUILTINS = (
    "xpuflow.steps.preprocess:preprocess",
    "xpuflow.steps.train:train",
    "xpuflow.steps.train_tpu:train_tpu",
    "xpuflow.steps.evaluate:evaluate",
    "xpuflow.steps.export:export",
    "xpuflow.steps.validate:validate_on_device",
    "xpuflow.steps.rag.chunk:chunk",
    "xpuflow.steps.rag.embed:embed",
    "xpuflow.steps.rag.index:index",
    "xpuflow.steps.rag.batch_infer:batch_infer",
)


def builtin_names() -> list[str]:
    return [ref.rpartition(":")[2] for ref in BUILTINS]


def builtin_name(step: Step) -> str | None:
    """The short name of a built-in step (``xpuflow step train``), None for any other step."""
    return step.name if step.ref in BUILTINS else None


def builtin_steps() -> list[Step]:
    from ..dsl.load import load_step

    return [load_step(ref) for ref in BUILTINS]


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _int(text: str) -> int:
    """A whole number as a pipeline parameter is one: ASCII digits, an int64 (int() also reads '٣' and '1_000')."""
    from ..dsl.params import _INT, MAX_INT64

    if not _INT.fullmatch(text) or abs(int(text)) > MAX_INT64:
        raise argparse.ArgumentTypeError(f"expected a whole number (an int64), got {text!r}")
    return int(text)


def _float(text: str) -> float:
    """A finite number (float() also reads 'nan' and 'inf', which no step option means)."""
    import math

    try:
        number = float(text) if text.isascii() else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return number


def build_parser(step: Step | str, prog: str = "xpuflow step") -> argparse.ArgumentParser:
    """An argument parser generated from the step's declaration (inputs, outputs, scalar parameters)."""
    from ..dsl.load import load_step

    step = load_step(step) if isinstance(step, str) else step
    shown = builtin_name(step) or step.ref
    parser = argparse.ArgumentParser(prog=f"{prog} {shown}", description=(inspect.getdoc(step.fn) or "").split("\n")[0])
    defaults = {p.name: p.default for p in inspect.signature(step.fn).parameters.values()}
    for name in (*step.inputs, *step.outputs):
        role = "input: a directory or URL an upstream step wrote" if name in step.inputs else "output directory or URL"
        default = defaults.get(name)
        parser.add_argument("--" + name.replace("_", "-"), dest=name, metavar="DIR",
                            default=default if isinstance(default, str) else None,
                            required=not isinstance(default, str),
                            help=f"{role} (default: {default!r})" if isinstance(default, str) else f"{role} (required)")
    for param in step.params.values():
        kind = {bool: _bool, int: _int, float: _float}.get(param.type, str)
        parser.add_argument(param.flag, dest=param.name, type=kind, default=param.default,
                            help=f"(default: {param.default!r})", metavar=param.type.__name__.upper())
    return parser


COMPLETE_MARKER = "_COMPLETE"


def run(ref: Step | str, argv: list[str]) -> Any:
    """Run a step (a built-in name, ``package.module:function`` or a Step) with CLI ``argv``; Input and Output
    directories may be object-store URLs.

    An input URL must hold a complete output (its ``_COMPLETE`` marker), or be a single file, which
    is passed on as a URL for the step to read (``batch_infer --data s3://bucket/rows.parquet``); an output URL is
    written locally first, uploaded, then marked complete, so a half-uploaded output is
    never taken for a finished one.
    """
    import tempfile

    from ..dsl.load import load_step

    step = load_step(ref) if isinstance(ref, str) else ref
    args = vars(build_parser(step).parse_args(argv))
    from .shards import DOWNLOADED

    uploads: dict[str, str] = {}
    downloaded: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix=f"xpuflow-{step.name}-") as tmp:
        for key in step.inputs:
            if _remote(args[key]):
                from .store import fetch

                copy, source = fetch(args[key], os.path.join(tmp, key))
                args[key], downloaded[copy] = copy, source  # a run key names the URL and version read, not the copy
        for key in step.outputs:
            if _remote(args[key]):
                uploads[key], args[key] = args[key], os.path.join(tmp, "out", key)
        token = DOWNLOADED.set(downloaded)
        try:
            result = step.fn(**args)
        finally:
            DOWNLOADED.reset(token)
        for key, url in uploads.items():
            if args.get("shard"):  # the parts of N processes meet in the store (docs/scale-out.md)
                from .shards_store import publish_part

                publish_part(args[key], url, who=step.name)
            else:
                _upload(args[key], url)
    return result


def wait(urls: list[str], timeout: float = 86400.0, poll: float = 10.0) -> None:
    """Return once every URL holds a finished step output (its ``_COMPLETE`` marker): what a Kubernetes Job's
    init container runs so that a manifest set applied at once still runs in order."""
    import time

    import fsspec

    from .io import StepError

    deadline = time.monotonic() + timeout
    pending = list(urls)
    while pending:
        pending = [u for u in pending if not _exists(fsspec, f"{u.rstrip('/')}/{COMPLETE_MARKER}")]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise StepError(f"{pending[0]}: no {COMPLETE_MARKER} marker after {timeout:g} s, so the upstream step did "
                            "not finish. Fix: look at the upstream Job's logs, then rerun it.")
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))


def _exists(fsspec: Any, url: str) -> bool:
    from .store import _fs  # a URL fsspec cannot open (no s3fs installed, a typo'd scheme) is one line

    fs, path = _fs(url)
    fs.invalidate_cache()
    return bool(fs.exists(path))


def _remote(value: Any) -> bool:
    return isinstance(value, str) and "://" in value and not value.startswith("file://")


def _upload(local: str, url: str) -> None:
    from .store import upload

    upload(local, url)  # a new version under the URL, switched by the _COMPLETE pointer written last
