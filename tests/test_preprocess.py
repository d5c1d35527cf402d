"""preprocess: real files (CSV, Parquet, fsspec URLs), bad input named by column and row, streaming."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xpuflow.steps.io import StepError
from xpuflow.steps.preprocess import SPLITS, preprocess, read_split, split_of


def csv(tmp_path, text: str, name: str = "data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_default_data_set_is_embedded_and_split(tmp_path):
    stats = preprocess(output=str(tmp_path / "out"))
    assert stats["rows"] == {"total": 1797, "train": 1215, "validation": 290, "test": 292}
    assert stats["classes"] == [str(i) for i in range(10)] and len(stats["features"]) == 64
    x, y, _ = read_split(tmp_path / "out", "train")
    assert x.shape == (1215, 64) and x.dtype == np.float32 and y.dtype == np.int64
    # standardised with statistics of the training split only
    used = x.std(axis=0) > 0
    assert np.allclose(x.mean(axis=0), 0, atol=1e-5) and np.allclose(x.std(axis=0)[used], 1, atol=1e-3)
    xv, _, _ = read_split(tmp_path / "out", "validation")
    assert not np.allclose(xv.mean(axis=0)[used], 0, atol=1e-3)  # validation was not used for fitting
    written = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert written["label_counts"]["train"]["0"] + written["label_counts"]["validation"]["0"] + written["label_counts"]["test"]["0"] == 178
    assert "imputed with the training mean" in written["nan_policy"]


def test_split_is_deterministic_by_seed_and_independent_of_batch_size(tmp_path):
    a = preprocess(output=str(tmp_path / "a"), seed=7, batch_rows=100)
    b = preprocess(output=str(tmp_path / "b"), seed=7, batch_rows=4096)
    c = preprocess(output=str(tmp_path / "c"), seed=8)
    assert a["rows"] == b["rows"] and a["mean"] == pytest.approx(b["mean"])
    for split in SPLITS:
        assert pq.read_table(tmp_path / "a" / f"{split}.parquet").equals(pq.read_table(tmp_path / "b" / f"{split}.parquet"))
    assert a["rows"] != c["rows"] or a["mean"] != c["mean"]
    rows = np.arange(100_000)
    fractions = np.bincount(split_of(rows, 0, 0.15, 0.15), minlength=3) / len(rows)
    assert fractions == pytest.approx([0.70, 0.15, 0.15], abs=0.01)


def test_csv_with_string_labels_and_missing_values(tmp_path):
    lines = ["f1,f2,species"] + [f"{i},{'' if i % 10 == 0 else i * 2},{'cat' if i % 2 else 'dog'}" for i in range(200)]
    stats = preprocess(input=csv(tmp_path, "\n".join(lines) + "\n"), output=str(tmp_path / "o"), label="species")
    assert stats["classes"] == ["cat", "dog"] and stats["imputed"] == {"f2": 20}
    x, y, _ = read_split(tmp_path / "o", "train")
    assert not np.isnan(x).any() and set(y.tolist()) == {0, 1}


def test_parquet_and_fsspec_url_inputs(tmp_path):
    table = pa.table({"a": np.arange(300, dtype=np.int64), "b": np.linspace(0, 1, 300), "label": np.arange(300) % 3})
    pq.write_table(table, tmp_path / "in.parquet")
    local = preprocess(input=str(tmp_path / "in.parquet"), output=str(tmp_path / "p1"))
    url = preprocess(input=f"file://{tmp_path / 'in.parquet'}", output=str(tmp_path / "p2"))
    assert local["rows"] == url["rows"] and local["mean"] == url["mean"] and local["classes"] == ["0", "1", "2"]
    import fsspec

    with fsspec.open("memory://xpuflow-tests/in.csv", "w") as f:
        f.write("x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(50)))
    mem = preprocess(input="memory://xpuflow-tests/in.csv", output=str(tmp_path / "p3"))
    assert mem["rows"]["total"] == 50


BAD = [
    ("missing label column", "a,b,c\n1,2,3\n", {}, r"label column 'label' is missing; columns are: a, b, c"),
    ("near-miss label", "a,Label\n1,2\n", {}, r"Did you mean 'Label'\?"),
    ("non-numeric feature", "a,b,label\n1,2,0\n3,x7,1\n5,6,0\n", {}, r"column 'b' \(#2\) is not numeric: row 2 holds text that is not a number \(2 characters, not shown\)"),
    ("empty file", "", {}, r"empty input: no header row"),
    ("header only", "a,label\n", {}, r"empty input: no data rows"),
    ("duplicate columns", "a,b,a,label\n1,2,3,0\n", {}, r"duplicate column 'a' \(columns #1 and #3\)"),
    ("all-NaN column", "a,b,label\n1,,0\n2,,1\n3,,0\n", {}, r"column 'b' is missing \(NaN or empty\) in all 3 rows"),
    ("missing label value", "a,label\n1,0\n2,\n3,1\n", {}, r"label 'label' is missing in row 2"),
    ("unknown format", None, {"input": "data.xlsx"}, r"input='data.xlsx' is not valid: expected builtin:digits"),
    ("fractions", "a,label\n1,0\n", {"val_fraction": 0.6, "test_fraction": 0.5}, r"leaves no training rows"),
    ("missing file", None, {"input": "/nonexistent/x.csv"}, r"cannot open it: No such file"),
]


@pytest.mark.parametrize(("case", "text", "kwargs", "pattern"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_column_and_row(tmp_path, case, text, kwargs, pattern):
    args = {"output": str(tmp_path / "out"), **kwargs}
    if text is not None:
        args["input"] = csv(tmp_path, text)
    with pytest.raises(StepError, match=pattern):
        preprocess(**args)
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir()), "a refused input must leave nothing behind"


def test_non_numeric_parquet_column_names_the_row(tmp_path):
    table = pa.table({"a": ["1", "2", "zz"], "label": [0, 1, 0]})
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(StepError, match=r"column 'a' \(#1\) is not numeric: row 3 holds text that is not a number \(2 characters, not shown\)"):
        preprocess(input=str(tmp_path / "bad.parquet"), output=str(tmp_path / "o"))


def test_peak_memory_does_not_grow_with_the_input(tmp_path):
    """Inputs of 1x and 4x the rows (~120 MB and ~480 MB of CSV), each preprocessed in a fresh process with the
    in-memory part of the spill switched off (XPUFLOW_PREPROCESS_MEMORY_MIB=0): the peak RSS stays nearly flat.
    With the default (256 MiB of parsed rows kept in memory before spilling) the peak stays bounded too.

    The reader holds a bounded window of pieces, so a small input has not reached that window yet;
    an in-memory implementation would need several times the extra input (~300 MB here) on top.
    """
    import os

    import pyarrow.csv as pcsv

    rng = np.random.default_rng(0)
    peaks, files = {}, {}

    def peak(path, out, budget):
        # VmHWM: this process's own peak (ru_maxrss would carry the forking pytest process's RSS over exec)
        code = (
            "from xpuflow.steps.preprocess import preprocess; "
            f"preprocess(input={str(path)!r}, output={str(out)!r}); "
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
        )
        env = {**os.environ, "XPUFLOW_PREPROCESS_MEMORY_MIB": budget}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        return int(done.stdout.split()[-1]) * 1024

    for factor in (1, 4):
        path = tmp_path / f"in{factor}.csv"
        with pcsv.CSVWriter(path, pa.schema([*(pa.field(f"f{j}", pa.float64()) for j in range(16)),
                                             pa.field("label", pa.int64())])) as writer:
            for _ in range(4 * factor):
                writer.write_table(pa.table({**{f"f{j}": rng.normal(size=100_000) for j in range(16)},
                                             "label": rng.integers(0, 5, 100_000)}))
        peaks[factor], files[factor] = peak(path, tmp_path / f"o{factor}", "0"), path.stat().st_size
    default = peak(tmp_path / "in4.csv", tmp_path / "o4d", "")
    print(f"peak RSS {peaks[1] / 2**20:.0f} MiB -> {peaks[4] / 2**20:.0f} MiB for {files[1] / 2**20:.0f} -> "
          f"{files[4] / 2**20:.0f} MiB of CSV; {default / 2**20:.0f} MiB with the default in-memory part")
    # 4x the input adds ~50 MiB (allocator pools reaching their steady state on a longer run; thread scheduling on a
    # loaded machine moves it by +-20 MiB); holding the input would add ~300 MiB
    assert peaks[4] < 1.4 * peaks[1] and peaks[4] < 600 * 2**20
    assert default < peaks[4] + 300 * 2**20


def test_preprocessing_never_imports_pandas(tmp_path):
    """pyarrow imports pandas on its first numpy conversion (~0.25 s of CPU holding the GIL); the step goes around it."""
    lines = ["a,b,label"] + [f"{i % 17 - 8},{'' if i % 9 == 0 else i * 0.5},{i % 3}" for i in range(3000)]
    lines[5] = "1,NaN,2"  # a null word beside empty cells and plain numbers
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    pq.write_table(pa.table({"a": np.arange(500, dtype=np.float32), "label": np.arange(500) % 2}), tmp_path / "in.parquet")
    code = (
        "import sys; from xpuflow.steps.preprocess import preprocess; "
        f"preprocess(input={str(tmp_path / 'in.csv')!r}, output={str(tmp_path / 'o1')!r}); "
        f"preprocess(input={str(tmp_path / 'in.parquet')!r}, output={str(tmp_path / 'o2')!r}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pandas'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout[-300:]
    assert json.loads((tmp_path / "o1" / "stats.json").read_text())["imputed"] == {"b": 334 + 1}  # empty cells and the NaN


def test_memory_budget_variable_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("XPUFLOW_PREPROCESS_MEMORY_MIB", "lots")
    with pytest.raises(StepError, match=r"XPUFLOW_PREPROCESS_MEMORY_MIB='lots' is not valid: a whole number of MiB"):
        preprocess(output=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- bad numbers (issue 11)


def rows_in(seed: int, split: str, n: int = 200) -> list[int]:
    """0-based data rows that the step's split puts into ``split`` (the step's own hash, not a copy of it)."""
    return np.flatnonzero(split_of(np.arange(n), seed, 0.15, 0.15) == SPLITS.index(split)).tolist()


def numeric_csv(tmp_path, bad_row: int, bad_value: str, n: int = 200, name: str = "num.csv") -> str:
    lines = ["a,b,label"] + [f"{i},{bad_value if i == bad_row else (i * 7) % 13},{i % 3}" for i in range(n)]
    return csv(tmp_path, "\n".join(lines) + "\n", name)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("value", ["inf", "-inf"])
def test_infinite_feature_is_refused_by_default_naming_column_and_row(tmp_path, split, value):
    row = rows_in(0, split)[3]
    out = tmp_path / "out"
    with pytest.raises(StepError, match=rf"column 'b' \(#2\) holds {value} in row {row + 1}: .*--non-finite impute"):
        preprocess(input=numeric_csv(tmp_path, row, value), output=str(out))
    assert not out.exists() or not any(out.iterdir())


def test_infinite_feature_imputed_on_request_and_counted(tmp_path):
    train_row, test_row = rows_in(0, "train")[5], rows_in(0, "test")[1]
    lines = ["a,b,label"] + [f"{i},{'inf' if i == train_row else '-inf' if i == test_row else (i * 7) % 13},{i % 3}"
                             for i in range(200)]
    stats = preprocess(input=csv(tmp_path, "\n".join(lines) + "\n"), output=str(tmp_path / "o"), non_finite="impute")
    clean = np.array([(i * 7) % 13 for i in range(200) if i not in (train_row, test_row)
                      and i in rows_in(0, "train")], dtype=float)
    assert stats["mean"]["b"] == pytest.approx(clean.mean()) and stats["std"]["b"] == pytest.approx(clean.std())
    assert stats["non_finite"] == {"b": 2} and stats["non_finite_policy"] == "impute"
    for split in SPLITS:
        x, _, _ = read_split(tmp_path / "o", split)
        assert np.isfinite(x).all()
    x, _, _ = read_split(tmp_path / "o", "train")
    assert x[rows_in(0, "train").index(train_row), 1] == 0.0 and x[:, 1].std() > 0.5


def test_huge_finite_value_in_training_rows_gives_finite_statistics(tmp_path):
    """1e308 is a number: the statistics stay finite (no overflow to inf/NaN) and the column is not zeroed."""
    train = rows_in(0, "train")
    values = np.array([(i * 7) % 13 for i in range(200)], dtype=np.float64)
    values[train[0]] = 1e308
    lines = ["a,b,label"] + [f"{i},{float(values[i])!r},{i % 3}" for i in range(200)]
    stats = preprocess(input=csv(tmp_path, "\n".join(lines) + "\n"), output=str(tmp_path / "o"))
    exact = values[train].astype(np.longdouble)
    mean = exact.mean()
    std = np.sqrt(((exact - mean) ** 2).mean())
    assert stats["mean"]["b"] == pytest.approx(float(mean), rel=1e-9)
    assert stats["std"]["b"] == pytest.approx(float(std), rel=1e-9)
    assert json.loads((tmp_path / "o" / "stats.json").read_text())["std"]["b"] == stats["std"]["b"]
    x, _, _ = read_split(tmp_path / "o", "train")
    expected = ((exact - mean) / std).astype(np.float32)  # the outlier at sqrt(n - 1), the rest just below 0
    assert np.isfinite(x).all() and np.allclose(x[:, 1], expected, rtol=1e-6) and x[:, 1].max() > 10


def test_value_beyond_float32_after_standardising_is_refused_or_imputed(tmp_path):
    row = rows_in(0, "validation")[2]
    path = numeric_csv(tmp_path, row, "1e300")
    with pytest.raises(StepError, match=rf"column 'b' \(#2\) holds 1e\+300 in row {row + 1}, .*float32"):
        preprocess(input=path, output=str(tmp_path / "o"))
    assert not (tmp_path / "o" / "stats.json").exists()
    stats = preprocess(input=path, output=str(tmp_path / "o2"), non_finite="impute")
    x, _, _ = read_split(tmp_path / "o2", "validation")
    assert np.isfinite(x).all() and stats["non_finite"] == {"b": 1}


def test_non_finite_option_is_checked(tmp_path):
    with pytest.raises(StepError, match=r"non_finite='drop' is not valid: refuse or impute"):
        preprocess(output=str(tmp_path / "o"), non_finite="drop")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_parquet_label_is_refused_with_its_row(tmp_path, bad):
    labels = [float(i % 2) for i in range(30)]
    labels[17] = bad
    pq.write_table(pa.table({"x": np.arange(30.0), "label": labels}), tmp_path / "l.parquet")
    with pytest.raises(StepError, match=rf"label 'label' is {bad} in row 18: labels must be finite"):
        preprocess(input=str(tmp_path / "l.parquet"), output=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_non_finite_csv_label_is_refused(tmp_path):
    path = csv(tmp_path, "x,label\n" + "".join(f"{i},{['1', '2', 'inf'][i % 3]}\n" for i in range(30)))
    with pytest.raises(StepError, match=r"label 'label' holds the class 'inf': labels must be finite"):
        preprocess(input=path, output=str(tmp_path / "o"))


def test_single_class_label_is_refused(tmp_path):
    path = csv(tmp_path, "x,label\n" + "".join(f"{i},yes\n" for i in range(30)))
    with pytest.raises(StepError, match=r"label 'label' has one class \('yes'\) in all 30 rows: .*at least two"):
        preprocess(input=path, output=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_gzip_csv_reads_like_the_plain_csv(tmp_path):
    import gzip

    text = "a,b,label\n" + "".join(f"{i},{'' if i % 9 == 0 else i / 3},{i % 2}\n" for i in range(500))
    plain = preprocess(input=csv(tmp_path, text), output=str(tmp_path / "plain"))
    with gzip.open(tmp_path / "data.csv.gz", "wt") as f:
        f.write(text)
    packed = preprocess(input=str(tmp_path / "data.csv.gz"), output=str(tmp_path / "gz"))
    assert packed["rows"] == plain["rows"] and packed["mean"] == plain["mean"] and packed["imputed"] == plain["imputed"]
    for split in SPLITS:
        assert pq.read_table(tmp_path / "gz" / f"{split}.parquet").equals(pq.read_table(tmp_path / "plain" / f"{split}.parquet"))


def test_gzip_csv_non_numeric_cell_names_its_row(tmp_path):
    import gzip

    with gzip.open(tmp_path / "bad.csv.gz", "wt") as f:
        f.write("a,label\n1,0\n2,1\nxx,0\n")
    with pytest.raises(StepError, match=r"column 'a' \(#1\) is not numeric: row 3 holds text that is not a number \(2 characters, not shown\)"):
        preprocess(input=str(tmp_path / "bad.csv.gz"), output=str(tmp_path / "o"))


def test_nested_parquet_label_is_refused_in_one_line(tmp_path):
    pq.write_table(pa.table({"x": np.arange(3.0), "label": [[1], [2], [3]]}), tmp_path / "n.parquet")
    with pytest.raises(StepError, match=r"label column 'label' has type list<element: int64>: .*Fix") as info:
        preprocess(input=str(tmp_path / "n.parquet"), output=str(tmp_path / "o"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16"])
def test_utf16_csv_is_refused_without_control_bytes_in_the_message(tmp_path, encoding):
    path = tmp_path / "u16.csv"
    path.write_bytes(("x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(20))).encode(encoding))
    with pytest.raises(StepError, match=r"not UTF-8 text.*Fix: save the file as UTF-8") as info:
        preprocess(input=str(path), output=str(tmp_path / "o"))
    assert "\x00" not in str(info.value) and "\n" not in str(info.value)


def test_cli_refuses_infinite_feature_in_one_line(tmp_path):
    row = rows_in(0, "train")[0]
    proc = subprocess.run([sys.executable, "-m", "xpuflow", "step", "preprocess", "--input",
                           numeric_csv(tmp_path, row, "inf"), "--output", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "holds inf" in lines[0] and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- reruns (issue 11)

_KILL_AT_RENAME = """
import os, signal, sys
from xpuflow.steps.preprocess import preprocess
target, seen = int(sys.argv[3]), [0]
def hook(event, args):
    if event == "os.rename":  # os.rename and os.replace: die just before the target-th one happens
        seen[0] += 1
        if seen[0] == target:
            os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(hook)
