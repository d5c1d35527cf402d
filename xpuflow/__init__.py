"""xpuflow: ML pipeline steps that declare their compute.

    from xpuflow import Compute, Cluster

    train = Compute.gpu(count=1, model="l4", spot=True)
    placement = Cluster.load("gke").place(train)

Importing xpuflow is cheap: no torch, onnx, kfp, airflow or kubernetes client.
"""

from .cluster import Cluster
from .compute import Compute, Security
from .errors import (
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
    "XpuflowError",
    "ComputeError",
    "ClusterFileError",
    "PlacementError",
    "RenderError",
]

__version__ = "0.1.0"
