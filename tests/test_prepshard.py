"""preprocess in N shards (``--shard I/N``): real processes share one statistics pass and write one output equal
to one process's; a killed shard reruns alone; a partial set, or parts of other statistics, are refused downstream;
a refused sharded rerun leaves the published output as it was."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runs import env, kill_when, python

from xpuflow.steps.io import StepError
from xpuflow.steps.preprocess import SPLITS, preprocess, read_split, split_of
from xpuflow.steps.shards import parts_dir
from xpuflow.steps.train import train


def table_csv(path: Path, rows: int, *, seed: int = 0, bad: tuple[int, str] | None = None) -> Path:
    """Five feature columns with missing cells, string labels; ``bad``: (row, text) put in column ``c``."""
    rng = np.random.default_rng(seed)
    values = rng.normal(3.0, 2.0, size=(rows, 5)) * np.array([1, 10, 100, 0.01, 1e4])
    lines = ["a,b,c,d,e,label"]
    for i in range(rows):
        cells = ["" if (i * 7 + j) % 53 == 0 else repr(float(v)) for j, v in enumerate(values[i])]
        if bad is not None and i == bad[0]:
            cells[2] = bad[1]
        lines.append(",".join(cells) + f",{'cat dog owl'.split()[i % 3]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def command(*options: str) -> list[str]:
    return [python("main"), "-m", "xpuflow", "step", "preprocess", *options]


def step(*options: str, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(command(*options), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env(**extra))


def finish(*procs: subprocess.Popen) -> None:
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-3000:]


def assert_same_output(out: Path, reference: Path) -> None:
    """stats.json byte for byte; each split the same rows in the same order, bit-identical values."""
    assert (out / "stats.json").read_bytes() == (reference / "stats.json").read_bytes()
    for split in SPLITS:
        mine, theirs = pq.read_table(out / f"{split}.parquet"), pq.read_table(reference / f"{split}.parquet")
        assert mine.schema == theirs.schema and mine.equals(theirs), split
        x, y, _ = read_split(out, split)
        rx, ry, _ = read_split(reference, split)
        assert x.tobytes() == rx.tobytes() and np.array_equal(y, ry)
    assert not parts_dir(out).exists(), sorted(parts_dir(out).iterdir())  # the parts were merged and removed


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def csv_in(tmp_path_factory) -> tuple[Path, Path]:
    """A CSV of 6,000 rows and one process's output of it (250-row units: 24 units)."""
    root = tmp_path_factory.mktemp("prepshard")
    data = table_csv(root / "in.csv", 6000)
    preprocess(input=str(data), output=str(root / "one"), batch_rows=250)
    return data, root / "one"


def test_three_processes_equal_one_and_two_of_three_are_refused_downstream(csv_in, tmp_path, monkeypatch):
    data, reference = csv_in
    out = tmp_path / "data"
    common = ("--input", str(data), "--output", str(out), "--batch-rows", "250")
    finish(step(*common, "--shard", "2/3"), step(*common, "--shard", "3", JOB_COMPLETION_INDEX="0"))
    assert not out.exists()  # 2 of 3: nothing published
    lacking = ("only 2 of 3 shards are written (missing 1/3), so it is not published. Fix: run the missing shard(s) "
               "(--shard 1/3, or rerun that index of the Indexed Job); the output is published when all 3 are in.")
    with pytest.raises(StepError) as e:
        read_split(out, "train")
    assert str(e.value) == f"reading the train split: data={str(out)!r}: {lacking}"
    with pytest.raises(StepError, match=r"only 2 of 3 shards are written \(missing 1/3\)") as e:
        train(data=str(out), output=str(tmp_path / "model"), epochs=1)
    assert "\n" not in str(e.value) and not (tmp_path / "model").exists()
    finish(step(*common, "--shard", "1/3"))
    assert_same_output(out, reference)
    train(data=str(out), output=str(tmp_path / "model"), epochs=1)  # readable downstream


def test_a_shard_killed_mid_way_reruns_alone_and_the_result_is_unchanged(tmp_path):
    data = table_csv(tmp_path / "in.csv", 12_000, seed=1)
    preprocess(input=str(data), output=str(tmp_path / "one"), batch_rows=8)
    out = tmp_path / "data"
    common = ("--input", str(data), "--output", str(out), "--batch-rows", "8")  # 1,500 units, tiny row groups: slow
    finish(step(*common, "--shard", "0/3"), step(*common, "--shard", "2/3"))
    proc = step(*common, "--shard", "1/3")
    written = parts_dir(out) / ".part-00001-of-00003.partial" / "train.parquet"
    kill_when(proc, lambda: written.exists() and written.stat().st_size >= 16_384, "shard 1/3 writing 16 KiB")
    assert not out.exists()
    with pytest.raises(StepError, match=r"only 2 of 3 shards are written \(missing 1/3\)"):
        read_split(out, "test")
    rerun = subprocess.run(proc.args, capture_output=True, text=True, env=env(), timeout=300)  # shard 1 alone
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_same_output(out, tmp_path / "one")


