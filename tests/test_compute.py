"""Compute: defaults per kind, TPU shape facts, immutability, replace, from_dict."""

from __future__ import annotations

import dataclasses

import pytest

from xpuflow import Compute, ComputeError, Security
from xpuflow.accelerators import Gpu, Npu, Tpu


def test_cpu_defaults_are_guaranteed_qos():
    c = Compute.cpu(cpu="2", memory="4Gi")
    assert (c.kind, c.cpu_request.text, c.memory_request.text) == ("cpu", "2", "4Gi")
    assert c.cpu_limit == c.cpu_request and c.memory_limit == c.memory_request
    assert c.accelerator is None and c.shm is None and c.purpose == "general" and c.hosts == 1


def test_gpu_training_gets_shared_memory_inference_does_not():
    train = Compute.gpu(count=2, model="a100-80gb", memory="64Gi")
    assert isinstance(train.accelerator, Gpu) and train.accelerator.count == 2
    assert train.shm.text == "8Gi"  # a quarter of the limit, capped at 8Gi
    assert Compute.gpu(memory="16Gi").shm.text == "4Gi"
    assert Compute.gpu(purpose="inference").shm is None
    assert Compute.gpu(shm=None).shm is None


def test_names_are_case_insensitive_and_normalised():
    c = Compute.gpu(model="L4", vendor="NVIDIA")
    assert (c.accelerator.model, c.accelerator.vendor) == ("l4", "nvidia")
    assert Compute.gpu(model="A100-40GB", mig="MIG-1g.5gb").accelerator.mig == "1g.5gb"


@pytest.mark.parametrize(
    ("version", "topology", "chips", "per_host", "hosts", "machine"),
    [
        ("v5e", "1x1", 1, 1, 1, "ct5lp-hightpu-1t"),
        ("v5e", "2x2", 4, 4, 1, "ct5lp-hightpu-4t"),
        ("v5e", "2x4", 8, 8, 1, "ct5lp-hightpu-8t"),
        ("v5e", "4x4", 16, 4, 4, "ct5lp-hightpu-4t"),
        ("v5e", "16x16", 256, 4, 64, "ct5lp-hightpu-4t"),
        ("v6e", "2x4", 8, 8, 1, "ct6e-standard-8t"),
        ("v6e", "8x16", 128, 4, 32, "ct6e-standard-4t"),
        ("v4", "2x2x1", 4, 4, 1, "ct4p-hightpu-4t"),
        ("v4", "2x2x2", 8, 4, 2, "ct4p-hightpu-4t"),
        ("v5p", "2x2x1", 4, 4, 1, "ct5p-hightpu-4t"),
        ("v5p", "4x4x4", 64, 4, 16, "ct5p-hightpu-4t"),
    ],
)
def test_tpu_shapes(version, topology, chips, per_host, hosts, machine):
    c = Compute.tpu(version=version, topology=topology)
    assert (c.chips, c.chips_per_host, c.hosts) == (chips, per_host, hosts)
    assert c.accelerator.shape.machine_type == machine
    assert c.accelerator.shape.multi_host is (hosts > 1)
    assert c.chips == c.chips_per_host * c.hosts


def test_non_tpu_compute_has_no_chips():
    assert Compute.gpu().chips is None and Compute.cpu().chips_per_host is None


def test_npu():
    c = Compute.npu(device="Ascend-910", count=2)
    assert isinstance(c.accelerator, Npu) and c.accelerator.device == "ascend-910" and c.purpose == "inference"


def test_immutable_and_replace_validates():
    c = Compute.gpu(model="l4")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.spot = True  # type: ignore[misc]
    spot = c.replace(spot=True, memory="32Gi")
    assert spot.spot and spot.memory_request.text == "32Gi" and not c.spot
    assert spot.memory_limit.text == "32Gi"  # a defaulted limit follows its request
    assert c.replace(memory_limit="32Gi").replace(memory="20Gi").memory_limit.text == "32Gi"
    with pytest.raises(ComputeError, match=r"memory='32GB'"):
        c.replace(memory="32GB")
    with pytest.raises(ComputeError, match=r"accelerator=.*Gpu for a gpu Compute"):
        c.replace(accelerator=Tpu(version="v5e", topology="2x2"))