preprocess(input=sys.argv[1], output=sys.argv[2], seed=int(sys.argv[4]))
"""


def snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name.endswith((".parquet", ".json"))}


def test_a_rerun_killed_at_any_rename_leaves_the_old_output_or_the_new_one_whole(tmp_path):
    """kill -9 just before each rename of a rerun with another seed, one after the other: a reader then finds the
    previous output byte-identical or the new one complete, never new splits beside the old stats.json."""
    lines = ["a,b,label"] + [f"{i},{(i * 7) % 13},{i % 3}" for i in range(3000)]
    data = csv(tmp_path, "\n".join(lines) + "\n")
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    preprocess(input=data, output=str(out), seed=0)
    preprocess(input=data, output=str(fresh), seed=5)
    old, new = snapshot(out), snapshot(fresh)
    outcomes = []
    for k in range(1, 20):
        proc = subprocess.run([sys.executable, "-c", _KILL_AT_RENAME, data, str(out), str(k), "5"],
                              capture_output=True, text=True)
        x, _, stats = read_split(out, "train")  # as the next step would read it
        seen = snapshot(out)
        whole = seen in (old, new)
        assert whole, f"kill before rename #{k}: a mix of two runs: {stats['seed']=}"
        assert len(x) == stats["rows"]["train"]
        outcomes.append("new" if seen == new else "old")
        if proc.returncode == 0:
            break
        assert proc.returncode == -9, proc.stderr
        preprocess(input=data, output=str(out), seed=0)  # back to the old output for the next kill
        assert snapshot(out) == old
    assert proc.returncode == 0 and "old" in outcomes and outcomes[-1] == "new", outcomes
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], "leftovers of killed runs"


def test_a_refused_rerun_leaves_the_previous_output_byte_identical(tmp_path):
    out = tmp_path / "out"
    preprocess(input=numeric_csv(tmp_path, 0, "1"), output=str(out))
    before = snapshot(out)
    with pytest.raises(StepError, match="holds inf"):
        preprocess(input=numeric_csv(tmp_path, rows_in(0, "test")[0], "inf", name="bad.csv"), output=str(out))
    assert snapshot(out) == before


def test_a_non_numeric_cell_is_described_not_quoted(tmp_path):
    """A data file's content stays out of messages: a cell holding a secret is counted, never echoed."""
    (tmp_path / "rows.csv").write_text("a,label\n1,0\nsk-live-SECRET123,1\n2,0\n")
    with pytest.raises(StepError) as info:
        preprocess(input=str(tmp_path / "rows.csv"), output=str(tmp_path / "o"))
    assert "SECRET" not in str(info.value) and "17 characters, not shown" in str(info.value)


