"""The default Compute of each xpuflow step: what it asks for unless a task overrides it.

CPUs prepare data and orchestrate, GPUs train and run batch inference, TPUs
train at scale, NPUs run the exported model close to the user. Each default
asks for what the step uses on the default data set; override per task.
"""

from __future__ import annotations

import functools

from .compute import Compute

__all__ = ["default_compute", "STEP_NAMES"]

STEP_NAMES = ("preprocess", "train", "train_tpu", "evaluate", "export", "validate_on_device",
              "chunk", "embed", "index", "batch_infer")


@functools.cache
def _defaults() -> dict[str, Compute]:
    return {
        "preprocess": Compute.cpu(cpu="2", memory="4Gi"),
        "train": Compute.gpu(count=1, cpu="4", memory="16Gi", spot=True),
        "train_tpu": Compute.tpu(version="v5e", topology="2x4", spot=True),
        "evaluate": Compute.cpu(cpu="1", memory="2Gi"),
        # conversion, calibration and compilation are CPU work; memory sized for calibration
        "export": Compute.cpu(cpu="2", memory="8Gi"),
        "validate_on_device": Compute.npu(device="intel-npu", count=1),
        # retrieval (xpuflow.steps.rag): reading and cutting text is CPU work; embedding and batch
        # scoring run on a GPU of the inference pool (not competing with training); FAISS builds on CPUs
        "chunk": Compute.cpu(cpu="1", memory="2Gi"),
        "embed": Compute.gpu(count=1, pool="inference", cpu="4", memory="16Gi"),
        "index": Compute.cpu(cpu="2", memory="8Gi"),
        "batch_infer": Compute.gpu(count=1, pool="inference", cpu="4", memory="16Gi"),
    }


def default_compute(step: str) -> Compute:
    """The default Compute of ``step`` (one of ``STEP_NAMES``)."""
    from .errors import ComputeError, invalid

    table = _defaults()
    if step not in table:
        raise ComputeError(invalid("step", step, f"one of {', '.join(STEP_NAMES)}", choices=STEP_NAMES))
    return table[step]
