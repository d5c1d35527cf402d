"""``evaluate`` (CPU): accuracy and confusion matrix of a trained model on the test split.

The data must fit the model: the same features and the same classes in the same order
(labels are class indices), checked like ``export`` does; otherwise the step refuses in one
line rather than scoring labels against the wrong classes. ``evaluation.json`` is published
whole (:mod:`xpuflow.steps.publish`): a refused or failed rerun leaves the previous one as it was.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .io import StepError, write_json
from .models import check_fits, load_model
from .preprocess import read_split
from .publish import publish
from ..compute import Compute
from ..dsl.step import step

__all__ = ["evaluate"]

log = logging.getLogger("xpuflow.evaluate")
MARKER = "evaluation.json"


@step(compute=Compute.cpu(cpu="1", memory="2Gi"), inputs=("model", "data"), outputs=("output",))
def evaluate(model: str = "out/model", data: str = "out/data", output: str = "out/eval", split: str = "test",
             allow_architecture: str = "") -> dict[str, Any]:
    """Score ``model`` (a train/train_tpu output) on ``split``; writes ``output/evaluation.json``.

    ``allow_architecture``: comma-separated ``package.module:factory`` a model file may name besides the built-in
    ones (also ``XPUFLOW_ALLOWED_ARCHITECTURES``); any other architecture is refused before it is imported.
    """
    import numpy as np
    import torch

    if split not in ("train", "validation", "test"):
        raise StepError(f"evaluate: split={split!r} is not valid: train, validation or test.")
    path = Path(model)
    net, meta = load_model(path / "model.pt" if path.is_dir() else path, allow=allow_architecture)
    x, y, stats = read_split(data, split)
    check_fits(stats, meta, who="evaluate", data=data)
    classes = meta["classes"]
    k = len(classes)
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise StepError(f"evaluate: the {split} split of data={data!r} has label indices from {y.min()} to {y.max()}, "
                        f"outside the {k} classes its stats.json lists (a damaged output). Fix: rerun preprocess.")
    with torch.inference_mode():
        predicted = net(torch.from_numpy(x)).argmax(1).numpy()
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y, predicted), 1)
    accuracy = float((predicted == y).mean()) if len(y) else 0.0
    per_class = {c: float(confusion[i, i] / max(1, confusion[i].sum())) for i, c in enumerate(classes)}
    result = {
        "split": split,
        "rows": int(len(y)),
        "accuracy": accuracy,
        "per_class_recall": per_class,
        "classes": classes,
        "confusion_matrix": confusion.tolist(),
        "trained_on": meta.get("trained_on", {}),
    }
    with publish(output, who="evaluate", markers=(MARKER,)) as staging:
        write_json(staging / MARKER, result)
    log.info("evaluate: %s accuracy %.4f on %d rows", split, accuracy, len(y))
    return result
