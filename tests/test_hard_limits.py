"""Every number that reaches a manifest is bounded; quantities parse in bounded time and memory.

Each case is refused with one short line naming the field, or accepted at the exact
bound and rendered into a manifest that a strict validator accepts.
"""

from __future__ import annotations

import kubernetes_validate
import pytest

from xpuflow import ArgumentError, Cluster, Compute, ComputeError, Security
from manifests import numbers

from xpuflow.quantity import parse_cpu, parse_memory
from xpuflow.render import jobset, kubernetes, trainjob

MAX_INT64 = 2**63 - 1  # the Kubernetes API's bounds, written here independently of the code under test
MAX_INT32 = 2**31 - 1

K8S = "1.35"
COMMAND = dict(image="ghcr.io/example/step:1", command=["xpuflow", "step", "train"])


def refused(build, pattern: str, error: type[Exception] = ComputeError) -> str:
    with pytest.raises(error, match=pattern) as info:
        build()
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    return message



CASES = [
    ("cpu 1e1000000 (decimal.Overflow)", lambda: Compute.cpu(cpu="1e1000000"), r"cpu='1e1000000' .*at most 9223372036854775807m"),
    ("memory 1e999999 (37 s)", lambda: Compute.cpu(memory="1e999999"), r"memory='1e999999' .*at most 9223372036854775807 bytes"),
    ("memory exponent 10**40 digits", lambda: Compute.cpu(memory="1e" + "9" * 40), r"at most 9223372036854775807 bytes"),
    ("memory 2^63", lambda: Compute.cpu(memory=2**63), r"memory=9223372036854775808 .*at most"),
    ("memory 8Ei is 2^63", lambda: Compute.cpu(memory="8Ei"), r"memory='8Ei' .*at most"),
    ("memory an int of 5000 digits", lambda: Compute.cpu(memory=10**5000), r"memory=<an integer of \d+ bits> .*at most"),
    ("memory a float 1e300", lambda: Compute.cpu(memory=1e300), r"memory=1e\+300 .*at most"),
    ("cpu 2^63 millicores", lambda: Compute.cpu(cpu="9223372036854775808m"), r"at most 9223372036854775807m"),
    ("cpu 1e30 cores", lambda: Compute.cpu(cpu="1e30"), r"at most 9223372036854775807m"),
    ("cpu 1E is exa, not a CPU unit", lambda: Compute.cpu(cpu="1E"), r"cpu='1E' .*suffix 'E' does not apply here"),
    ("cpu finer than 1m", lambda: Compute.cpu(cpu="0.0015"), r"cpu='0\.0015' .*whole millicores.*write it as '2m'"),
    ("cpu finer than 1m past 28 digits", lambda: Compute.cpu(cpu="1." + "0" * 30 + "1"), r"whole millicores"),
    ("cpu with a trailing newline", lambda: Compute.cpu(cpu="2\n"), r"cpu='2\\n' is not valid"),
    ("cpu in Arabic-Indic digits", lambda: Compute.cpu(cpu="\u0662"), r"cpu='\u0662' is not valid"),
    ("memory a megabyte of digits", lambda: Compute.cpu(memory="1" * 10**6), r"memory='1111.*\.\.\. \(1000002 characters\) .*at most 64 characters"),
    ("memory limit 2^63", lambda: Compute.cpu(memory_limit=2**63), r"memory_limit=9223372036854775808 .*at most"),
    ("shm 1e99", lambda: Compute.gpu(shm="1e99"), r"shm='1e99' .*at most"),
    ("ephemeral storage 1e40", lambda: Compute.cpu(ephemeral_storage="1e40"), r"ephemeral_storage='1e40' .*at most"),
    ("timeout 10**30", lambda: Compute.cpu(timeout=10**30), r"timeout=1000000000000000000000000000000 .*<= 9223372036854775807"),
    ("timeout 2^63", lambda: Compute.cpu(timeout=2**63), r"timeout=9223372036854775808 "),
    ("timeout an int of 5000 digits", lambda: Compute.cpu(timeout=10**5000), r"timeout=<an integer of \d+ bits> is not valid"),
    ("run_as_user 2^31", lambda: Security(run_as_user=2**31), r"run_as_user=2147483648 .*<= 2147483647"),
    ("run_as_group 2^31", lambda: Security(run_as_group=2**31), r"run_as_group=2147483648 .*<= 2147483647"),
    ("gpu count 2^31", lambda: Compute.gpu(count=2**31), r"count=2147483648 .*at most 2147483647 GPUs"),
    ("npu count 10**30", lambda: Compute.npu(device="intel-npu", count=10**30), r"count=10+ .*at most 2147483647 devices"),
]