def test_parts_of_other_statistics_are_not_merged(tmp_path):
    """The input changes after two shards: the third computes new statistics, its part does not join the two
    older ones (refused downstream), and the rerun of the first two publishes the new input's output."""
    data = table_csv(tmp_path / "in.csv", 900)
    for i in (0, 1):
        preprocess(input=str(data), output=str(tmp_path / "data"), batch_rows=100, shard=f"{i}/3")
    table_csv(data, 900, seed=7)
    preprocess(input=str(data), output=str(tmp_path / "one"), batch_rows=100)
    assert preprocess(input=str(data), output=str(tmp_path / "data"), batch_rows=100, shard="2/3")["published"] is False
    with pytest.raises(StepError, match=r"only 1 of 3 shards are written \(missing 0/3, 1/3\)"):
        read_split(tmp_path / "data", "train")
    for i in (0, 1):
        preprocess(input=str(data), output=str(tmp_path / "data"), batch_rows=100, shard=f"{i}/3")
    assert_same_output(tmp_path / "data", tmp_path / "one")


def test_an_object_replaced_under_the_same_url_is_a_new_run(tmp_path):
    """An fsspec URL input: the run key names the object's version, so shards of the old and the new object do not
    join, and the new object's shards publish its output."""
    import fsspec

    url = f"memory://xpuflow-prepshard/{tmp_path.name}/in.csv"
    with fsspec.open(url, "wb") as f:
        f.write(table_csv(tmp_path / "old.csv", 500).read_bytes())
    for i in (0, 1):
        preprocess(input=url, output=str(tmp_path / "data"), batch_rows=100, shard=f"{i}/3")
    with fsspec.open(url, "wb") as f:
        f.write(table_csv(tmp_path / "new.csv", 600, seed=4).read_bytes())
    preprocess(input=url, output=str(tmp_path / "data"), batch_rows=100, shard="2/3")
    with pytest.raises(StepError, match=r"only 1 of 3 shards are written \(missing 0/3, 1/3\)"):
        read_split(tmp_path / "data", "train")
    for i in (0, 1):
        preprocess(input=url, output=str(tmp_path / "data"), batch_rows=100, shard=f"{i}/3")
    preprocess(input=str(tmp_path / "new.csv"), output=str(tmp_path / "one"), batch_rows=100)
    assert read_split(tmp_path / "data", "train")[0].tobytes() == read_split(tmp_path / "one", "train")[0].tobytes()


def test_a_refused_or_unfinished_sharded_rerun_leaves_the_published_output_untouched(csv_in, tmp_path):
    data, reference = csv_in
    out = tmp_path / "data"
    for i in range(3):
        preprocess(input=str(data), output=str(out), batch_rows=250, shard=f"{i}/3")
    before = snapshot(out)
    row = int(np.flatnonzero(split_of(np.arange(6000), 0, 0.15, 0.15) == 1)[40])  # a validation row, unit 1+
    bad = table_csv(tmp_path / "bad.csv", 6000, bad=(row, "1e300"))
    with pytest.raises(StepError) as one:  # one process: beyond float32 once standardised, found in pass 2
        preprocess(input=str(bad), output=str(tmp_path / "one"), batch_rows=250)
    assert f"holds 1e+300 in row {row + 1}, beyond float32" in str(one.value)
    for i in (1, 0, 2):  # every shard refuses the run with one process's line, before writing a part
        proc = subprocess.run(command("--input", str(bad), "--output", str(out), "--batch-rows", "250", "--shard",
                                      f"{i}/3"), capture_output=True, text=True, env=env(), timeout=300)
        assert proc.returncode == 2 and proc.stderr.strip() == f"xpuflow step: error: {one.value}", proc.stderr[-3000:]
    assert snapshot(out) == before and not list(parts_dir(out).glob("*part*"))
    assert_same_output(out, reference)
    other = table_csv(tmp_path / "other.csv", 3000, seed=2)  # a good input, 2 of 3 shards: not published yet
    for i in (0, 2):
        preprocess(input=str(other), output=str(out), batch_rows=250, shard=f"{i}/3")
    assert snapshot(out) == before and read_split(out, "test")[2]["rows"]["total"] == 6000  # the old output is read


