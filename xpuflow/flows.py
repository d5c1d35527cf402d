"""The example flows, described once and orchestrator-neutral.

A flow is a chain of steps; each names an ``xpuflow step``, its default Compute and
which upstream outputs it reads. The KFP pipelines (``pipelines/``), the Airflow DAGs
(``dags/``) and the CLI (``xpuflow run | compile | plan | lint | graph``) are all built
from these descriptions, so the three always agree on steps, wiring and placement.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .compute import Compute
from .defaults import default_compute
from .errors import ComputeError, did_you_mean

__all__ = ["StepSpec", "Flow", "flow", "FLOW_NAMES"]


@dataclass(frozen=True)
class StepSpec:
    """One task of a flow: ``step`` run with ``params``; ``inputs`` maps a parameter to an upstream task."""

    name: str
    step: str
    compute: Compute
    params: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)
    # what the step's output directory holds: dataset | model | metrics | export
    produces: str = "dataset"
    # rough duration on the default data set at the default Compute, for `xpuflow plan` cost per run
    minutes: float = 5.0


@dataclass(frozen=True)
class Flow:
    name: str
    description: str
    steps: tuple[StepSpec, ...]

    def step(self, name: str) -> StepSpec:
        for s in self.steps:
            if s.name == name:
                return s
        names = [s.name for s in self.steps]
        raise ComputeError(f"flow {self.name!r}: no step {name!r}; steps: {', '.join(names)}.{did_you_mean(name, names)}")

    def computes(self) -> dict[str, Compute]:
        return {s.name: s.compute for s in self.steps}

    def with_compute(self, **overrides: Compute) -> Flow:
        """The flow with some steps' Compute replaced (a per-task override)."""
        for name in overrides:
            self.step(name)
        steps = tuple(
            StepSpec(s.name, s.step, overrides.get(s.name, s.compute), s.params, s.inputs, s.produces, s.minutes)
            for s in self.steps
        )
        return Flow(self.name, self.description, steps)


@functools.cache
def _flows() -> dict[str, Flow]:
    export_target = "qnn-htp"
    return {
        "train_gpu_export_npu": Flow(
            "train_gpu_export_npu",
            "preprocess on CPU -> train on GPU -> evaluate on CPU -> export for a Qualcomm NPU (QNN HTP) on CPU",
            (
                StepSpec("preprocess", "preprocess", default_compute("preprocess"), {"input": "builtin:digits"}),
                StepSpec("train", "train", default_compute("train"), {"epochs": 10}, {"data": "preprocess"}, "model", 15),
                StepSpec("evaluate", "evaluate", default_compute("evaluate"), {},
                         {"model": "train", "data": "preprocess"}, "metrics"),
                StepSpec("export", "export", default_compute("export"), {"target": export_target},
                         {"model": "train", "data": "preprocess"}, "export", 10),
            ),
        ),
        "train_tpu": Flow(
            "train_tpu",
            "preprocess on CPU -> train on a TPU slice -> export (CPU INT8) on CPU",
            (
                StepSpec("preprocess", "preprocess", default_compute("preprocess"), {"input": "builtin:digits"}),
                StepSpec("train_tpu", "train_tpu", default_compute("train_tpu"), {"epochs": 10},
                         {"data": "preprocess"}, "model", 15),
                StepSpec("export", "export", default_compute("export"), {"target": "cpu-int8"},
                         {"model": "train_tpu", "data": "preprocess"}, "export", 10),
            ),
        ),
        "rag_index": Flow(
            "rag_index",
            "chunk documents on CPU -> embed on a GPU of the inference pool -> build and check a vector index on CPU "
            "(FAISS, or PostgreSQL + pgvector)",
            (
                StepSpec("chunk", "chunk", default_compute("chunk"), {"input": "builtin:docs"}),
                StepSpec("embed", "embed", default_compute("embed"), {}, {"data": "chunk"}, "dataset", 10),
                StepSpec("index", "index", default_compute("index"), {"engine": "faiss", "table": "xpuflow_chunks"},
                         {"data": "embed"}, "dataset", 5),
            ),
        ),
    }


FLOW_NAMES = ("train_gpu_export_npu", "train_tpu", "rag_index")


def flow(name: str) -> Flow:
    flows = _flows()
    key = name.removesuffix(".py").rsplit("/", 1)[-1]
    if key not in flows:
        raise ComputeError(f"pipeline={name!r} is not valid: one of {', '.join(flows)}.{did_you_mean(key, flows)}")
    return flows[key]
