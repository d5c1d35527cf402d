"""The parity matrix: every Compute kind x every shipped cluster.

Shared by the main-venv tests and the Airflow-venv tests (and the helper
script the parity test runs in the Airflow venv), so all renderers are held
to the same cases.
"""

from __future__ import annotations

from xpuflow import Cluster, Compute, PlacementError
from xpuflow.catalog import shipped_clusters

CLUSTERS = shipped_clusters()

COMPUTES = {
    "cpu": lambda: Compute.cpu(cpu="2", memory="4Gi"),
    "cpu-spot": lambda: Compute.cpu(cpu="500m", memory="1Gi", spot=True),
    "gpu-training": lambda: Compute.gpu(count=1, timeout=7200, retries=2),
    "gpu-inference": lambda: Compute.gpu(count=1, purpose="inference", cpu="2", memory="8Gi"),
    "gpu-spot": lambda: Compute.gpu(count=1, spot=True),
    "gpu-mig": lambda: Compute.gpu(model="a100-40gb", mig="1g.5gb", purpose="inference", cpu="1", memory="4Gi"),
    "tpu": lambda: Compute.tpu(version="v5e", topology="2x4"),
    "tpu-multihost": lambda: Compute.tpu(version="v5p", topology="2x2x2"),
    # preferences with fallback (docs/compute.md): spot first, ordered candidates, a memory minimum
    "cpu-prefer-spot": lambda: Compute.cpu(cpu="1", memory="2Gi", spot="prefer"),
    "gpu-prefer-spot": lambda: Compute.gpu(count=1, cpu="3", memory="12Gi", spot="prefer"),
    "gpu-candidates": lambda: Compute.gpu(model=["h100-80gb", "a100-80gb"], cpu="8", memory="64Gi"),
    "gpu-min-memory": lambda: Compute.gpu(gpu_memory="40Gi", cpu="8", memory="64Gi"),
    "tpu-prefer-spot": lambda: Compute.tpu(version="v5e", topology="2x4", spot="prefer"),
    "npu": lambda: Compute.npu(device="intel-npu"),
    "npu-inferentia": lambda: Compute.npu(device="aws-inferentia2"),
}

KINDS_OFFERED = {
    "gke": {"cpu", "gpu", "tpu"},
    "eks": {"cpu", "gpu", "npu"},
    "aks": {"cpu", "gpu"},
    "generic": {"cpu", "gpu", "npu"},
}


def cases():
    """Yield (cluster, case id, placement or the PlacementError raised)."""
    for cluster_name in CLUSTERS:
        cluster = Cluster.load(cluster_name)
        for case, build in COMPUTES.items():
            try:
                yield cluster_name, case, cluster.place(build())
            except PlacementError as e:
                yield cluster_name, case, e


def renderable():
    """The (cluster, case, placement) triples every single-pod renderer must render."""
    return [(c, k, p) for c, k, p in cases() if not isinstance(p, Exception) and p.hosts == 1]


IMAGE = "ghcr.io/xpuflow/xpuflow-cpu@sha256:" + "0" * 64
