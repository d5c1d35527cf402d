"""Property-based tests (hypothesis): quantities, Compute declarations, cluster-file loading.

Whatever the input, the outcome is one of two: a value within the Kubernetes API's bounds,
or an xpuflow error of one short line. Never another exception, never a hang.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from xpuflow import ArgumentError, Cluster, ClusterFileError, Compute, ComputeError, PlacementError, Security
from manifests import numbers

from xpuflow.quantity import parse_cpu, parse_memory
from xpuflow.render import kubernetes

MAX_INT64 = 2**63 - 1
MAX_INT32 = 2**31 - 1
# what the API server accepts as a quantity (k8s.io/apimachinery resource.quantity regexp)
K8S_QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(\d+(\.\d*)?|\.\d+)))?", re.ASCII)
BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# quantity-shaped text: numbers, suffixes and exponents of any size, plus noise
quantity_text = st.one_of(
    st.text(max_size=40),
    st.builds(lambda n, s: f"{n}{s}", st.integers(min_value=-10, max_value=10**25),
              st.sampled_from(["", "m", "k", "M", "G", "T", "P", "E", *BINARY, "e3", "e-3", "E18", "B", "GB", " "])),
    st.builds(lambda m, e: f"{m}e{e}", st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
              st.integers(min_value=-(10**7), max_value=10**7)),
    st.builds(lambda d: "1" + "0" * d, st.integers(min_value=0, max_value=200)),
)
raw_values = st.one_of(quantity_text, st.integers(), st.floats(), st.none(), st.booleans(),
                       st.integers(min_value=-(2**80), max_value=2**80).map(lambda i: i * 10**30))


def one_line(error: Exception) -> None:
    message = str(error)
    assert message and "\n" not in message and len(message) < 600, message


@FAST
@given(raw_values)
@example("1e1000000")
@example("1e999999")
@example("1" * 100_000)
@example(10**5000)
@example(float("nan"))
@example(float("inf"))
def test_memory_is_within_bounds_or_refused_in_one_line(raw):
    try:
        q = parse_memory("memory", raw)
    except ComputeError as e:
        one_line(e)
        return
    assert 0 < q.value <= MAX_INT64 and q.value == q.value.to_integral_value()
    assert K8S_QUANTITY.fullmatch(q.text), q.text


@FAST
@given(raw_values)
@example("1e1000000")
@example("0.0005")
@example("9223372036854775808m")
def test_cpu_is_within_bounds_or_refused_in_one_line(raw):
    try:
        q = parse_cpu("cpu", raw)
    except ComputeError as e:
        one_line(e)
        return
    millis = q.value * 1000
    assert 1 <= millis <= MAX_INT64 and millis == millis.to_integral_value()
    assert K8S_QUANTITY.fullmatch(q.text), q.text


@FAST
@given(st.integers(min_value=1, max_value=MAX_INT64 // 2**60), st.sampled_from(sorted(BINARY)))
def test_binary_suffixes_are_exact(n, suffix):
    value = n * BINARY[suffix]
    if value > MAX_INT64:
        return
    assert parse_memory("memory", f"{n}{suffix}").value == value


@FAST
@given(st.integers(min_value=1, max_value=MAX_INT64))
def test_every_int64_byte_count_round_trips(n):
    assert parse_memory("memory", n).value == n
    assert parse_memory("memory", str(n)).text == str(n)


@FAST
@given(st.integers(min_value=1, max_value=10**4), st.sampled_from(sorted(DECIMAL)),
       st.integers(min_value=0, max_value=3))
def test_decimal_suffixes_and_exponents_agree(n, suffix, shift):
    exponent = len(str(DECIMAL[suffix])) - 1
    if n * DECIMAL[suffix] > MAX_INT64:
        return
    assert parse_memory("memory", f"{n}{suffix}").value == parse_memory("memory", f"{n}e{exponent}").value
    assert parse_memory("memory", f"{n * 10**shift}").value == parse_memory("memory", f"{n}e{shift}").value


@FAST
@given(st.integers(min_value=1, max_value=10**6))
def test_millicores_and_cores_agree(m):
    assert parse_cpu("cpu", f"{m}m").value == Decimal(m) / 1000 == parse_cpu("cpu", str(Decimal(m) / 1000)).value



UNSIZED = Cluster.from_dict({"name": "unsized", "node_pools": [{"name": "any"}]}, source="unsized")
ints = st.one_of(st.integers(min_value=-5, max_value=100), st.integers(), st.sampled_from([MAX_INT32, MAX_INT32 + 1,
                 MAX_INT64, MAX_INT64 + 1, 10**30]), st.floats(), st.none(), st.booleans())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cpu=st.one_of(st.sampled_from(["1", "250m", 2, "9223372036854775807m"]), raw_values),
       memory=st.one_of(st.sampled_from(["1Gi", 10**9, "7Ei", str(MAX_INT64)]), raw_values),
       timeout=ints, retries=ints, grace=ints, uid=ints, ttl=ints)
def test_a_compute_declaration_renders_bounded_numbers_or_is_refused(cpu, memory, timeout, retries, grace, uid, ttl):
    try:
        security = Security(run_as_user=uid, run_as_group=uid, run_as_non_root=uid != 0)
        compute = Compute.cpu(cpu=cpu, memory=memory, timeout=timeout, retries=retries, grace_period=grace,
                              security=security)
        job = kubernetes.job(UNSIZED.place(compute), name="p", image="i", command=["x"], ttl_seconds_after_finished=ttl)
    except (ComputeError, PlacementError, ArgumentError) as e:
        one_line(e)
        return
    assert all(abs(n) <= MAX_INT64 for n in numbers(job)), job
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] <= MAX_INT32
    for value in pod["containers"][0]["resources"]["limits"].values():
        assert K8S_QUANTITY.fullmatch(value), value


# ------------------------------------------------------------------ cluster files
yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
yaml_values = st.recursive(yaml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=20)
pool_keys = st.sampled_from(["name", "cpu", "memory", "gpu", "npu", "tpu", "price", "labels", "taints", "purpose",
                             "capacity", "exclude_by", "description", "instance_type"])


def pool_values(key: str):
    specific = {
        "name": st.sampled_from(["cpu", "gpu", "Bad_Name", ""]),
        "cpu": raw_values, "memory": raw_values,
        "gpu": st.fixed_dictionaries({"model": st.sampled_from(["l4", "a100-40gb", "nope"]), "count": ints}),
        "npu": st.fixed_dictionaries({"device": st.sampled_from(["intel-npu", "nope"]), "count": ints}),
        "price": st.fixed_dictionaries({}, optional={"on_demand": st.one_of(st.floats(), ints),
                                                     "spot": st.one_of(st.floats(), ints)}),
    }
    return specific.get(key, yaml_values)


profiles = st.fixed_dictionaries(
    {"name": st.sampled_from(["lab", "Lab", "x" * 70]),
     "node_pools": st.lists(st.dictionaries(pool_keys, st.none(), min_size=1).flatmap(
         lambda keys: st.fixed_dictionaries({k: pool_values(k) for k in keys})), max_size=3)},
    optional={"spot": st.fixed_dictionaries({"grace_period": ints}), "pool_label": yaml_values,
              "provider": st.sampled_from(["gke", "other", "nope"])},
)


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    """One file, rewritten by every example (a temporary directory per example costs more than the load)."""
    return tmp_path_factory.mktemp("profiles") / "cluster.yaml"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profiles)
def test_a_generated_profile_loads_or_is_refused_in_one_line(profile_path, data):
    path = profile_path
    path.write_text(yaml.safe_dump(data))
    try:
        cluster = Cluster.load(path)
    except ClusterFileError as e:
        one_line(e)
        return
    for pool in cluster.node_pools:
        for price in (pool.price_on_demand, pool.price_spot):
            assert price is None or 0 <= price <= 1e9
        assert pool.accelerator is None or pool.accelerator.count <= MAX_INT32


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                 st.lists(st.sampled_from(["a: &a [x, x]\n", "b: &b [*a, *a, *a]\n", "name: lab\n", "- *b\n", "? [k]\n",
                                           "<<: *a\n", "k: v\nk: w\n", "\t", "{", "]", "&x ", "*x", ":\n", "---\n"]),
                          max_size=12).map(lambda parts: "".join(parts).encode())))
def test_any_bytes_load_or_are_refused_in_one_line_without_echo(profile_path, content):
    path = profile_path
    path.write_bytes(content)
    try:
        Cluster.load(path)
    except ClusterFileError as e:
        one_line(e)


compute_keys = st.sampled_from(["count", "model", "vendor", "mig", "cpu", "memory", "shm", "purpose", "spot", "timeout",
                                "retries", "grace_period", "cpu_limit", "memory_limit", "ephemeral_storage",
                                "priority_class", "version", "topology", "device", "chips_per_host", "nope"])
compute_dicts = st.builds(
    lambda kind, rest: {"kind": kind, **rest},
    st.sampled_from(["cpu", "gpu", "tpu", "npu", "xpu"]),
    st.dictionaries(compute_keys, st.one_of(raw_values, ints, st.sampled_from(
        ["l4", "a100-40gb", "1g.5gb", "v5e", "2x4", "intel-npu", "training", "nvidia"])), max_size=6),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(compute_dicts)
@example({"kind": "gpu", "count": 2**31})
@example({"kind": "tpu", "version": "v5e", "topology": "99999999999999999999x2"})
@example({"kind": "cpu", "memory": "1e999999", "timeout": 10**30})
def test_any_compute_dict_builds_within_bounds_or_is_refused_in_one_line(data):
    try:
        compute = Compute.from_dict(data)
    except ComputeError as e:
        one_line(e)
        return
    for q in (compute.cpu_request, compute.cpu_limit):
        assert 1 <= q.value * 1000 <= MAX_INT64
    for q in (compute.memory_request, compute.memory_limit, compute.ephemeral_storage, compute.shm):
        assert q is None or 1 <= q.value <= MAX_INT64
    assert compute.timeout is None or 1 <= compute.timeout <= MAX_INT64
    assert compute.accelerator is None or 1 <= compute.accelerator.count <= MAX_INT32


@FAST
@given(st.integers(min_value=1, max_value=2**53))
@example(123_456_789)
def test_a_whole_float_keeps_every_digit(n):
    """memory=123456789.0 used to become '1.23457e+08' (123457000 bytes): six significant digits."""
    q = parse_memory("memory", float(n))
    assert q.value == n and int(Decimal(q.text)) == n
