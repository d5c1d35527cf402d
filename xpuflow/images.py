"""Container images per compute class, configured in one place.

Override with environment variables (or edit here for your registry):
``XPUFLOW_IMAGE_CPU``, ``XPUFLOW_IMAGE_CUDA``, ``XPUFLOW_IMAGE_TPU``. The Dockerfiles
that build them are in ``images/``. Pin by digest in production.
"""

from __future__ import annotations

import os

__all__ = ["image_for", "image_for_class", "DEFAULTS"]

_REGISTRY = "ghcr.io/xpuflow"
DEFAULTS = {
    "cpu": f"{_REGISTRY}/xpuflow-cpu:0.1.0",    # python 3.11 + torch 2.13 CPU + onnxruntime(-qnn)
    "cuda": f"{_REGISTRY}/xpuflow-cuda:0.1.0",  # CUDA 13 + torch 2.13
    "tpu": f"{_REGISTRY}/xpuflow-tpu:0.1.0",    # torch 2.9 + torch_xla[tpu] 2.9
}


def image_for(kind: str) -> str:
    """The image for a Compute kind: cpu and npu steps use the CPU image, gpu the CUDA one, tpu the TPU one."""
    return image_for_class({"cpu": "cpu", "npu": "cpu", "gpu": "cuda", "tpu": "tpu"}[kind])


def image_for_class(klass: str) -> str:
    """The image of an image class (cpu, cuda, tpu); an image reference (with '/' or ':') is returned as is."""
    if klass not in DEFAULTS:
        return klass
    return os.environ.get(f"XPUFLOW_IMAGE_{klass.upper()}", DEFAULTS[klass])
