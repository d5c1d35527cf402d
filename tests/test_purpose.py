"""``purpose=`` is what a step does; "pool" means the cluster's node pool (and Airflow's own pool).

``pool=``, the old name of ``purpose=``, is accepted for one release with a DeprecationWarning.
"""

from __future__ import annotations

import warnings

import pytest

from xpuflow import Cluster, Compute, ComputeError


@pytest.mark.parametrize("build", [
    lambda **kw: Compute.cpu(**kw),
    lambda **kw: Compute.gpu(model="l4", **kw),
    lambda **kw: Compute.tpu(version="v5e", topology="2x4", **kw),
    lambda **kw: Compute.npu(device="intel-npu", **kw),
], ids=["cpu", "gpu", "tpu", "npu"])
def test_purpose_is_the_name_and_pool_a_deprecated_alias(build):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name warns about nothing
        new = build(purpose="inference")
    assert new.purpose == "inference"
    with pytest.warns(DeprecationWarning, match=r"pool= is deprecated .*write purpose='inference'") as record:
        old = build(pool="inference")
    assert old == new
    assert record[0].filename == __file__  # the warning points at the caller's line
    with pytest.raises(ComputeError, match=r"pool='general' is not valid: unset when purpose= is given .*drop pool=") as e:
        build(purpose="inference", pool="general")
    assert "\n" not in str(e.value)


def test_default_purposes_and_the_shm_default_follow_purpose():
    assert (Compute.cpu().purpose, Compute.gpu().purpose, Compute.npu(device="intel-npu").purpose) == \
        ("general", "training", "inference")
    assert Compute.gpu().shm is not None and Compute.gpu(purpose="inference").shm is None


def test_replace_and_the_old_attribute():
    c = Compute.gpu(model="l4")
    assert c.replace(purpose="inference").purpose == "inference"
    with pytest.warns(DeprecationWarning, match=r"purpose="):
        assert c.replace(pool="inference").purpose == "inference"
    with pytest.warns(DeprecationWarning, match=r"Compute\.pool is deprecated: read Compute\.purpose"):
        assert c.pool == "training"


def test_an_unknown_purpose_names_purpose():
    with pytest.raises(ComputeError, match=r"purpose='serving' is not valid: one of general, training, inference"):
        Compute.gpu(purpose="serving")


def test_a_purpose_no_pool_serves_says_purpose():
    from xpuflow import PlacementError

    with pytest.raises(PlacementError, match=r"not purpose='training'\. Fix: set purpose= to one of those"):
        Cluster.load("gke").place(Compute.gpu(model="a100-40gb", mig="1g.5gb"))


def test_a_steps_file_says_purpose(tmp_path):
    from xpuflow.plan import load_steps_file

    steps = tmp_path / "steps.yaml"
    steps.write_text("steps:\n  embed: {kind: gpu, model: l4, purpose: inference}\n")
    assert load_steps_file(steps)["embed"].purpose == "inference"
