"""What a KFP component made from a step runs in its pod: the step, on the task's artifacts.

Input artifacts are read from their paths, outputs written to theirs; a checkpointed
step given no ``checkpoint_dir`` keeps its checkpoints beside its outputs, at
``<task directory URI>/_checkpoints``: the URI carries the run and the task, so a
retried pod of the same run (spot preemption) resumes instead of starting over. The
step's numeric results become the metadata of its (first) output artifact.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

__all__ = ["run_task", "checkpoint_uri"]

log = logging.getLogger("xpuflow.kfp")


def checkpoint_uri(output_uri: str) -> str:
    """``<pipeline root>/<run>/<task>/<output>`` -> ``<pipeline root>/<run>/<task>/_checkpoints``."""
    return output_uri.rstrip("/").rsplit("/", 1)[0] + "/_checkpoints"


def run_task(ref: str, arguments: Mapping[str, Any]) -> None:
    from ..dsl.load import load_step

    step = load_step(ref)
    kwargs = dict(arguments)
    for name in (*step.inputs, *step.outputs):
        kwargs[name] = arguments[name].path
    first = arguments[step.outputs[0]]
    if step.checkpointed and not kwargs.get("checkpoint_dir"):
        kwargs["checkpoint_dir"] = checkpoint_uri(first.uri)
    log.info("xpuflow step %s: %s", step.ref, kwargs)
    result = step.fn(**kwargs)
    if isinstance(result, Mapping):
        first.metadata.update({k: v for k, v in result.items() if isinstance(v, (int, float, str))
                               and not isinstance(v, bool)})