def test_from_dict_round_trip_and_errors():
    c = Compute.from_dict({"kind": "gpu", "count": 2, "model": "l4", "spot": True, "security": {"run_as_user": 2000, "run_as_group": 2000}})
    assert c == Compute.gpu(count=2, model="l4", spot=True, security=Security(run_as_user=2000, run_as_group=2000))
    with pytest.raises(ComputeError, match=r"steps\.train: kind='gpus' .*Did you mean 'gpu'\?"):
        Compute.from_dict({"kind": "gpus"}, where="steps.train")
    with pytest.raises(ComputeError, match=r"steps\.train: Compute\.gpu: option='topology' is not valid"):
        Compute.from_dict({"kind": "gpu", "topology": "2x2"}, where="steps.train")


def test_hardware_description():
    assert Compute.gpu(count=2, model="l4").hardware == "2x nvidia l4"
    assert Compute.gpu().hardware == "1x nvidia gpu (any model)"
    assert Compute.tpu(version="v5p", topology="2x2x2").hardware == "tpu v5p 2x2x2 (8 chips, 2 hosts)"
    assert Compute.cpu(cpu="500m", memory="1Gi").hardware == "cpu 500m / 1Gi"


def test_security_defaults_are_restricted_and_overridable():
    assert Security().restricted
    relaxed = Security(run_as_non_root=False, run_as_user=0, allow_privilege_escalation=True)
    assert not relaxed.restricted
    assert Compute.cpu(security=relaxed).security is relaxed


@pytest.mark.parametrize("field", ["run_as_user", "run_as_group", "retries", "timeout", "grace_period"])
@pytest.mark.parametrize("value, shown", [(True, "True"), (1.0, "1.0"), (-1, "-1"), (2**64, str(2**64)),
                                          (10**400, "<an integer of 1329 bits>")])
def test_whole_number_fields_refuse_bools_floats_and_out_of_range_ints_in_one_line(field, value, shown):
    """Security lives in xpuflow.security and is still importable from xpuflow.compute; its UID/GID and Compute's
    retries, timeout and grace_period share one whole-number check (errors.whole_number)."""
    from xpuflow.compute import Security as FromCompute

    assert FromCompute is Security
    make = (lambda: Security(**{field: value})) if field.startswith("run_as") else lambda: Compute.cpu(**{field: value})
    with pytest.raises(ComputeError) as caught:
        make()
    where = "Security" if field.startswith("run_as") else "Compute.cpu"
    assert str(caught.value).startswith(f"{where}: {field}={shown} is not valid: "), str(caught.value)
    assert "\n" not in str(caught.value)


def test_whole_number_fields_take_a_sweeps_numpy_integers_as_plain_ints():
    """A sweep computes retries or a UID with numpy: taken as the int it is (train's own options do the same), and
    rendered as one (YAML cannot write a numpy integer)."""
    import numpy as np
    import yaml

    from xpuflow import Cluster
    from xpuflow.render import kubernetes

    compute = Compute.cpu(retries=np.int64(3), timeout=np.int32(600), grace_period=np.uint16(30),
                          security=Security(run_as_user=np.int64(1000), run_as_group=np.int16(1000)))
    values = (compute.retries, compute.timeout, compute.grace_period, compute.security.run_as_user,
              compute.security.run_as_group)
    assert values == (3, 600, 30, 1000, 1000) and {type(v) for v in values} == {int}
    manifest = kubernetes.job(Cluster.load("gke").place(compute), name="x", image="img@sha256:" + "0" * 64)
    spec = yaml.safe_load(yaml.safe_dump(manifest))["spec"]
    pod = spec["template"]["spec"]
    assert spec["backoffLimit"] == 3 and spec["activeDeadlineSeconds"] == 600
    assert pod["securityContext"]["runAsUser"] == 1000 and pod["terminationGracePeriodSeconds"] == 30
    with pytest.raises(ComputeError, match=r"^Compute.cpu: retries=np.int64\(21\) is not valid: a whole number"):
        Compute.cpu(retries=np.int64(21))

