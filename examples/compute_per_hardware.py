"""One Compute per hardware kind, placed on a cluster and rendered for each backend.

    python examples/compute_per_hardware.py [gke|eks|aks|generic|path/to/cluster.yaml]
"""

from __future__ import annotations

import json
import sys

from xpuflow import Cluster, Compute, XpuflowError
from xpuflow.render import airflow, kubernetes

STEPS = {
    "prepare data (CPU)": Compute.cpu(cpu="2", memory="4Gi"),
    "train (GPU, spot)": Compute.gpu(count=1, model="l4", spot=True, timeout=4 * 3600, retries=2),
    "train at scale (TPU)": Compute.tpu(version="v5e", topology="2x4"),
    "validate on device (NPU)": Compute.npu(device="intel-npu"),
}


def main(cluster_name: str) -> None:
    cluster = Cluster.load(cluster_name)
    for title, compute in STEPS.items():
        print(f"== {title}: {compute.hardware}")
        try:
            placement = cluster.place(compute)
        except XpuflowError as e:
            print(f"   not on {cluster.name}: {e}\n")
            continue
        print(f"   pool {placement.pool} ({placement.instance_type}), ~${placement.price_per_hour}/h")
        job = kubernetes.job(placement, name="step", image="ghcr.io/example/step:1.0", command=["xpuflow"])
        pod = job["spec"]["template"]["spec"]
        print("   Job nodeSelector:", json.dumps(pod["nodeSelector"]))
        print("   Job resources:   ", json.dumps(pod["containers"][0]["resources"]))
        print("   KubernetesPodOperator kwargs:", sorted(airflow.pod_kwargs(placement)))
        print()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "gke")