@pytest.mark.parametrize(("case", "build", "pattern"), CASES, ids=[c[0] for c in CASES])
def test_numbers_beyond_what_kubernetes_holds_are_refused_in_one_line(case, build, pattern):
    refused(build, pattern)


def test_quantities_at_the_bound_are_kept_exactly():
    assert parse_memory("memory", MAX_INT64).value == MAX_INT64
    assert parse_memory("memory", "7Ei").value == 7 * 2**60
    assert parse_cpu("cpu", "9223372036854775807m").value * 1000 == MAX_INT64
    assert parse_cpu("cpu", "0.001").text == "0.001"
    refused(lambda: parse_memory("memory", "0e999999"), r"greater than zero")  # 0 x 10^999999 is 0, computed as 0


def test_the_largest_values_render_into_manifests_that_validate(tmp_path):
    # a pool that states no node size, so nothing but the declaration bounds what reaches the manifest
    profile = tmp_path / "unsized.yaml"
    profile.write_text("name: unsized\nnode_pools:\n  - name: any\n")
    compute = Compute.cpu(cpu="9223372036854775807m", memory=MAX_INT64, timeout=MAX_INT64, ephemeral_storage="7Ei",
                          security=Security(run_as_user=MAX_INT32, run_as_group=MAX_INT32))
    job = kubernetes.job(Cluster.load(profile).place(compute), name="big", ttl_seconds_after_finished=MAX_INT32,
                         **COMMAND)
    assert job["spec"]["activeDeadlineSeconds"] == MAX_INT64
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == str(MAX_INT64)
    kubernetes_validate.validate(job, K8S, strict=True)
    assert all(abs(n) <= MAX_INT64 for n in numbers(job))


RENDERERS = [
    ("Job ttl 2^31", lambda p: kubernetes.job(p, name="t", ttl_seconds_after_finished=2**31, **COMMAND),
     r"Job 't': ttl_seconds_after_finished=2147483648 .*<= 2147483647"),
    ("Job ttl negative", lambda p: kubernetes.job(p, name="t", ttl_seconds_after_finished=-1, **COMMAND),
     r"ttl_seconds_after_finished=-1 "),
    ("Job ttl a float", lambda p: kubernetes.job(p, name="t", ttl_seconds_after_finished=1.5, **COMMAND),
     r"ttl_seconds_after_finished=1\.5 "),
    ("TrainJob 2^31 nodes", lambda p: trainjob.trainjob(p, name="t", num_nodes=2**31, **COMMAND),
     r"num_nodes=2147483648 .*at most 2147483647 nodes"),
]


@pytest.mark.parametrize(("case", "render", "pattern"), RENDERERS, ids=[c[0] for c in RENDERERS])
def test_renderer_numbers_are_bounded(case, render, pattern):
    placement = Cluster.load("gke").place(Compute.gpu())
    refused(lambda: render(placement), pattern, ArgumentError)  # a renderer's argument, not a Compute


def test_jobset_ttl_is_bounded():
    placement = Cluster.load("gke").place(Compute.tpu(version="v5e", topology="4x4"))
    refused(lambda: jobset.jobset(placement, name="t", ttl_seconds_after_finished=10**30, **COMMAND),
            r"JobSet 't': ttl_seconds_after_finished=1000000000000000000000000000000 ", ArgumentError)


@pytest.mark.parametrize(("quota", "pattern"), [
    ("{nodes: 9223372036854775807}", r"kueue\.quotas\.cpu-general\.nodes: cpu=.* is not valid: at most"),
    ("{cpu: \"1e40\", memory: 1Gi}", r"kueue\.quotas\.cpu-general\.cpu: .*at most"),
])
def test_kueue_quotas_are_bounded(tmp_path, quota, pattern):
    """nodes x one node's cpu (8) rendered a ClusterQueue nominalQuota beyond int64."""
    from xpuflow import ClusterFileError
    from xpuflow.catalog import cluster_file_text

    text = cluster_file_text("gke").replace("cpu-general: {nodes: 10}", f"cpu-general: {quota}")
    profile = tmp_path / "gke.yaml"
    profile.write_text(text)
    with pytest.raises(ClusterFileError, match=pattern) as info:
        Cluster.load(profile)
    assert "\n" not in str(info.value)
