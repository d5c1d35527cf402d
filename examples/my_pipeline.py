"""A data scientist's own KFP pipeline from xpuflow components: run it locally, then compile it.

    python examples/my_pipeline.py            # local run (kfp SubprocessRunner), then compile for GKE

Each component is made from an xpuflow step and carries the step's Compute; `placed` puts it
on a cluster, and a task can override it (here: train asks for an A100 on the training pool,
3 retries). Your own steps work the same way: `xpuflow.kfp.component(my_step)`.
"""

import sys
import tempfile
from pathlib import Path

from kfp import compiler, dsl, local

from xpuflow import Cluster, Compute
from xpuflow.kfp import components as xc
from xpuflow.kfp import placed

GKE = Cluster.load("gke")


@dsl.pipeline(name="my-digits")
def my_pipeline(epochs: int = 6):
    prep = placed(xc.preprocess(seed=1), GKE)
    model = placed(xc.train(data=prep.output, epochs=epochs), GKE,
                   compute=Compute.gpu(count=1, model="a100-40gb", memory="32Gi", retries=3))
    placed(xc.evaluate(model=model.output, data=prep.output), GKE)


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="my-pipeline-"))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(out / "runs"))
    my_pipeline(epochs=3)  # runs now, on this machine
    compiler.Compiler().compile(my_pipeline, str(out / "my_pipeline.yaml"))
    print(f"ran locally under {out / 'runs'}; compiled for GKE: {out / 'my_pipeline.yaml'}")
