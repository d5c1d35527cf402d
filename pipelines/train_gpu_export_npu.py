"""Flow: preprocess on CPU -> train on GPU -> evaluate on CPU -> export for a Qualcomm NPU (QNN HTP) on CPU.

    xpuflow run train_gpu_export_npu                       # locally, with kfp's SubprocessRunner
    xpuflow compile pipelines/train_gpu_export_npu.py --backend kfp --cluster gke -o out/pipeline.yaml
    xpuflow compile pipelines/train_gpu_export_npu.py --backend airflow --cluster eks -o dags/xp_eks.py

Written as you would write yours: each step carries its own Compute (``@step``); the
same description becomes the KFP pipeline, the Airflow DAG (dags/) and Kubernetes Jobs.
"""

from xpuflow import flow
from xpuflow.steps.evaluate import evaluate
from xpuflow.steps.export import export
from xpuflow.steps.preprocess import preprocess
from xpuflow.steps.train import train


@flow(name="train_gpu_export_npu")
def train_gpu_export_npu(input_uri: str = "builtin:digits", epochs: int = 10, seed: int = 0, target: str = "qnn-htp"):
    """preprocess (CPU) -> train (GPU) -> evaluate (CPU) -> export for a Qualcomm NPU (QNN HTP, on CPU)"""
    data = preprocess(input=input_uri, seed=seed).output
    model = train(data=data, epochs=epochs, seed=seed).output
    evaluate(model=model, data=data)
    export(model=model, data=data, target=target)
