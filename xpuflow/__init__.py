"""xpuflow: ML pipeline steps that declare their compute.

    from xpuflow import Compute, Cluster, Input, Output, flow, step

    @step(compute=Compute.gpu(count=1, model="l4", spot=True))
    def train(data: Input, model: Output, epochs: int = 10): ...

    placement = Cluster.load("gke").place(train.compute)

Importing xpuflow is cheap: no torch, onnx, kfp, airflow or kubernetes client.
"""

from .cluster import Cluster
from .compute import Compute, Security
from .dsl import Flow, FlowError, Input, Output, Step, flow, step
from .errors import (
    ArgumentError,
    ClusterFileError,
    ComputeError,
    PlacementError,
    RenderError,
    XpuflowError,
)
from .placement import Placement

__all__ = [
    "Compute",
    "Cluster",
    "Placement",
    "Security",
    "step",
    "flow",
    "Input",
    "Output",
    "Step",
    "Flow",
    "FlowError",
    "XpuflowError",
    "ComputeError",
    "ClusterFileError",
    "PlacementError",
    "RenderError",
    "ArgumentError",
]

__version__ = "0.1.0"
