"""A user's own project, written outside xpuflow/: a package of steps (CPU, GPU, NPU, and one that takes the flow's
default compute) and a flow file, as a data scientist would write them. Shared by the main-venv and Airflow tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

CLUSTERS = ("eks", "generic")  # both offer the project's NPU (AWS Inferentia2)
TASKS = ("make_data", "fit", "score", "summarise")

STEPS = '''
"""acme_ml's steps: plain functions over directories, each declaring what it runs on."""

import json
import os

from xpuflow import Compute, Input, Output, step


@step(compute=Compute.cpu(cpu="1", memory="1Gi"))
def make_data(out: Output, rows: int = 64, seed: int = 0):
    """CPU: write a table of numbers."""
    os.makedirs(out, exist_ok=True)
    values = [((i * 7 + seed) % 10) / 10 for i in range(rows)]
    with open(os.path.join(out, "data.json"), "w") as f:
        json.dump(values, f)
    return {"rows": rows}


@step(compute=Compute.gpu(count=1, memory="8Gi"), resumable=True, minutes=30)
def fit(data: Input, model: Output, scale: float = 2.0, checkpoint_dir: str = ""):
    """GPU: fit a one-number model (resumes from checkpoint_dir)."""
    values = json.load(open(os.path.join(data, "data.json")))
    if checkpoint_dir:
        os.makedirs(checkpoint_dir, exist_ok=True)
        with open(os.path.join(checkpoint_dir, "step-1.json"), "w") as f:
            json.dump({"step": 1}, f)
    os.makedirs(model, exist_ok=True)
    weight = scale * sum(values) / len(values)
    with open(os.path.join(model, "model.json"), "w") as f:
        json.dump({"weight": weight, "checkpoint_dir": checkpoint_dir}, f)
    return {"weight": weight}


@step(compute=Compute.npu(device="aws-inferentia2"))
def score(model: Input, data: Input, report: Output, threshold: float = 0.5, strict: bool = False):
    """NPU: score the data with the model."""
    weight = json.load(open(os.path.join(model, "model.json")))["weight"]
    values = json.load(open(os.path.join(data, "data.json")))
    above = sum(v * weight > threshold for v in values)
    os.makedirs(report, exist_ok=True)
    with open(os.path.join(report, "report.json"), "w") as f:
        json.dump({"above": above, "rows": len(values), "strict": strict}, f)
    return {"above": above}


@step
def summarise(report: Input, summary: Output):
    """Whatever the flow's default compute is: one line of summary."""
    result = json.load(open(os.path.join(report, "report.json")))
    os.makedirs(summary, exist_ok=True)
    with open(os.path.join(summary, "summary.txt"), "w") as f:
        f.write(f"{result['above']} of {result['rows']} above\\n")
'''

FLOW = '''
"""acme_ml's nightly flow: data (CPU) -> fit (GPU) -> score (NPU) -> summary (the flow's default CPU)."""

from xpuflow import Compute, flow

from acme_ml.steps import fit, make_data, score, summarise


@flow(name="acme_nightly", default_compute=Compute.cpu(cpu="500m", memory="512Mi"))
def acme_nightly(rows: int = 64, scale: float = 2.0, strict: bool = False):
    """data (CPU) -> fit (GPU) -> score (NPU) -> summary (CPU)"""
    data = make_data(rows=rows).with_compute(Compute.cpu(cpu="2", memory="2Gi"))
    model = fit(data=data.output, scale=scale)
    report = score(model=model.output, data=data.outputs["out"], strict=strict)
    summarise(report=report.output)
'''


def write_project(root: Path) -> Path:
    """``root/acme_ml/{__init__,steps}.py`` and the flow file ``root/flows/nightly.py``; returns the flow file."""
    pkg = root / "acme_ml"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "steps.py").write_text(textwrap.dedent(STEPS))
    flows = root / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "nightly.py").write_text(textwrap.dedent(FLOW))
    return flows / "nightly.py"


def env(root: Path, repo: Path) -> dict[str, str]:
    """The environment a user's shell would have: their project and xpuflow importable."""
    paths = [str(root), str(repo), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def importable(root: Path) -> None:
    """Make the project importable in this process (as an installed package would be)."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


def make(factory) -> Path:  # noqa: ANN001 - pytest's tmp_path_factory
    """A fresh project under pytest's temporary directories, importable in this process."""
    root = factory.mktemp("acme")
    write_project(root)
    importable(root)
    return root


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    """``xpuflow ARGS`` run as the user would, from the project's directory, with the repository's xpuflow."""
    repo = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, "-m", "xpuflow", *args], capture_output=True, text=True, timeout=600,
                          env=env(root, repo), cwd=root)
