"""Cluster files are loaded safely: regular files of bounded size, bounded alias expansion,
no duplicate keys, finite prices, and no file content in any message."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from profiles import GOOD

from xpuflow import Cluster, ClusterFileError, Compute

ROOT = Path(__file__).resolve().parents[1]
SECRET = "hunter2-do-not-echo"
# ten levels of ten aliases in one value: 10^10 strings once expanded, under 500 bytes as text
BOMB = "[" + ", ".join(f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 10 if i else ["lol"] * 10) + "]" for i in range(10)) + "]"


def load(tmp_path: Path, text: str | bytes, name: str = "cluster.yaml") -> Cluster:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return Cluster.load(path)


def refused(load_it, pattern: str) -> str:
    with pytest.raises(ClusterFileError, match=pattern) as info:
        load_it()
    message = str(info.value)
    assert "\n" not in message and len(message) < 600 and SECRET not in message, message
    return message


def load_in_child(path: str, *, memory_gib: int = 1, timeout: float = 60) -> subprocess.CompletedProcess:
    """Cluster.load in a child Python with its address space capped: a bomb there cannot take this machine's memory."""
    code = textwrap.dedent(f"""\
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({memory_gib} << 30, {memory_gib} << 30))
        from xpuflow import Cluster, ClusterFileError
        try:
            Cluster.load(sys.argv[1])
        except ClusterFileError as e:
            print(e)
            sys.exit(2)
        """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=timeout, env=env)


def test_the_good_profile_loads(tmp_path):
    assert [p.name for p in load(tmp_path, GOOD).node_pools] == ["cpu", "gpu"]


@pytest.mark.parametrize("where", ["name", "description", "labels"])
def test_an_alias_bomb_is_refused_before_it_expands(tmp_path, where):
    """The bomb used to be expanded (into the error message's repr) until 2.5 GB and MemoryError."""
    text = {
        "name": GOOD.replace("name: lab", f"name: {BOMB}"),
        "description": GOOD + f"description: {BOMB}\n",
        "labels": GOOD.replace("labels: {example.com/pool: cpu}", f"labels: {{example.com/pool: {BOMB}}}"),
    }[where]
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    proc = load_in_child(str(path))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "aliases expand to more than 100000 values" in proc.stdout, proc.stdout


def test_a_recursive_alias_is_refused(tmp_path):
    refused(lambda: load(tmp_path, "name: &a [*a]\nnode_pools: []\n"), r"line 1: an alias refers to a value that contains it")


def test_nesting_is_bounded(tmp_path):
    refused(lambda: load(tmp_path, "name: lab\ndescription: " + "[" * 200 + "]" * 200 + "\nnode_pools: []\n"),
            r"nested more than 64 levels deep")


DUPLICATES = [
    ("top-level key", GOOD + "name: other\n", r"line 12: key 'name' appears twice in one mapping"),
    ("pool key", GOOD.replace("    memory: 16Gi\n", "    memory: 16Gi\n    memory: 32Gi\n"),
     r"line 7: key 'memory' appears twice"),
    ("pool name in a flow mapping", GOOD.replace("gpu: {model: l4, count: 2}", "gpu: {model: l4, count: 2, count: 4}"),
     r"line 9: key 'count' appears twice"),
    ("label key", GOOD.replace("labels: {example.com/pool: cpu}", "labels: {example.com/pool: cpu, example.com/pool: gpu}"),
     r"key 'example\.com/pool' appears twice"),
]


@pytest.mark.parametrize(("case", "text", "pattern"), DUPLICATES, ids=[d[0] for d in DUPLICATES])
def test_duplicate_keys_are_refused_not_last_wins(tmp_path, case, text, pattern):
    refused(lambda: load(tmp_path, text), pattern)


def test_a_merge_key_is_not_a_duplicate(tmp_path):
    text = GOOD.replace("  - name: cpu\n    cpu: \"4\"\n", "  - &base\n    name: cpu\n    cpu: \"4\"\n") + \
        "  - <<: *base\n    name: cpu2\n"
    assert [p.name for p in load(tmp_path, text).node_pools] == ["cpu", "gpu", "cpu2"]


