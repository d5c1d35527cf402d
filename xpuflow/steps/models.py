"""Models for the training steps, and the model file format they share.

The default model is a small MLP for tabular features (the digits data set).
A user model is an import path ``"package.module:factory"`` to a function
``factory(input_dim: int, num_classes: int, **kwargs) -> torch.nn.Module``.

Model file (``model.pt``): ``{"state_dict": ..., "metadata": {...}}`` where the
metadata holds only plain data (architecture import path and kwargs, input
shape, classes, normalisation), so it loads with ``torch.load(weights_only=True)``
in the GPU, TPU and export steps alike.

A model file cannot choose code: the architecture its metadata names is imported
only when it is built in (:data:`BUILTIN_ARCHITECTURES`) or allowed by the user who
runs the step (``--allow-architecture package.module:factory``, or the
``XPUFLOW_ALLOWED_ARCHITECTURES`` environment variable, comma-separated). Anything
else is refused before any import. The ``train`` step's own ``--model`` is the
user's choice, so it needs no allowing.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any

from .io import StepError

__all__ = ["DEFAULT_ARCH", "BUILTIN_ARCHITECTURES", "ALLOW_ENV", "mlp", "build_model", "save_model", "load_model",
           "check_architecture"]

DEFAULT_ARCH = "xpuflow.steps.models:mlp"
BUILTIN_ARCHITECTURES = (DEFAULT_ARCH,)
ALLOW_ENV = "XPUFLOW_ALLOWED_ARCHITECTURES"
FORMAT = "xpuflow.model/1"
_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def mlp(input_dim: int, num_classes: int, hidden: int = 128, dropout: float = 0.1) -> Any:
    """Two hidden layers with ReLU and dropout."""
    from torch import nn

    return nn.Sequential(
        nn.Linear(input_dim, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


def _factory(arch: str) -> Any:
    module_name, _, attr = arch.partition(":")
    if not module_name or not attr:
        raise StepError(f"model={arch!r} is not valid: an import path 'package.module:factory'. "
                        f"Fix: e.g. {DEFAULT_ARCH!r}.")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise StepError(f"model={arch!r}: cannot import it ({e}). Fix: check the module is installed in the image "
                        "and the name is right.") from e
    if not callable(factory):
        raise StepError(f"model={arch!r} is not callable; it must build a torch.nn.Module.")
    return factory


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def build_model(arch: str, input_dim: int, num_classes: int, kwargs: dict[str, Any] | None = None) -> Any:
    from torch import nn

    model = _factory(arch)(input_dim, num_classes, **(kwargs or {}))
    if not isinstance(model, nn.Module):
        raise StepError(f"model={arch!r} returned {type(model).__name__}, not a torch.nn.Module.")
    return model


def save_model(path: Any, model: Any, metadata: dict[str, Any]) -> None:
    """Write the model file atomically; tensors are moved to the CPU first."""
    import torch

    from .io import atomic_file

    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    with atomic_file(path) as handle:
        torch.save({"format": FORMAT, "state_dict": state, "metadata": metadata}, handle)


def _allowed(allow: str) -> list[str]:
    """The architectures a model file may name: built in, ``allow`` and ``XPUFLOW_ALLOWED_ARCHITECTURES``."""
    given = f"{allow or ''},{os.environ.get(ALLOW_ENV, '')}"
    return [*BUILTIN_ARCHITECTURES, *(a.strip() for a in given.split(",") if a.strip())]


def check_architecture(arch: Any, allow: str = "", source: str = "model file") -> str:
    """``arch`` if a model file may name it; refused before anything is imported otherwise."""
    if not isinstance(arch, str) or len(arch) > 200 or not _IMPORT_PATH.fullmatch(arch):
        shown = repr(arch) if isinstance(arch, str) and len(arch) <= 200 and arch.isprintable() else \
            f"a {type(arch).__name__} that is not an import path"
        raise StepError(f"{source} records architecture={shown}, which is not an import path 'package.module:"
                        "factory'; nothing was imported. Fix: pass a model.pt written by the train or train_tpu step.")
    allowed = _allowed(allow)
    if arch not in allowed:
        raise StepError(f"{source} names architecture={arch!r}, which is neither built in nor allowed (allowed: "
                        f"{', '.join(allowed)}); nothing was imported. Fix: if you trust this file and that code, "
                        f"pass --allow-architecture {arch} (or set {ALLOW_ENV}={arch}).")
    return arch


def load_model(path: Any, allow: str = "") -> tuple[Any, dict[str, Any]]:
    """Load a model file written by a training step; refuses anything else with a clear error.

    The file's architecture is built only if it is built in or listed in ``allow`` / ``XPUFLOW_ALLOWED_ARCHITECTURES``
    (comma-separated ``package.module:factory``): a model file cannot make a step import and call other code.
    """
    import torch

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncation, not a torch file
        raise StepError(f"model file {str(path)!r} cannot be loaded safely: {_one_line(e)}. Fix: pass a model.pt "
                        "written by xpuflow's train or train_tpu step.") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or "state_dict" not in blob:
        raise StepError(f"model file {str(path)!r} is not an xpuflow model (expected format {FORMAT!r} with a "
                        "state_dict). Fix: pass a model.pt written by the train or train_tpu step.")
    meta = blob["metadata"]
    if not isinstance(meta, dict):
        raise StepError(f"model file {str(path)!r} has no metadata dict. Fix: pass a model.pt written by the train "
                        "or train_tpu step.")
    check_architecture(meta.get("architecture"), allow, f"model file {str(path)!r}")
    kwargs = meta.get("model_kwargs") or {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise StepError(f"model file {str(path)!r} records model_kwargs that are not keyword arguments. Fix: pass a "
                        "model.pt written by the train or train_tpu step.")
    try:
        input_dim, num_classes = int(meta["input_shape"][-1]), len(meta["classes"])
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise StepError(f"model file {str(path)!r} is an xpuflow model with incomplete metadata ({type(e).__name__}: "
                        f"{_one_line(e)}). Fix: re-save it with the train step.") from e
    model = build_model(meta["architecture"], input_dim, num_classes, kwargs)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise StepError(f"model file {str(path)!r}: the weights do not fit architecture {meta['architecture']!r}: "
                        f"{_one_line(e)}") from e
    model.eval()
    return model, meta


def check_fits(stats: dict[str, Any], meta: dict[str, Any], *, who: str, data: str) -> list[str]:
    """The data's feature columns, after checking a preprocess output (its ``stats``) fits the model (``meta``):
    the same number and names of features, the same classes in the same order (labels are class indices)."""
    features = list(stats["features"])
    expected = int(meta["input_shape"][-1])
    if len(features) != expected:
        raise StepError(f"{who}: the model expects input shape {meta['input_shape']} ({expected} features) but "
                        f"data={data!r} has {len(features)} features. Fix: use the data the model was trained on.")
    trained = meta.get("features")
    if trained is not None and list(trained) != features:
        first = next(i for i, (a, b) in enumerate(zip(trained, features)) if a != b)
        raise StepError(f"{who}: the data's feature columns differ from the model's: column {first + 1} is "
                        f"{features[first]!r} in the data but {trained[first]!r} in the model. Fix: use the data "
                        "the model was trained on.")
    classes, known = [str(c) for c in stats.get("classes", [])], [str(c) for c in meta["classes"]]
    if classes != known:
        shown = ", ".join(classes[:12]) + (" ..." if len(classes) > 12 else "")
        mine = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
        raise StepError(f"{who}: the data's classes ({len(classes)}: {shown}) differ from the model's ({len(known)}: "
                        f"{mine}): its labels would be scored against the wrong classes. Fix: use data preprocessed "
                        "with the model's classes.")
    return features
