"""Embeddings/s of the ``embed`` step against sentence-transformers' own ``encode``, and the index recall@5.

The shipped corpus (``builtin:docs``, 6 documents) is repeated ``--copies`` times as JSONL documents
with distinct ids and cut by the ``chunk`` step (default 60 copies = 2,040 chunks of up to 100
words); ``--corpus varied`` makes each copy a seeded selection of the document's paragraphs, so the
chunks have many lengths, as in a real corpus. Then, in this process, alternately (one untimed warm-up round on 64 chunks first):

- ``step``: ``xpuflow.steps.rag.embed.embed(data, output=<fresh dir>, batch_size=B)``, timed around
  the whole call: reading ``chunks.parquet``, hashing shards, tokenizing, encoding, writing the
  shards and the chunk copy (the model is loaded once, before timing, as a pod loads it once);
- ``st``: ``SentenceTransformer(<the same model directory>, device=<same>).encode(texts,
  batch_size=B, normalize_embeddings=True)`` on the same texts, already in memory.

Same model files, device, thread count and batch size. Prints medians of embeddings/s, the ratio
step/st (goal >= 1.0x on the CPU), the largest difference between the two sets of vectors, and
the recall@5 (and recall@1) of the ``index`` step on the shipped corpus (34 chunks; the repeated
corpus has exact duplicates, which make recall meaningless).

    .venv/bin/python bench/embed.py                   # 2,040 chunks, batch 64, 3 rounds
    .venv/bin/python bench/embed.py --copies 30 --reps 5 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--corpus", choices=("repeated", "varied"), default="repeated",
                        help="repeated: whole copies of the shipped documents (identical chunks sort together); "
                             "varied: each copy a seeded selection of paragraphs, so chunk lengths vary")
    args = parser.parse_args()

    import numpy as np
    import pyarrow.parquet as pq
    import torch
    from sentence_transformers import SentenceTransformer

    from xpuflow.steps.rag import corpus_dir
    from xpuflow.steps.rag.chunk import chunk
    from xpuflow.steps.rag.embed import embed, read_embeddings
    from xpuflow.steps.rag.encoder import load_encoder
    from xpuflow.steps.rag.index import index

    logging.basicConfig(level=logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="xpuflow-bench-embed-"))
    docs = sorted(corpus_dir().glob("*.md"))
    rng = random.Random(0)
    with open(tmp / "docs.jsonl", "w") as f:
        for copy in range(args.copies):
            for p in docs:
                text = p.read_text()
                if args.corpus == "varied":  # a seeded selection of paragraphs: chunks of many lengths
                    paragraphs = [x for x in text.split("\n\n") if x.strip()]
                    text = "\n\n".join(rng.sample(paragraphs, rng.randint(1, len(paragraphs))))
                f.write(json.dumps({"id": f"{copy}/{p.name}", "text": text}) + "\n")
    chunk(input=str(tmp / "docs.jsonl"), output=str(tmp / "chunks"))
    texts = pq.read_table(tmp / "chunks" / "chunks.parquet", columns=["text"]).column("text").to_pylist()
    n = len(texts)

    encoder = load_encoder()  # what the step uses; loaded once, untimed
    st = SentenceTransformer(str(encoder.path), device=str(encoder.device))
    warm = tmp / "warm"
    chunk(input=str(docs[0]), output=str(warm / "chunks"))
    embed(data=str(warm / "chunks"), output=str(warm / "emb"), batch_size=args.batch_size)
    st.encode(texts[:64], batch_size=args.batch_size, normalize_embeddings=True)

    rates: dict[str, list[float]] = {"step": [], "st": []}
    last: dict[str, object] = {}
    for rep in range(args.reps):
        for name in ("step", "st") if rep % 2 == 0 else ("st", "step"):
            t0 = time.perf_counter()
            if name == "step":
                embed(data=str(tmp / "chunks"), output=str(tmp / f"emb-{rep}"), batch_size=args.batch_size)
            else:
                last["st"] = st.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
            seconds = time.perf_counter() - t0
            rates[name].append(n / seconds)
            print(f"round {rep + 1} {name:>4}: {n / seconds:7.1f} embeddings/s ({seconds:.2f} s)", flush=True)
    mine = read_embeddings(str(tmp / f"emb-{args.reps - 1}"), "bench")[1]
    diff = float(np.abs(mine - np.asarray(last["st"])).max())

    chunk(output=str(tmp / "docs-chunks"))
    embed(data=str(tmp / "docs-chunks"), output=str(tmp / "docs-emb"), batch_size=args.batch_size)
    result = index(data=str(tmp / "docs-emb"), output=str(tmp / "docs-index"))

    step, base = statistics.median(rates["step"]), statistics.median(rates["st"])
    print()
    print(f"device {encoder.device} ({encoder.precision}), torch threads {torch.get_num_threads()}, "
          f"{args.corpus} corpus, {n} chunks, batch {args.batch_size}, {args.reps} rounds, model {encoder.identity}")
    print(f"embed step            : {step:7.1f} embeddings/s (median)")
    print(f"SentenceTransformer   : {base:7.1f} embeddings/s (median)")
    print(f"ratio step / encode   : {step / base:.3f}x (goal >= 1.0x on the CPU)")
    print(f"max |step - encode|   : {diff:.1e}")
    print(f"index recall@5        : {result['recall_at_5']} (recall@1 {result['recall_at_1']}) on "
          f"{result['queries']} queries, shipped corpus, {result['kind']}")
    from figures import Ratio, record

    record("embed", {"device": str(encoder.device), "precision": encoder.precision, "corpus": args.corpus,
                     "chunks": n, "batch": args.batch_size, "rounds": args.reps, "step_per_s": step,
                     "encode_per_s": base, "max_abs_diff": diff, "recall_at_5": result["recall_at_5"],
                     "recall_at_1": result["recall_at_1"]},
           [Ratio("embed step / SentenceTransformer.encode", step / base, goal=1.0),
            Ratio("index recall@5", result["recall_at_5"], goal=0.9)],
           title=f"embed: {args.corpus} corpus, {n} chunks, batch {args.batch_size}")


if __name__ == "__main__":
    main()
