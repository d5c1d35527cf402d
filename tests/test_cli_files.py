"""The CLI on a user's own files: every verb takes path/to/file.py[:name], honours --cluster, and refuses in one line
(exit 2, no traceback, never a built-in in its place) a file that is missing, raises on import or defines no flow.
Each of these failed silently before (issue 12): a file named like a built-in flow ran the built-in, a module-level
KFP pipeline compiled for EKS carried GKE selectors, a user component named `train` got xpuflow's spot GPU."""

# no `from __future__ import annotations`: KFP reads the real annotations of the component below

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
import user_project
import yaml

ROOT = Path(__file__).resolve().parent.parent
VERBS = (("run",), ("compile", "--backend", "kfp", "--cluster", "gke", "-o", "OUT"),
         ("compile", "--backend", "airflow", "--cluster", "gke", "-o", "OUT"),
         ("compile", "--backend", "k8s", "--cluster", "gke", "-o", "OUT"),
         ("plan", "--cluster", "gke"), ("lint", "--cluster", "gke"), ("graph", "-o", "OUT"))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return user_project.make(tmp_path_factory)


xpuflow = user_project.cli


def verb(args: tuple[str, ...], target: str, out: Path) -> list[str]:
    suffix = {"kfp": ".yaml", "airflow": ".py", "k8s": ".yaml"}.get(args[2] if len(args) > 2 else "", ".svg")
    return [args[0], target, *[str(out / f"o{suffix}") if a == "OUT" else a for a in args[1:]]]


def refused(proc: subprocess.CompletedProcess, *says: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for text in says:
        assert text in proc.stderr, proc.stderr


@pytest.mark.parametrize("args", VERBS, ids=lambda a: "-".join(a[:3:2]))
def test_every_verb_refuses_a_bad_file_in_one_line(project, tmp_path, args):
    (tmp_path / "train_tpu.py").write_text("raise RuntimeError('the user broke it')\n")  # named like a built-in
    (tmp_path / "empty.py").write_text("X = 1\n")
    refused(xpuflow(project, *verb(args, str(tmp_path / "missing.py"), tmp_path)), "missing.py", "no such file")
    refused(xpuflow(project, *verb(args, str(tmp_path / "train_tpu.py"), tmp_path)),
            "train_tpu.py", "raised RuntimeError on import: the user broke it")
    says = "defines no @flow" if args[:3] != VERBS[1][:3] else "defines no @flow, no build(cluster)"
    refused(xpuflow(project, *verb(args, str(tmp_path / "empty.py"), tmp_path)), "empty.py", says)
    refused(xpuflow(project, *verb(args, "flows/nightly.py:nighty", tmp_path)), "no flow named 'nighty'",
            "Did you mean 'acme_nightly'?")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("o.")]  # nothing written


def test_a_user_file_named_like_a_built_in_is_the_users(project, tmp_path):
    mine = tmp_path / "train_tpu.py"
    mine.write_text((project / "flows" / "nightly.py").read_text())
    plan = xpuflow(project, "plan", str(mine), "--cluster", "eks")
    assert plan.returncode == 0, plan.stderr
    assert "acme_ml" not in plan.stderr and "make_data" in plan.stdout and "preprocess" not in plan.stdout
    lint = xpuflow(project, "lint", str(mine), "--cluster", "eks")
    assert lint.returncode == 0 and lint.stdout.splitlines()[-1].startswith("acme_nightly on eks")
    graph = xpuflow(project, "graph", f"{mine}:acme_nightly", "-o", str(tmp_path / "g.svg"), "--cluster", "generic")
    assert graph.returncode == 0 and "fit" in (tmp_path / "g.svg").read_text()


NATIVE = '''
import os

from kfp import dsl

from xpuflow import Compute
from xpuflow.kfp import placed


@dsl.component(base_image="python:3.11-slim")
def train(epochs: int = 1) -> int:
    return epochs


@dsl.pipeline(name="native")
def pipeline(epochs: int = 1):
    placed(train(epochs=epochs), {cluster}, compute=Compute.gpu(count=1, memory="8Gi"))
'''


def test_compile_kfp_of_a_module_level_pipeline_honours_the_cluster(project, tmp_path):
    follows = tmp_path / "follows.py"
    follows.write_text(textwrap.dedent(NATIVE.format(cluster="os.environ.get('XPUFLOW_CLUSTER', 'gke')")))
    proc = xpuflow(project, "compile", str(follows), "--backend", "kfp", "--cluster", "eks", "-o", str(tmp_path / "p.yaml"))
    assert proc.returncode == 0 and "cluster eks" in proc.stdout, proc.stderr
    platform = list(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))[1]["platforms"]["kubernetes"]
    labels = platform["deploymentSpec"]["executors"]["exec-train"]["nodeSelector"]["labels"]
    assert any(k.startswith("karpenter") for k in labels) and not any("gke" in k for k in labels), labels
    built = tmp_path / "built.py"  # build(cluster): called with --cluster
    built.write_text(textwrap.dedent(NATIVE.format(cluster="cluster")).replace(
        '@dsl.pipeline(name="native")\ndef pipeline(epochs: int = 1):', 'def build(cluster):\n  @dsl.pipeline(name="native")\n  def pipeline(epochs: int = 1):').replace(
        "\n    placed(train(", "\n      placed(train(") + "\n  return pipeline\n")
    proc = xpuflow(project, "compile", str(built), "--backend", "kfp", "--cluster", "aks", "-o", str(tmp_path / "b.yaml"))
    assert proc.returncode == 0, proc.stderr
    platform = list(yaml.safe_load_all((tmp_path / "b.yaml").read_text()))[1]["platforms"]["kubernetes"]
    assert "kubernetes.azure.com/agentpool" in json.dumps(platform["deploymentSpec"]["executors"]["exec-train"])
    pinned = tmp_path / "pinned.py"
    pinned.write_text(textwrap.dedent(NATIVE.format(cluster="'gke'")))
    refused(xpuflow(project, "compile", str(pinned), "--backend", "kfp", "--cluster", "eks", "-o", str(tmp_path / "q.yaml")),
            "places tasks on cluster 'gke', not 'eks'", "Fix: define build(cluster)")
    assert not (tmp_path / "q.yaml").exists()


def test_placed_never_matches_a_component_by_name():
    from kfp import dsl

    from xpuflow import Compute, FlowError
    from xpuflow.kfp import components as xc
    from xpuflow.kfp import placed

    @dsl.component(base_image="python:3.11-slim")
    def train(epochs: int = 1) -> int:  # a user's own component, named like xpuflow's
        return epochs

    seen = {}

    @dsl.pipeline(name="mine")
    def mine():
        with pytest.raises(FlowError, match=r"component 'train' was not made by xpuflow.*default=Compute"):
            placed(train(), "gke")
        seen["default"] = placed(train(), "gke", default=Compute.cpu(cpu="1", memory="1Gi"))
        seen["ours"] = placed(xc.train(data=xc.preprocess().output), "gke")

    assert seen["default"].container_spec.resources.accelerator_count is None  # no spot GPU by name
    assert seen["ours"].container_spec.resources.accelerator_count == "1"  # xpuflow's train carries its Compute