@pytest.mark.parametrize("price", [".nan", ".NaN", ".inf", "-.inf", "1e400", "-1", "1e10"])
def test_a_price_must_be_a_finite_number(tmp_path, price):
    text = GOOD.replace("price: {on_demand: 1.5}", f"price: {{on_demand: {price}}}")
    refused(lambda: load(tmp_path, text), r"node_pools\[1\]\.price\.on_demand: expected a number >= 0 \(USD per hour: finite")


def test_a_nan_price_is_not_preferred(tmp_path):
    """A NaN price used to compare as cheapest; a spot price of .nan is refused like the on-demand one."""
    text = GOOD.replace("price: {on_demand: 1.5}", "price: {on_demand: 1.5, spot: .nan}\n    capacity: [on-demand, spot]")
    refused(lambda: load(tmp_path, text), r"price\.spot: expected a number")


@pytest.mark.parametrize(("case", "replace", "pattern"), [
    ("gpu count 2^31", ("count: 2", "count: 2147483648"), r"gpu\.count: expected a whole number <= 2147483647"),
    ("spot grace period a day", ("pool_label:", "spot: {grace_period: 86400}\npool_label:"),
     r"spot\.grace_period: expected a whole number <= 3600"),
    ("pool memory 2^63", ("memory: 16Gi", "memory: 9223372036854775808"), r"node_pools\[0\]\.memory: .*at most"),
    ("pool cpu 1e1000000", ('cpu: "4"', 'cpu: "1e1000000"'), r"node_pools\[0\]\.cpu: .*at most"),
])
def test_numbers_in_a_profile_are_bounded(tmp_path, case, replace, pattern):
    refused(lambda: load(tmp_path, GOOD.replace(*replace)), pattern)


def test_another_file_is_refused_without_quoting_it(tmp_path, monkeypatch):
    """Cluster.load("../../../etc/passwd") used to print the file's first line."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(f"root:x:0:0:{SECRET}:/root:/bin/bash\nme:x:1000:1000::/home/me:/bin/sh\n")
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    message = refused(lambda: Cluster.load("../../etc/passwd"), r"^\.\./\.\./etc/passwd: <top>: expected a mapping, found a str")
    assert "root" not in message


QUOTING = [
    ("shadow-like keys", f"root:{SECRET}:20228:0:99999:7:::\n"),
    ("env-like mapping", f"name: lab\nnode_pools: []\nPASSWORD {SECRET}: 1\n"),
    ("syntax error on a secret line", f"name: lab\npassword: [{SECRET}\n"),
    ("tab on a secret line", f"name: lab\n\tpassword: {SECRET}\n"),
]


@pytest.mark.parametrize(("case", "text"), QUOTING, ids=[q[0] for q in QUOTING])
def test_messages_never_quote_the_file(tmp_path, case, text):
    refused(lambda: load(tmp_path, text), r"cluster\.yaml")


def test_not_utf8_is_one_line_without_content(tmp_path):
    refused(lambda: load(tmp_path, "name: lab\n".encode("utf-16")), r"is not UTF-8 text \(byte 0xff at offset 0\)")


def test_a_nul_byte_is_refused(tmp_path):
    refused(lambda: load(tmp_path, b"name: lab\x00\n"), r"not valid YAML: control character #x0000 at offset 9")


def test_a_large_file_is_refused_before_parsing(tmp_path):
    text = GOOD + "description: " + "x" * (2 << 20) + "\n"
    refused(lambda: load(tmp_path, text), r"is larger than 1024 KiB")


def test_a_directory_is_refused(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    refused(lambda: Cluster.load(tmp_path / "dir.yaml"), r"is a directory")


def test_a_device_is_refused_without_reading_it():
    """/dev/zero used to be read until MemoryError; in a capped child it would fail, not refuse."""
    proc = load_in_child("/dev/zero")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "is not a regular file" in proc.stdout


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "cluster.yaml"
    os.mkfifo(fifo)
    proc = load_in_child(str(fifo), timeout=20)  # used to hang: a subprocess.TimeoutExpired here
    assert proc.returncode == 2 and "is not a regular file" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_an_unreadable_file_says_why(tmp_path):
    refused(lambda: Cluster.load(tmp_path / "missing.yaml"), r"cannot read the file: No such file or directory")


def test_a_loaded_profile_still_places(tmp_path):
    cluster = load(tmp_path, GOOD)
    assert cluster.place(Compute.gpu(count=2, model="l4")).pool == "gpu"
