"""One error class per kind of mistake: ``ComputeError`` only for a bad ``Compute`` declaration.

A caller that catches ``ComputeError`` to report "fix your Compute" must not be handed a
cluster that cannot fit it, a bad manifest name or a malformed steps file.
"""

from __future__ import annotations

import pytest

from xpuflow import ArgumentError, Cluster, Compute, ComputeError, PlacementError, RenderError
from xpuflow.errors import PipelineFileError
from xpuflow.plan import load_steps_file
from xpuflow.render import jobset, kubernetes, trainjob

COMMAND = {"image": "ghcr.io/me/step:1", "command": ["python", "-m", "me.step"]}


def test_a_fit_failure_is_a_placement_error_not_a_compute_error():
    with pytest.raises(PlacementError) as info:
        Cluster.load("aks").place(Compute.gpu(model="h100-80gb"))
    assert not isinstance(info.value, ComputeError)


@pytest.mark.parametrize("build", [
    lambda p: kubernetes.job(p, name="train", ttl_seconds_after_finished=-1, **COMMAND),
    lambda p: trainjob.trainjob(p, name="train", num_nodes=0, **COMMAND),
    lambda p: trainjob.trainjob(p, name="Not_A_Label", num_nodes=1, **COMMAND),
    lambda p: jobset.jobset(Cluster.load("gke").place(Compute.tpu(version="v5e", topology="4x4")), name="x" * 70,
                            **COMMAND),
], ids=["ttl", "num_nodes", "trainjob name", "jobset name"])
def test_a_bad_renderer_argument_is_not_a_compute_error(build):
    p = Cluster.load("gke").place(Compute.gpu())
    with pytest.raises(ArgumentError) as info:
        build(p)
    assert not isinstance(info.value, ComputeError)
    assert isinstance(info.value, ValueError) and isinstance(info.value, RenderError)  # callers' except clauses hold
    assert "\n" not in str(info.value)


def test_a_malformed_steps_file_is_a_file_error_not_a_compute_error(tmp_path):
    bad = tmp_path / "steps.yaml"
    bad.write_text("jobs: {}\n")
    with pytest.raises(PipelineFileError, match=r"steps\.yaml: expected a mapping 'steps:'") as info:
        load_steps_file(bad)
    assert not isinstance(info.value, ComputeError) and isinstance(info.value, ValueError)


def test_a_bad_compute_inside_a_steps_file_stays_a_compute_error(tmp_path):
    bad = tmp_path / "steps.yaml"
    bad.write_text("steps:\n  train: {kind: gpu, count: 0}\n")
    with pytest.raises(ComputeError, match=r"steps\.train: Compute\.gpu: count=0"):
        load_steps_file(bad)
