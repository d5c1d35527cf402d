"""KFP pipeline: preprocess on CPU -> train on GPU -> evaluate -> export for a Qualcomm NPU.

    xpuflow compile pipelines/train_gpu_export_npu.py --backend kfp --cluster gke -o out/pipeline.yaml
    xpuflow run train_gpu_export_npu            # locally, with kfp's SubprocessRunner

The cluster profile is chosen at compile time (``build(cluster)``; module-level
``pipeline`` uses ``XPUFLOW_CLUSTER``, default gke); every task carries its step's
default Compute, placed on that cluster.
"""

import os

from kfp import dsl

from xpuflow import Cluster
from xpuflow.kfp import components as xc
from xpuflow.kfp import placed

NAME = "train-gpu-export-npu"


def build(cluster="gke"):
    cluster = cluster if isinstance(cluster, Cluster) else Cluster.load(cluster)

    @dsl.pipeline(name=NAME, description="preprocess (CPU) -> train (GPU) -> evaluate (CPU) -> export for an NPU (CPU)")
    def train_gpu_export_npu(input_uri: str = "builtin:digits", epochs: int = 10, seed: int = 0,
                             target: str = "qnn-htp"):
        prep = placed(xc.preprocess(input_uri=input_uri, seed=seed), cluster)
        train = placed(xc.train(data=prep.outputs["data"], epochs=epochs, seed=seed), cluster)
        placed(xc.evaluate(model=train.outputs["model"], data=prep.outputs["data"]), cluster)
        placed(xc.export(model=train.outputs["model"], data=prep.outputs["data"], target=target), cluster)

    return train_gpu_export_npu


pipeline = build(os.environ.get("XPUFLOW_CLUSTER", "gke"))
