"""A data scientist's own step, next to xpuflow's: a model card written from a training run.

    xpuflow step my_steps:model_card --model out/model --card out/card     # as a pod runs it

The pod's image must contain this module (pip install your package, or COPY it in).
"""

import json
import os

from xpuflow import Compute, Input, Output, step


@step(compute=Compute.cpu(cpu="500m", memory="1Gi"))
def model_card(model: Input, card: Output, owner: str = "ml-team", min_accuracy: float = 0.8):
    """CPU: a Markdown model card from a train output (metrics.json); refuses a model under min_accuracy."""
    metrics = json.load(open(os.path.join(model, "metrics.json")))
    accuracy = metrics["final"]["val_accuracy"]
    if accuracy < min_accuracy:
        raise ValueError(f"model_card: val_accuracy={accuracy:.3f} is below min_accuracy={min_accuracy}")
    os.makedirs(card, exist_ok=True)
    with open(os.path.join(card, "MODEL_CARD.md"), "w") as f:
        f.write(f"# digits classifier\n\nowner: {owner}\n\nvalidation accuracy: {accuracy:.3f} "
                f"after {len(metrics['epochs'])} epochs on {metrics['device']}\n")
    return {"val_accuracy": accuracy}