@pytest.mark.parametrize("source", ["builtin", "parquet", "gzip"])
def test_every_source_in_shards_equals_one_process(source, tmp_path):
    """Sources read in order by every shard: the built-in data set, Parquet (float32 and integer columns, numeric
    labels), gzip CSV; and non_finite=impute, whose counts are summed over the parts."""
    options: dict = {"batch_rows": 97}
    if source == "parquet":
        n = 700
        pq.write_table(pa.table({"f": pa.array(np.linspace(-1, 1, n), pa.float32()), "i": np.arange(n) % 11,
                                 "g": [None if i % 9 == 0 else float("inf") if i == 500 else i * 0.5 for i in range(n)],
                                 "label": np.arange(n) % 4}), tmp_path / "in.parquet")
        options.update(input=str(tmp_path / "in.parquet"), non_finite="impute")
    elif source == "gzip":
        import gzip

        raw = table_csv(tmp_path / "in.csv", 800).read_bytes()
        (tmp_path / "in.csv.gz").write_bytes(gzip.compress(raw))
        options.update(input=str(tmp_path / "in.csv.gz"))
    one = preprocess(output=str(tmp_path / "one"), **options)
    results = [preprocess(output=str(tmp_path / "two"), shard=f"{i}/2", **options) for i in (1, 0)]
    assert results[0]["published"] is False and results[1] == one
    assert_same_output(tmp_path / "two", tmp_path / "one")
    if source == "parquet":
        assert one["non_finite"] == {"g": 1} and one["imputed"]["g"] == len(range(0, n, 9))


def test_more_shards_than_units_and_bad_shard_values(tmp_path, monkeypatch):
    one = preprocess(output=str(tmp_path / "one"), batch_rows=1000)  # 1,797 rows: 2 units, 3 shards
    for i in range(3):
        preprocess(output=str(tmp_path / "three"), batch_rows=1000, shard=f"{i}/3")
    assert_same_output(tmp_path / "three", tmp_path / "one")
    assert json.loads((tmp_path / "three" / "stats.json").read_text()) == one
    assert preprocess(output=str(tmp_path / "alone"), batch_rows=1000, shard="0/1") == one  # one shard publishes
    assert_same_output(tmp_path / "alone", tmp_path / "one")
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    for bad, message in (("3/3", "shard='3/3' is not valid: I/N with 0 <= I < N"),
                         ("3", "shard='3' gives the count but no index, and JOB_COMPLETION_INDEX is not set")):
        proc = subprocess.run(command("--output", str(tmp_path / "x"), "--shard", bad), capture_output=True,
                              text=True, env=env())
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "x").exists() and not parts_dir(tmp_path / "x").exists()


def test_shards_never_import_pandas(csv_in, tmp_path):
    """Like one process, a shard goes around pyarrow's pandas shim (~0.25 s of CPU at its first numpy conversion)."""
    data, reference = csv_in
    code = ("import sys; from xpuflow.steps.preprocess import preprocess; "
            f"[preprocess(input={str(data)!r}, output={str(tmp_path / 'out')!r}, batch_rows=250, shard=f'{{i}}/2') "
            "for i in (0, 1)]; print(sorted(m for m in sys.modules if m.split('.')[0] == 'pandas'))")
    done = subprocess.run([python("main"), "-c", code], capture_output=True, text=True, env=env(), timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout[-300:] + done.stderr[-3000:]
    assert_same_output(tmp_path / "out", reference)


def test_parts_that_do_not_add_up_are_refused_by_the_merge(tmp_path):
    """A part whose record of its units was altered (a unit left out): the last shard refuses to merge."""
    for i in (0, 1):
        preprocess(output=str(tmp_path / "data"), batch_rows=200, shard=f"{i}/3")
    meta = parts_dir(tmp_path / "data") / "part-00001-of-00003" / "part.json"
    record = json.loads(meta.read_text())
    record["summary"]["units"] = record["summary"]["units"][1:]
    meta.write_text(json.dumps(record))
    with pytest.raises(StepError) as e:
        preprocess(output=str(tmp_path / "data"), batch_rows=200, shard="2/3")
    assert str(e.value) == ("preprocess: the shards' parts do not add up to the input's rows (a part was written with "
                            "other options). Fix: rerun every shard with the same options.")
    assert not (tmp_path / "data").exists()


def test_a_join_of_iterations_with_other_statistics_is_refused(tmp_path):
    """KFP: each ParallelFor iteration writes beside its own output and runs pass 1 itself; the join publishes only
    parts of one pass 1, so an iteration that read another input is refused, and a full set is equal to one process."""
    from xpuflow.steps.shards import join

    data = table_csv(tmp_path / "in.csv", 700)
    outs = [tmp_path / f"iteration-{i}" / "output" for i in range(3)]
    for i in (0, 1):
        preprocess(input=str(data), output=str(outs[i]), batch_rows=100, shard=f"{i}/3")
    table_csv(tmp_path / "other.csv", 700, seed=3)
    preprocess(input=str(tmp_path / "other.csv"), output=str(outs[2]), batch_rows=100, shard="2/3")
    with pytest.raises(StepError) as e:
        join(outs, tmp_path / "joined")
    assert str(e.value).startswith("join: only 2 of 3 shards wrote their part (missing 2/3), so the output is not "
                                   "published.") and not (tmp_path / "joined").exists()
    preprocess(input=str(data), output=str(outs[2]), batch_rows=100, shard="2/3")
    join(outs, tmp_path / "joined")
    preprocess(input=str(data), output=str(tmp_path / "one"), batch_rows=100)
    assert_same_output(tmp_path / "joined", tmp_path / "one")
