"""xpuflow for Kubeflow Pipelines: components that carry their compute.

    from kfp import dsl
    from xpuflow import Cluster, Compute
    from xpuflow.kfp import components as xc, placed

    gke = Cluster.load("gke")

    @dsl.pipeline(name="my-pipeline")
    def my_pipeline(epochs: int = 5):
        prep = placed(xc.preprocess(), gke)                       # default: CPU 2 / 4Gi
        model = placed(xc.train(data=prep.outputs["data"], epochs=epochs), gke,
                       compute=Compute.gpu(count=1, model="a100-40gb"))   # overridden per task

``placed`` applies the step's default Compute (``xpuflow/defaults.py``), or the one
you pass, through :mod:`xpuflow.render.kfp`: requests, limits, accelerator, node
selector, tolerations, affinity, shared memory, timeout, retries and security land
in the compiled pipeline. Importing this module imports kfp (it is the KFP extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..cluster import Cluster
from ..compute import Compute
from ..defaults import default_compute
from ..errors import ComputeError
from ..render import kfp as render_kfp

if TYPE_CHECKING:
    from kfp.dsl import PipelineTask

__all__ = ["placed", "step_of"]

# component name (as KFP names it) -> xpuflow step whose default Compute it carries
_STEPS = {
    "preprocess": "preprocess",
    "train": "train",
    "train-tpu": "train_tpu",
    "evaluate": "evaluate",
    "export": "export",
    "validate-on-device": "validate_on_device",
    "chunk": "chunk",
    "embed": "embed",
    "index": "index",
    "batch-infer": "batch_infer",
}


def step_of(task: PipelineTask) -> str:
    """The xpuflow step a task runs (from its component name)."""
    name = task.component_spec.name
    if name not in _STEPS:
        raise ComputeError(f"task {task.name!r}: component {name!r} is not an xpuflow component; pass compute= "
                           "explicitly to place it.")
    return _STEPS[name]


def placed(task: PipelineTask, cluster: Cluster | str, compute: Compute | None = None) -> PipelineTask:
    """Place ``task`` on ``cluster`` with ``compute`` (default: its step's default Compute)."""
    if isinstance(cluster, str):
        cluster = Cluster.load(cluster)
    if compute is None:
        compute = default_compute(step_of(task))
    return render_kfp.apply(task, cluster.place(compute), step=task.name)
