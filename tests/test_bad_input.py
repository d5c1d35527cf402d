"""Bad input is refused at declaration time with field, value, what is allowed and a fix.

One table, one assertion shape: the error type, and a regex over the message
that names the field and the offending value (and the suggestion, where the
value is a near miss).
"""

from __future__ import annotations

import re

import pytest

from xpuflow import Cluster, ClusterFileError, Compute, ComputeError, PlacementError, Security, XpuflowError

CASES = [
    # --- GPU counts
    ("gpu count zero", lambda: Compute.gpu(count=0), ComputeError, r"Compute\.gpu: count=0 .*whole number of GPUs >= 1"),
    ("gpu count negative", lambda: Compute.gpu(count=-2), ComputeError, r"count=-2 .*>= 1"),
    ("gpu count fractional", lambda: Compute.gpu(count=0.5), ComputeError, r"count=0\.5 .*MIG slice"),
    ("gpu count float whole", lambda: Compute.gpu(count=1.0), ComputeError, r"count=1\.0 .*whole number"),
    ("gpu count bool", lambda: Compute.gpu(count=True), ComputeError, r"count=True"),
    ("gpu count string", lambda: Compute.gpu(count="2"), ComputeError, r"count='2'"),
    # --- GPU models: unknown, prefixes of each other, wrong vendor
    ("gpu model unknown", lambda: Compute.gpu(model="v100"), ComputeError, r"model='v100' .*catalog"),
    ("gpu model l40 near l40s", lambda: Compute.gpu(model="l40"), ComputeError, r"model='l40' .*Did you mean 'l40s'\?"),
    ("gpu model a100 ambiguous", lambda: Compute.gpu(model="a100"), ComputeError, r"model='a100' .*Did you mean 'a100-40gb' or 'a100-80gb'\?"),
    ("gpu model typo", lambda: Compute.gpu(model="h100-80g"), ComputeError, r"Did you mean 'h100-80gb'\?"),
    ("gpu vendor unknown", lambda: Compute.gpu(vendor="nvida"), ComputeError, r"vendor='nvida' .*Did you mean 'nvidia'\?"),
    ("gpu model of other vendor", lambda: Compute.gpu(model="mi300x"), ComputeError, r"model='mi300x' .*vendor='amd'"),
    # --- MIG
    ("mig unknown for gpu", lambda: Compute.gpu(model="a100-40gb", mig="1g.10gb"), ComputeError,
     r"mig='1g\.10gb' .*a100-40gb: 1g\.5gb, 2g\.10gb, 3g\.20gb, 7g\.40gb"),
    ("mig on gpu without profiles", lambda: Compute.gpu(model="l4", mig="1g.5gb"), ComputeError, r"l4 has no MIG profiles"),
    ("mig without model", lambda: Compute.gpu(mig="1g.5gb"), ComputeError, r"mig='1g\.5gb' .*model"),
    # --- TPU
    ("tpu version unknown", lambda: Compute.tpu(version="v3", topology="2x2"), ComputeError, r"version='v3' .*v4, v5e, v5p, v6e"),
    ("tpu v5 is not v5e or v5p", lambda: Compute.tpu(version="v5", topology="2x2"), ComputeError, r"version='v5' .*Did you mean 'v5e' or 'v5p'\?"),
    ("tpu v5e topology of v5p", lambda: Compute.tpu(version="v5e", topology="2x2x1"), ComputeError,
     r"topology='2x2x1' .*a v5e topology: 1x1, 2x2, 2x4, 4x4"),
    ("tpu v5p topology of v5e", lambda: Compute.tpu(version="v5p", topology="2x4"), ComputeError,
     r"topology='2x4' .*a v5p topology: 2x2x1, 2x2x2"),
    ("tpu topology not a grid", lambda: Compute.tpu(version="v6e", topology="8 chips"), ComputeError,
     r"topology='8 chips' .*chip grid .*v6e: 1x1"),
    ("tpu topology unsupported size", lambda: Compute.tpu(version="v4", topology="3x3x3"), ComputeError,
     r"topology='3x3x3' .*v4 topology"),
    # --- quantities
    ("memory GB suffix", lambda: Compute.cpu(memory="16GB"), ComputeError, r"memory='16GB' .*no 'B' suffix: use 16Gi"),
    ("memory negative", lambda: Compute.cpu(memory="-1"), ComputeError, r"memory='-1' .*positive"),
    ("cpu with words", lambda: Compute.cpu(cpu="2 cores"), ComputeError, r"cpu='2 cores' .*'500m'"),
    ("cpu empty", lambda: Compute.cpu(cpu=""), ComputeError, r"cpu='' "),
    ("memory empty", lambda: Compute.gpu(memory=""), ComputeError, r"memory='' "),
    ("cpu zero", lambda: Compute.cpu(cpu=0), ComputeError, r"cpu=0 .*greater than zero"),
    ("memory millis", lambda: Compute.cpu(memory="500m"), ComputeError, r"memory='500m' .*suffix 'm' does not apply"),
    ("cpu Gi suffix", lambda: Compute.cpu(cpu="2Gi"), ComputeError, r"cpu='2Gi' .*suffix 'Gi' does not apply"),
    ("memory fractional bytes", lambda: Compute.cpu(memory="0.5"), ComputeError, r"memory='0\.5' .*whole number of bytes"),
    # --- limits and options
    ("memory limit below request", lambda: Compute.cpu(memory="4Gi", memory_limit="2Gi"), ComputeError,
     r"memory_limit='2Gi' .*at or above the request \(memory='4Gi'\)"),
    ("cpu limit below request", lambda: Compute.gpu(cpu="4", cpu_limit="3500m"), ComputeError, r"cpu_limit='3500m' .*cpu='4'"),
    ("shm not below memory limit", lambda: Compute.gpu(memory="4Gi", shm="4Gi"), ComputeError, r"shm='4Gi' .*less than the memory limit"),
    ("purpose unknown", lambda: Compute.gpu(purpose="train"), ComputeError, r"purpose='train' .*Did you mean 'training'\?"),
    ("retries negative", lambda: Compute.cpu(retries=-1), ComputeError, r"retries=-1 .*0 to 20"),
    ("timeout zero", lambda: Compute.cpu(timeout=0), ComputeError, r"timeout=0 .*seconds >= 1"),
    ("priority class bad name", lambda: Compute.cpu(priority_class="High Priority"), ComputeError, r"priority_class='High Priority'"),
    ("unknown option", lambda: Compute.cpu(memroy_limit="2Gi"), ComputeError, r"option='memroy_limit' .*Did you mean 'memory_limit'\?"),
    ("spot not bool", lambda: Compute.cpu(spot="yes"), ComputeError, r"spot='yes' .*True .*False .*'prefer'"),
    ("root with run_as_non_root", lambda: Security(run_as_user=0), ComputeError, r"run_as_user=0 .*non-zero UID"),
    # --- NPU
    ("npu device unknown", lambda: Compute.npu(device="hexagon"), ComputeError, r"device='hexagon' .*intel-npu"),
    ("npu near miss", lambda: Compute.npu(device="ascend-91"), ComputeError, r"Did you mean 'ascend-910'\?"),
    ("npu count zero", lambda: Compute.npu(device="intel-npu", count=0), ComputeError, r"count=0 .*devices >= 1"),
    # --- cluster choice (known names only)
    ("cluster name typo", lambda: Cluster.load("gcp"), ClusterFileError, r"cluster='gcp' .*gke"),
    ("cluster missing file", lambda: Cluster.load("/nonexistent/cluster.yaml"), ClusterFileError, r"cannot read the file"),
    # --- a GPU model the chosen cluster does not offer
    ("gpu model not on cluster", lambda: Cluster.load("aks").place(Compute.gpu(model="h100-80gb")), PlacementError,
     r"cluster 'aks' .*no node pool offers 1x nvidia h100-80gb\. Its gpu pools: 1x t4 \(gput4\)"),
    ("l4 asked, only l40s-like prefix", lambda: Cluster.load("eks").place(Compute.gpu(model="l4")), PlacementError,
     r"no node pool offers 1x nvidia l4\b"),
    ("tpu on a cluster without tpus", lambda: Cluster.load("eks").place(Compute.tpu(version="v5e", topology="1x1")),
     PlacementError, r"the cluster has no tpu pools"),
    ("gpu count beyond any node", lambda: Cluster.load("gke").place(Compute.gpu(count=16, model="h100-80gb")),
     PlacementError, r"fits no node's allocatable: 16x nvidia\.com/gpu requested, a node of 'gpu-h100-training' has 8"),
    ("purpose not served", lambda: Cluster.load("gke").place(Compute.gpu(model="a100-40gb", mig="1g.5gb")),
     PlacementError, r"serve inference, not purpose='training'\. Fix: set purpose="),
    ("spot not offered", lambda: Cluster.load("generic").place(Compute.gpu(model="l4", spot=True)),
     PlacementError, r"no training pool with 1x nvidia l4 runs spot nodes .*set spot=False or spot='prefer'"),
]


@pytest.mark.parametrize(("case", "build", "error", "pattern"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_a_clear_message(case, build, error, pattern):
    with pytest.raises(error) as info:
        build()
    assert isinstance(info.value, XpuflowError)
    assert re.search(pattern, str(info.value)), f"{case}: message was: {info.value}"


def test_value_errors_are_value_errors():
    with pytest.raises(ValueError):
        Compute.gpu(count=0)


def test_table_is_large_enough():
    # the issue asks for at least 30 table-driven cases
    assert len(CASES) >= 30


def test_messages_say_how_to_fix():
    with pytest.raises(ComputeError, match=r"Fix: .*Compute\.gpu\(model='a100-40gb', mig='1g\.5gb'\)"):
        Compute.gpu(count=0.5)
