"""A data scientist's own flow: xpuflow's preprocess (CPU) and train (GPU), then their own model card (CPU).

    xpuflow run examples/my_project/my_flow.py --param epochs=3       # locally (kfp.local)
    xpuflow plan examples/my_project/my_flow.py --cluster eks         # where each task runs, and its cost
    xpuflow compile examples/my_project/my_flow.py --backend airflow --cluster gke -o dags/my_flow.py
"""

from my_steps import model_card

from xpuflow import Compute, flow
from xpuflow.steps.preprocess import preprocess
from xpuflow.steps.train import train


@flow(name="my_model_card")
def my_model_card(epochs: int = 5, owner: str = "ml-team"):
    """preprocess (CPU) -> train (GPU, an A100 here) -> model card (CPU)"""
    data = preprocess(input="builtin:digits").output
    model = train(data=data, epochs=epochs).with_compute(
        Compute.gpu(count=1, model="a100-40gb", memory="32Gi", spot="prefer"))  # spot first, on-demand fallback
    model_card(model=model.output, owner=owner)
