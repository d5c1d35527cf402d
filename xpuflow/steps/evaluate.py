"""``evaluate`` (CPU): accuracy and confusion matrix of a trained model on the test split."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .io import StepError, local_path, write_json
from .models import load_model
from .preprocess import read_split
from ..compute import Compute
from ..dsl.step import step

__all__ = ["evaluate"]

log = logging.getLogger("xpuflow.evaluate")


@step(compute=Compute.cpu(cpu="1", memory="2Gi"), inputs=("model", "data"), outputs=("output",))
def evaluate(model: str = "out/model", data: str = "out/data", output: str = "out/eval", split: str = "test") -> dict[str, Any]:
    """Score ``model`` (a train/train_tpu output) on ``split``; writes ``output/evaluation.json``."""
    import numpy as np
    import torch

    if split not in ("train", "validation", "test"):
        raise StepError(f"evaluate: split={split!r} is not valid: train, validation or test.")
    path = Path(model)
    net, meta = load_model(path / "model.pt" if path.is_dir() else path)
    x, y, stats = read_split(data, split)
    if x.shape[1] != meta["input_shape"][-1]:
        raise StepError(f"evaluate: the data has {x.shape[1]} features but the model expects {meta['input_shape'][-1]}. "
                        "Fix: evaluate on the data the model was trained on.")
    with torch.inference_mode():
        predicted = net(torch.from_numpy(x)).argmax(1).numpy()
    classes = meta["classes"]
    k = len(classes)
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
    out = local_path(output)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "evaluation.json", result)
    log.info("evaluate: %s accuracy %.4f on %d rows", split, accuracy, len(y))
    return result
