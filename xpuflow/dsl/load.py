"""Find a step (``package.module:function`` or a built-in name) and a flow (``path/to/file.py[:name]`` or a
built-in example name) for the CLI, DAG files and pods. Every failure is one clear line, never a fallback."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import did_you_mean
from .flow import Flow
from .step import Step, FlowError

__all__ = ["load_step", "load_flow", "load_file", "flows_in", "pick", "example_path", "EXAMPLES_DIR"]

# the example flows: pipelines/<name>.py beside the package (a source checkout) or in the working directory
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "pipelines"
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def load_step(ref: str) -> Step:
    """``package.module:function`` (any importable @step) or the name of a built-in step."""
    from ..steps import BUILTINS, builtin_names

    if ":" not in ref:
        names = builtin_names()
        if ref not in names:
            raise FlowError(f"step={ref!r} is not valid: one of {', '.join(names)}, or package.module:function "
                            f"for your own @step.{did_you_mean(ref, names)}")
        ref = BUILTINS[names.index(ref)]
    module_name, _, attr = ref.partition(":")
    if not _MODULE.fullmatch(module_name):
        raise FlowError(f"step {ref!r}: {module_name!r} is not valid: a module's import path (package.module), not a "
                        "file path. Fix: write package.module:function, with its directory on PYTHONPATH.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise FlowError(f"step {ref!r}: cannot import module {module_name!r} ({e}). Fix: install the package or put "
                        "its directory on PYTHONPATH.") from e
    except Exception as e:  # noqa: BLE001 - the user's module raised while importing: one line, not a traceback
        detail = " ".join(str(e).split())[:300]
        raise FlowError(f"step {ref!r}: module {module_name!r} raised {type(e).__name__} on import: {detail}. Fix: "
                        f"run `python -c 'import {module_name}'` to see the traceback.") from e
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if not isinstance(obj, Step):
        what = "not found" if obj is None else f"a {type(obj).__name__}, not a @step"
        raise FlowError(f"step {ref!r}: {attr!r} in {module_name} is {what}. Fix: decorate the function with "
                        "@xpuflow.step(compute=...).")
    return obj


def example_path(name: str) -> Path | None:
    """``pipelines/<name>.py`` in the working directory or beside the package, if there is one."""
    for folder in (Path.cwd() / "pipelines", EXAMPLES_DIR):
        path = folder / f"{name}.py"
        if path.is_file():
            return path
    return None


def _split(ref: str) -> tuple[str, str | None]:
    """``file.py:name`` -> (file.py, name); a bare name stays as is."""
    head, sep, tail = ref.rpartition(":")
    if sep and head.endswith(".py") and tail.isidentifier():
        return head, tail
    return ref, None


def load_file(path: str | Path, *, what: str = "pipeline") -> ModuleType:
    """Import a Python file as a fresh module; a missing file or an import error is one line."""
    path = Path(path)
    if not path.is_file():
        raise FlowError(f"{what}={str(path)!r}: no such file. Fix: check the path.")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    module_name = f"xpuflow_file_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise FlowError(f"{what}={str(path)!r}: not a Python file. Fix: pass a .py file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    parent = str(path.resolve().parent)
    added = parent not in sys.path
    if added:  # the file may import its siblings, as `python file.py` allows
        sys.path.insert(0, parent)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - any error of the user's file: reported in one line, never a fallback
        del sys.modules[module_name]
        from ..errors import XpuflowError

        detail = str(e).splitlines()[0] if str(e) else ""
        if isinstance(e, XpuflowError):
            raise type(e)(f"{path}: {detail}") from e
        raise FlowError(f"{what}={str(path)!r} raised {type(e).__name__} on import: {detail[:300]}. Fix: run "
                        f"`python {path}` to see the traceback.") from e
    finally:
        if added:
            sys.path.remove(parent)
    return module


def flows_in(module: ModuleType) -> dict[str, Flow]:
    """The flows a module defines (by attribute name)."""
    return {k: v for k, v in vars(module).items() if isinstance(v, Flow)}


def load_flow(ref: str | Flow) -> Flow:
    """``path/to/file.py`` (its one flow), ``path/to/file.py:name``, or an example flow's name."""
    if isinstance(ref, Flow):
        return ref
    path, name = _split(str(ref))
    if not path.endswith(".py"):
        found = example_path(path)
        if found is None:
            examples = sorted(p.stem for p in EXAMPLES_DIR.glob("*.py")) if EXAMPLES_DIR.is_dir() else []
            raise FlowError(f"pipeline={ref!r} is not valid: a path to a .py file defining a @flow, or an example "
                            f"({', '.join(examples) or 'none here'}).{did_you_mean(path, examples)}")
        path = str(found)
    return pick(flows_in(load_file(path)), path, name)


def pick(flows: dict[str, Flow], path: str, name: str | None) -> Flow:
    """The flow ``name`` of a file, or its only flow."""
    if name is not None:
        if name not in flows:
            raise FlowError(f"{path}: no flow named {name!r}; flows: {', '.join(flows) or 'none'}."
                            f"{did_you_mean(name, flows)}")
        return flows[name]
    if not flows:
        raise FlowError(f"{path} defines no @flow. Fix: decorate a function with @xpuflow.flow, or for a KFP "
                        "pipeline file use `xpuflow compile --backend kfp`.")
    if len(flows) > 1:
        raise FlowError(f"{path} defines {len(flows)} flows ({', '.join(flows)}). Fix: pick one, e.g. "
                        f"{path}:{next(iter(flows))}.")
    return next(iter(flows.values()))
