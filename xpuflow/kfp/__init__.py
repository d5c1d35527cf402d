"""xpuflow for Kubeflow Pipelines: components and pipelines that carry their compute.

From a step or a flow (the usual way)::

    from xpuflow.kfp import component, pipeline
    train_op = component(my_steps.train)                  # a KFP component of any @step
    p = pipeline(my_flow, "gke")                          # a KFP pipeline of a @flow, placed on GKE

In a KFP pipeline of your own::

    from kfp import dsl
    from xpuflow import Cluster, Compute
    from xpuflow.kfp import components as xc, placed

    @dsl.pipeline(name="my-pipeline")
    def my_pipeline(epochs: int = 5):
        prep = placed(xc.preprocess(), "gke")                      # the step's own Compute
        placed(xc.train(data=prep.output, epochs=epochs), "gke",
               compute=Compute.gpu(count=1, model="a100-40gb"))    # overridden per task
        placed(my_own_op(), "gke", default=Compute.cpu(cpu="1"))   # not made by xpuflow: needs a Compute

``placed`` applies the Compute of the step a component was made from (by
:func:`component`, never matched by name), or ``compute=``, or ``default=``
(a pipeline-wide default), through :mod:`xpuflow.render.kfp`. kfp is imported
only by the functions that build components and pipelines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..cluster import Cluster
from ..compute import Compute
from ..dsl.step import FlowError
from ..render import kfp as render_kfp

if TYPE_CHECKING:
    from kfp.dsl import PipelineTask

    from ..dsl.flow import Flow
    from ..dsl.step import Step

__all__ = ["component", "pipeline", "placed", "step_of", "recording"]

_RECORDING: list[list[str]] = []


@contextlib.contextmanager
def recording() -> Iterator[list[str]]:
    """Collect the name of the cluster of every ``placed`` call made inside (to check ``--cluster``)."""
    names: list[str] = []
    _RECORDING.append(names)
    try:
        yield names
    finally:
        _RECORDING.remove(names)


def component(step: Step, *, image: str | None = None) -> Any:
    """The KFP component of ``step`` (cached): Input parameters are input artifacts, Output parameters output
    artifacts, scalars component parameters with the step's defaults; the pod runs the step function."""
    from .components import build_component

    return build_component(step, image or step.image_ref())


def step_of(task: PipelineTask) -> Step | None:
    """The step a task's component was made from by :func:`component`; None for any other component."""
    from .components import made_from

    return made_from(task.component_spec)


def placed(task: PipelineTask, cluster: Cluster | str, compute: Compute | None = None, *,
           default: Compute | None = None) -> PipelineTask:
    """Place ``task`` on ``cluster`` with ``compute``, else the Compute of the step its component was made
    from, else ``default`` (a pipeline-wide default); a task with none of them is refused."""
    if isinstance(cluster, str):
        cluster = Cluster.load(cluster)
    if compute is None:
        step = step_of(task)
        compute = step.compute if step is not None and step.compute is not None else default
    if compute is None:
        raise FlowError(f"task {task.name!r}: component {task.component_spec.name!r} was not made by xpuflow "
                           "(or its step declares no compute), so it has no Compute. Fix: placed(task, cluster, "
                           "compute=Compute...) or placed(..., default=Compute...) for a pipeline-wide default.")
    for names in _RECORDING:
        names.append(cluster.name)
    return render_kfp.apply(task, cluster.place(compute), step=task.name)


def pipeline(flow: Flow | str, cluster: Cluster | str, *, compute: dict[str, Compute] | None = None) -> Any:
    """The KFP pipeline of ``flow`` placed on ``cluster`` (``compute``: per-task overrides)."""
    from .compose import build_pipeline

    return build_pipeline(flow, cluster, compute=compute)
