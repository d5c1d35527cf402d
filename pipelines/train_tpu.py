"""KFP pipeline: preprocess on CPU -> train on a TPU slice -> export (generic CPU INT8).

    xpuflow compile pipelines/train_tpu.py --backend kfp --cluster gke -o out/train_tpu.yaml
    xpuflow run train_tpu

Single-host TPU slices run as ordinary tasks; a multi-host slice is refused at compile
time with a message pointing to the JobSet renderer.
"""

import os

from kfp import dsl

from xpuflow import Cluster
from xpuflow.kfp import components as xc
from xpuflow.kfp import placed

NAME = "train-tpu"


def build(cluster="gke"):
    cluster = cluster if isinstance(cluster, Cluster) else Cluster.load(cluster)

    @dsl.pipeline(name=NAME, description="preprocess (CPU) -> train (TPU) -> export (CPU INT8)")
    def train_tpu(input_uri: str = "builtin:digits", epochs: int = 10, seed: int = 0, target: str = "cpu-int8"):
        prep = placed(xc.preprocess(input_uri=input_uri, seed=seed), cluster)
        train = placed(xc.train_tpu(data=prep.outputs["data"], epochs=epochs, seed=seed), cluster)
        placed(xc.export(model=train.outputs["model"], data=prep.outputs["data"], target=target), cluster)

    return train_tpu


pipeline = build(os.environ.get("XPUFLOW_CLUSTER", "gke"))
