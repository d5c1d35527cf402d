"""Flow: preprocess on CPU -> train on a TPU slice -> export (generic CPU INT8) on CPU.

    xpuflow run train_tpu
    xpuflow compile pipelines/train_tpu.py --backend kfp --cluster gke -o out/train_tpu.yaml

Single-host TPU slices run as ordinary tasks; a multi-host slice is refused for KFP and
Airflow with a message pointing to the JobSet renderer (``--backend k8s``).
"""

from xpuflow import flow
from xpuflow.steps.export import export
from xpuflow.steps.preprocess import preprocess
from xpuflow.steps.train_tpu import train_tpu as train_on_tpu


@flow(name="train_tpu")
def train_tpu(input_uri: str = "builtin:digits", epochs: int = 10, seed: int = 0, target: str = "cpu-int8"):
    """preprocess (CPU) -> train on a TPU slice -> export CPU INT8 (CPU)"""
    data = preprocess(input=input_uri, seed=seed).output
    model = train_on_tpu(data=data, epochs=epochs, seed=seed).output
    export(model=model, data=data, target=target)
