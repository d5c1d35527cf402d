"""GPU check of the RAG steps: ``embed`` vs sentence-transformers' ``encode`` on CUDA, and ``batch_infer``.

Run by ``bench/gpu_check.sh`` (step 6) on a machine with an NVIDIA GPU; it can also run alone:

    python bench/gpu_rag_check.py --embed-model DIR --train-output DIR --data DIR [--out FILE]

1. ``embed``: the shipped corpus repeated ``--copies`` times and cut by ``chunk``; then, for fp16
   and bf16, alternately ``--reps`` times: the ``embed`` step (whole call, as in ``bench/embed.py``)
   vs ``SentenceTransformer.encode`` with the same model files, dtype and batch size. Prints the
   median embeddings/s of each and the ratio. Also: the smallest cosine similarity between the
   GPU vectors and fp32 CPU vectors of the same texts (a sample), and recall@5 of exact search
   over the GPU vectors of the shipped corpus (the ``index`` step's query set, brute force here:
   FAISS is not needed on the GPU machine).
2. ``batch_infer``: a Parquet file of ``--rows`` rows (the preprocessed test split tiled) scored
   with the trained model on CUDA (batch size from the GPU memory: ``XPUFLOW_GPU_MEMORY_GIB`` as a
   placement sets it, then from ``torch.cuda.mem_get_info``) and on the CPU; prints rows/s of each,
   the chosen batch sizes, and the agreement of the predicted classes.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def embed_check(model: str, copies: int, batch: int, reps: int, tmp: Path, device: str) -> dict:
    import numpy as np
    import pyarrow.parquet as pq
    import torch
    from sentence_transformers import SentenceTransformer

    from xpuflow.steps.rag import corpus_dir
    from xpuflow.steps.rag.chunk import chunk
    from xpuflow.steps.rag.embed import embed, read_embeddings
    from xpuflow.steps.rag.encoder import load_encoder
    from xpuflow.steps.rag.index import query_sentence

    docs = sorted(corpus_dir().glob("*.md"))
    with open(tmp / "docs.jsonl", "w") as f:
        for copy in range(copies):
            for p in docs:
                f.write(json.dumps({"id": f"{copy}/{p.name}", "text": p.read_text()}) + "\n")
    chunk(input=str(tmp / "docs.jsonl"), output=str(tmp / "chunks"))
    texts = pq.read_table(tmp / "chunks" / "chunks.parquet", columns=["text"]).column("text").to_pylist()
    n = len(texts)
    result: dict = {"chunks": n, "batch_size": batch, "reps": reps}
    cpu = load_encoder(model, "cpu", "fp32")
    sample = texts[:: max(1, n // 256)][:256]
    reference = cpu.encode(sample, 64)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    pairs = (("fp16", torch.float16), ("bf16", torch.bfloat16)) if device == "cuda" else (("bf16", torch.bfloat16),)
    for precision, dtype in pairs:
        encoder = load_encoder(model, device, precision)
        st = SentenceTransformer(str(encoder.path), device=device).to(dtype)
        embed(data=str(tmp / "chunks"), output=str(tmp / f"warm-{precision}"), model=model, batch_size=batch,
              device=device, precision=precision)
        st.encode(texts[:batch * 4], batch_size=batch, normalize_embeddings=True)
        rates: dict[str, list[float]] = {"step": [], "st": []}
        for rep in range(reps):
            for name in ("step", "st") if rep % 2 == 0 else ("st", "step"):
                sync()
                t0 = time.perf_counter()
                if name == "step":
                    embed(data=str(tmp / "chunks"), output=str(tmp / f"emb-{precision}-{rep}"), model=model,
                          batch_size=batch, device=device, precision=precision)
                else:
                    st.encode(texts, batch_size=batch, normalize_embeddings=True)
                sync()
                rates[name].append(n / (time.perf_counter() - t0))
                print(f"embed {precision} round {rep + 1} {name:>4}: {rates[name][-1]:9.1f} embeddings/s", flush=True)
        gpu = encoder.encode(sample, batch)
        cosine = float((gpu * reference).sum(axis=1).min())
        step, base = statistics.median(rates["step"]), statistics.median(rates["st"])
        result[precision] = {"step_per_s": round(step, 1), "st_encode_per_s": round(base, 1),
                             "ratio": round(step / base, 3), "all": rates,
                             "min_cosine_vs_cpu_fp32": round(cosine, 5)}
        print(f"embed {precision}: step {step:,.0f}/s, encode {base:,.0f}/s, ratio {step / base:.3f}x; "
              f"min cosine vs CPU fp32 {cosine:.5f}", flush=True)
        del st
    # recall@5 on the shipped corpus, exact search over the GPU (bf16) vectors
    chunk(output=str(tmp / "docs-chunks"))
    embed(data=str(tmp / "docs-chunks"), output=str(tmp / "docs-emb"), model=model, device=device, precision="bf16")
    ids, vectors, _ = read_embeddings(str(tmp / "docs-emb"), "gpu-check")
    shipped = pq.read_table(tmp / "docs-emb" / "chunks.parquet", columns=["text"]).column("text").to_pylist()
    queries = load_encoder(model, device, "bf16").encode([query_sentence(t) for t in shipped], batch)
    top = np.argsort(-(queries @ vectors.T), axis=1)[:, :5]
    recall = float((top == np.arange(len(ids))[:, None]).any(axis=1).mean())
    result["recall_at_5_bf16_exact"] = round(recall, 4)
    print(f"recall@5 (bf16 vectors and queries, exact search, {len(ids)} chunks): {recall:.3f}", flush=True)
    return result


def batch_infer_check(train_output: str, data: str, rows: int, tmp: Path, device: str,
                      sweep: tuple[int, ...] = ()) -> dict:
    import os

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from xpuflow.steps.rag.batch_infer import MEMORY_ENV, batch_infer

    stats = json.loads((Path(data) / "stats.json").read_text())
    table = pq.read_table(Path(data) / stats["files"]["test"])
    big = pa.concat_tables([table] * (rows // len(table) + 1)).slice(0, rows)
    pq.write_table(big, tmp / "big.parquet")
    result: dict = {"rows": rows}
    runs = {}
    for label, dev, env in (("cuda_placement_memory", device, "141"), ("cuda_measured", device, None),
                            ("cpu", "cpu", None)):
        if env:
            os.environ[MEMORY_ENV] = env
        else:
            os.environ.pop(MEMORY_ENV, None)
        batch_infer(model=train_output, data=str(tmp / "big.parquet"), output=str(tmp / f"warm-{label}"),
                    device=dev)  # warm-up (CUDA context, kernels)
        t0 = time.perf_counter()
        summary = batch_infer(model=train_output, data=str(tmp / "big.parquet"), output=str(tmp / f"pred-{label}"),
                              device=dev)
        seconds = time.perf_counter() - t0
        runs[label] = pq.read_table(tmp / f"pred-{label}" / "predictions.parquet").column("predicted").to_numpy()
        result[label] = {"rows_per_s": round(rows / seconds, 1), "batch_size": summary["batch_size"],
                         "rule": summary["batch_size_rule"], "gpu_memory_gib": summary["gpu_memory_gib"]}
        print(f"batch_infer {label}: {rows / seconds:,.0f} rows/s, batch {summary['batch_size']} "
              f"({summary['batch_size_rule']})", flush=True)
    for forced in sweep:  # rows/s by batch size on the device, to check the host cap
        t0 = time.perf_counter()
        batch_infer(model=train_output, data=str(tmp / "big.parquet"), output=str(tmp / f"sweep-{forced}"),
                    device=device, batch_size=forced)
        result.setdefault("sweep_rows_per_s", {})[forced] = round(rows / (time.perf_counter() - t0), 1)
        print(f"batch_infer {device} batch {forced}: {result['sweep_rows_per_s'][forced]:,.0f} rows/s", flush=True)
    result["agreement_cuda_vs_cpu"] = float(np.mean(runs["cuda_measured"] == runs["cpu"]))
    result["speedup_cuda_over_cpu"] = round(result["cuda_measured"]["rows_per_s"] / result["cpu"]["rows_per_s"], 2)
    print(f"batch_infer: predicted classes agree CUDA vs CPU on {result['agreement_cuda_vs_cpu']:.5%} of rows; "
          f"CUDA {result['speedup_cuda_over_cpu']}x the CPU", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--embed-model", required=True, help="a sentence-transformers model directory or package")
    parser.add_argument("--train-output", required=True, help="a train step output (model.pt)")
    parser.add_argument("--data", required=True, help="a preprocess output")
    parser.add_argument("--copies", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--out", default="")
    parser.add_argument("--skip-embed", action="store_true", help="only the batch_infer check")
    parser.add_argument("--sweep", default="", help="batch sizes to time batch_infer with, e.g. 8192,65536")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu: a dry run of this script on a machine without a GPU (bf16 only; not GPU figures)")
    args = parser.parse_args()

    import torch

    logging.basicConfig(level=logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="xpuflow-gpu-rag-"))
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "none (dry run on the CPU)"
    summary = {"gpu": gpu, "torch": torch.__version__,
               "embed": None if args.skip_embed else embed_check(args.embed_model, args.copies, args.batch_size,
                                                                 args.reps, tmp, args.device),
               "batch_infer": batch_infer_check(args.train_output, args.data, args.rows, tmp, args.device,
                                               tuple(int(b) for b in args.sweep.split(",") if b))}
    text = json.dumps(summary, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
