"""Importing xpuflow (and its renderers' modules) stays cheap: no heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "onnx", "onnxruntime", "torch_xla", "kfp", "airflow", "kubernetes", "yaml")


def imported_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_core_and_renderer_modules_import_nothing_heavy():
    modules = imported_after(
        "import xpuflow, xpuflow.render.kubernetes, xpuflow.render.kfp, xpuflow.render.airflow, xpuflow.cli"
    )
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_placing_and_rendering_a_manifest_imports_only_yaml():
    modules = imported_after(
        "from xpuflow import Cluster, Compute; from xpuflow.render import kubernetes; "
        "kubernetes.job(Cluster.load('gke').place(Compute.gpu(model='l4', spot=True)), name='t', image='i')"
    )
    assert not modules & (set(HEAVY) - {"yaml"}), sorted(modules & set(HEAVY))
    assert "yaml" in modules  # the catalog is YAML, read on first use


def test_public_surface():
    import xpuflow

    for name in ("Compute", "Cluster", "Placement", "XpuflowError"):
        assert hasattr(xpuflow, name)
    assert issubclass(xpuflow.ComputeError, xpuflow.XpuflowError) and issubclass(xpuflow.ComputeError, ValueError)


def test_flow_files_import_nothing_heavy():
    """Loading an example flow (or a user's) imports its steps' modules, but none of torch, onnx, kfp, airflow."""
    modules = imported_after(
        "from xpuflow.dsl.load import load_flow; "
        "[load_flow(n) for n in ('train_gpu_export_npu', 'train_tpu', 'rag_index', 'examples/my_project/my_flow.py')]"
    )
    assert not modules & (set(HEAVY) - {"yaml"}), sorted(modules & set(HEAVY))
