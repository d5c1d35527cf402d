"""A user's flow file, outside xpuflow, whose training step claims its GPUs through DRA."""

from __future__ import annotations

from pathlib import Path

TEXT = """from xpuflow import Compute, flow
from xpuflow.steps.preprocess import preprocess
from xpuflow.steps.train import train


@flow(name="claimed")
def claimed(epochs: int = 1):
    data = preprocess(input="builtin:digits").output
    train(data=data, epochs=epochs).with_compute(Compute.gpu(model={model!r}, count={count}, memory="24Gi", claim=True))
"""


def write(folder: Path, model: str | list[str] = "l4", count: int = 1) -> Path:
    """Write ``claimed.py`` into ``folder``; the train step claims ``count`` GPUs of ``model`` (or ordered candidates)."""
    path = folder / "claimed.py"
    path.write_text(TEXT.format(model=model, count=count))
    return path