def test_csv_pieces_parse_like_one_read_of_the_file(tmp_path):
    """Pieces with and without null words ("NA", "nan", "null": parsed with the fast options only where none can
    occur) give the table pyarrow's own reader gives for the whole file."""
    import pyarrow.csv as pcsv

    from xpuflow.steps.csvchunks import parallel_csv_batches

    rng = np.random.default_rng(5)
    words = ["", "NA", "nan", "NaN", "null", "N/A", "-nan", "#N/A"]
    rows = []
    for i in range(4000):
        a = words[i % len(words)] if 1500 < i < 1600 or i % 97 == 0 else f"{rng.normal():.4f}"
        rows.append(f"{a},{i * 0.25},{'' if i % 50 == 0 else rng.normal():.3}".replace(",nan", ",") + f",{i % 3}")
    path = tmp_path / "in.csv"
    path.write_text("x,yn,z,label\n" + "\n".join(rows) + "\n")
    columns = ["x", "yn", "z", "label"]
    convert = pcsv.ConvertOptions(column_types={"x": pa.float64(), "yn": pa.float64(), "z": pa.float64(),
                                                "label": pa.dictionary(pa.int32(), pa.string())}, strings_can_be_null=True)
    whole = pcsv.read_csv(path, convert_options=convert)
    pieces = pa.Table.from_batches(list(parallel_csv_batches(str(path), columns, convert, batch_rows=1000,
                                                             refuse=lambda e: e, threads=2, chunk_bytes=4096)))
    assert pieces.num_rows == 4000 and whole.column("x").null_count > 100
    for name in columns[:3]:
        assert pieces.column(name).combine_chunks().equals(whole.column(name).combine_chunks()), name
    assert pieces.column("label").to_pylist() == whole.column("label").to_pylist()
