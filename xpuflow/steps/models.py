"""Models for the training steps, and the model file format they share.

The default model is a small MLP for tabular features (the digits data set).
A user model is an import path ``"package.module:factory"`` to a function
``factory(input_dim: int, num_classes: int, **kwargs) -> torch.nn.Module``.

Model file (``model.pt``): ``{"state_dict": ..., "metadata": {...}}`` where the
metadata holds only plain data (architecture import path and kwargs, input
shape, classes, normalisation), so it loads with ``torch.load(weights_only=True)``
in the GPU, TPU and export steps alike.
"""

from __future__ import annotations

import importlib
from typing import Any

from .io import StepError

__all__ = ["DEFAULT_ARCH", "mlp", "build_model", "save_model", "load_model"]

DEFAULT_ARCH = "xpuflow.steps.models:mlp"
FORMAT = "xpuflow.model/1"


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


def load_model(path: Any) -> tuple[Any, dict[str, Any]]:
    """Load a model file written by a training step; refuses anything else with a clear error."""
    import torch

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncation, not a torch file
        raise StepError(f"model file {str(path)!r} cannot be loaded safely: {e}. Fix: pass a model.pt written by "
                        "xpuflow's train or train_tpu step.") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or "state_dict" not in blob:
        raise StepError(f"model file {str(path)!r} is not an xpuflow model (expected format {FORMAT!r} with a "
                        "state_dict). Fix: pass a model.pt written by the train or train_tpu step.")
    meta = blob["metadata"]
    model = build_model(meta["architecture"], meta["input_shape"][-1], len(meta["classes"]), meta.get("model_kwargs"))
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise StepError(f"model file {str(path)!r}: the weights do not fit architecture {meta['architecture']!r}: "
                        f"{e}") from e
    model.eval()
    return model, meta
