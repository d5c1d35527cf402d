#!/usr/bin/env bash
# GPU check of the train step: one prepared script for a machine with NVIDIA GPUs.
#
#     bash bench/gpu_check.sh            # from the repository root (or anywhere: it cd's there)
#     EPOCHS=20 BATCH=64 REPS=2 BUDGET_S=300 OUT=/tmp/out bash bench/gpu_check.sh
#     EMBED_MODEL=/path/to/minilm RAG_ARGS="--copies 100 --rows 500000" bash bench/gpu_check.sh
#
# What it does, in about 5 minutes at most (BUDGET_S, default 300):
#   1. prints nvidia-smi; fails at once, with a message, when no NVIDIA GPU is visible;
#   2. finds a python3 whose torch sees CUDA (python3, else the project's .venv); if none,
#      tries `pip install torch ...` into a temporary venv within its own 5-minute budget
#      (BUDGET_S starts after it) and says so; machines without network access fail here,
#      with a message;
#   3. prints torch's version and CUDA availability; preprocesses the built-in digits data;
#   4. runs `python -m xpuflow step train` on CUDA with --precision fp32 and bf16,
#      alternately REPS times, and prints the step's own samples/s (metrics.json) and the
#      ratio bf16/fp32;
#   5. with more than one GPU: DDP with `python -m torch.distributed.run --nproc-per-node N
#      -m xpuflow step train ...` (global batch BATCH*N, so each GPU gets BATCH) and prints
#      samples/s;
#   6. writes a summary to $OUT/gpu_check.json when OUT is set;
#   7. with EMBED_MODEL set (a sentence-transformers model directory or package): the RAG steps,
#      bench/gpu_rag_check.py (embed vs SentenceTransformer.encode in fp16 and bf16, batch_infer
#      on CUDA vs the CPU); its summary goes to $OUT/gpu_rag_check.json.
# Exit codes: 0 done, 2 no GPU / no usable torch, 3 a run failed, 124 the budget ran out.
# GPU_CHECK_DRY_RUN_CPU=1 (with GPU_CHECK_NGPU=N) runs the same flow on the CPU, only to test
# this script on a machine without a GPU; its figures are not GPU figures.
set -euo pipefail

BUDGET_S=${BUDGET_S:-300}
EPOCHS=${EPOCHS:-20}
BATCH=${BATCH:-64}
REPS=${REPS:-2}
START=$(date +%s)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/xpuflow-gpu-check.XXXXXX")
DRY=${GPU_CHECK_DRY_RUN_CPU:-0}
DEVICE=cuda
finish() {
    if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then  # the runs' logs, in one file
        for f in "$WORK"/*.log; do [ -e "$f" ] && { echo "===== $(basename "$f")"; cat "$f"; }; done >"$OUT/gpu_check_logs.txt" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap finish EXIT

say() { printf '%s\n' "$*"; }
die() { local code=$1; shift; printf 'gpu_check: %s\n' "$*" >&2; exit "$code"; }
left() { echo $((BUDGET_S - ($(date +%s) - START))); }
# run a command within what is left of the budget (at least 5 s)
budgeted() {
    local t
    t=$(left)
    [ "$t" -ge 5 ] || die 124 "the ${BUDGET_S}s budget ran out before: $*"
    timeout --kill-after=10 "$t" "$@"
}

# ---- 1. GPUs
if [ "$DRY" = 1 ]; then
    DEVICE=cpu
    NGPU=${GPU_CHECK_NGPU:-1}
    say "DRY RUN on the CPU (GPU_CHECK_DRY_RUN_CPU=1): tests this script only; figures are not GPU figures"
else
    command -v nvidia-smi >/dev/null 2>&1 || die 2 "nvidia-smi not found: this machine has no NVIDIA driver/GPU. Run it on a GPU machine."
    if ! nvidia-smi; then
        die 2 "nvidia-smi failed: no usable NVIDIA GPU is visible."
    fi
    NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
    [ "${NGPU:-0}" -ge 1 ] || die 2 "nvidia-smi lists no GPU (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset})."
    say "GPUs visible: $NGPU"
fi

# ---- 2. a python with torch
need='import torch, numpy, pyarrow, sklearn, matplotlib'
[ "$DRY" = 1 ] || need="$need; assert torch.cuda.is_available()"
PY=""
for cand in python3 "$ROOT/.venv/bin/python"; do  # the project's .venv is CPU-only torch where it was built
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "$need" >/dev/null 2>&1; then
        PY=$(command -v "$cand")
        break
    fi
done
INSTALLED_NOTE="none"
if [ -z "$PY" ]; then
    command -v python3 >/dev/null 2>&1 || die 2 "no python3 on this machine."
    say "no python3 here imports torch, numpy, pyarrow, scikit-learn and matplotlib: trying pip install into a temporary venv (5-minute budget)"
    python3 -m venv --system-site-packages "$WORK/venv" || die 2 "cannot create a venv (python3 -m venv failed)."
    if timeout --kill-after=10 300 "$WORK/venv/bin/pip" install -q torch numpy pyarrow pandas scikit-learn matplotlib fsspec tqdm pyyaml; then
        PY="$WORK/venv/bin/python"
        START=$(date +%s)  # the runs' budget starts after the install
        INSTALLED_NOTE="pip-installed torch and the train extras into a temporary venv"
        say "$INSTALLED_NOTE"
    else
        die 2 "pip install of torch failed or ran past 5 minutes (no network on this machine?). Provide a python3 with torch (CUDA build)."
    fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
say "python: $PY"
"$PY" - <<'EOF' || die 2 "torch is importable but CUDA is not available to it (a CPU-only build, or a driver mismatch)."
import os, sys
import torch
print(f"Python {sys.version.split()[0]}, torch {torch.__version__}, CUDA build {torch.version.cuda}, "
      f"cuda available: {torch.cuda.is_available()}, devices: {torch.cuda.device_count()}")
if not torch.cuda.is_available():
    sys.exit(0 if os.environ.get("GPU_CHECK_DRY_RUN_CPU") == "1" else 1)
for i in range(torch.cuda.device_count()):
    print(f"  cuda:{i} {torch.cuda.get_device_name(i)}, bf16 supported: {torch.cuda.is_bf16_supported()}")
EOF

[ "$DRY" = 1 ] || NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count())')

# ---- 3. data
budgeted "$PY" -m xpuflow step preprocess --output "$WORK/data" >"$WORK/preprocess.log" 2>&1 \
    || { tail -20 "$WORK/preprocess.log" >&2; die 3 "preprocess failed"; }
say "preprocessed digits into $WORK/data"

# samples/s of one finished run, from its metrics.json
sps() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["samples_per_second"])' "$1/metrics.json"; }

# ---- 4. one GPU: fp32 vs bf16, alternately
RUNS=()
for rep in $(seq 1 "$REPS"); do
    for prec in fp32 bf16; do
        out="$WORK/train-$prec-$rep"
        budgeted "$PY" -m xpuflow step train --data "$WORK/data" --output "$out" --device "$DEVICE" \
            --precision "$prec" --epochs "$EPOCHS" --batch-size "$BATCH" >"$out.log" 2>&1 \
            || { tail -30 "$out.log" >&2; die 3 "train ($prec) failed"; }
        s=$(sps "$out")
        say "train on 1 GPU, $prec, round $rep: $s samples/s"
        RUNS+=("$prec:$out")
    done
done

# ---- 5. several GPUs: DDP
DDP_OUT=""
if [ "$NGPU" -gt 1 ]; then
    DDP_OUT="$WORK/train-ddp"
    budgeted "$PY" -m torch.distributed.run --standalone --nproc-per-node "$NGPU" -m xpuflow step train \
        --data "$WORK/data" --output "$DDP_OUT" --device "$DEVICE" --precision bf16 --epochs "$EPOCHS" \
        --batch-size $((BATCH * NGPU)) >"$DDP_OUT.log" 2>&1 \
        || { tail -30 "$DDP_OUT.log" >&2; die 3 "DDP train on $NGPU GPUs failed"; }
    say "train with DDP on $NGPU GPUs, bf16, global batch $((BATCH * NGPU)): $(sps "$DDP_OUT") samples/s"
else
    say "one GPU: DDP run skipped"
fi

# ---- 6. summary
"$PY" - "$NGPU" "$EPOCHS" "$BATCH" "$DDP_OUT" "$INSTALLED_NOTE" "$(($(date +%s) - START))" "${RUNS[@]}" <<'EOF'
import json, os, statistics, sys
import torch
ngpu, epochs, batch, ddp_out, installed, seconds, *runs = sys.argv[1:]
per = {"fp32": [], "bf16": []}
for item in runs:
    prec, out = item.split(":", 1)
    m = json.load(open(os.path.join(out, "metrics.json")))
    per[prec].append(m["samples_per_second"])
summary = {
    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (dry run on the CPU)", "gpus": int(ngpu), "torch": torch.__version__, "cuda": torch.version.cuda,
    "data": "builtin:digits", "epochs": int(epochs), "batch_size": int(batch), "installed": installed,
    "samples_per_second": {p: statistics.median(v) for p, v in per.items()}, "all_runs": per,
    "script_seconds": int(seconds),
}
summary["ratio_bf16_over_fp32"] = summary["samples_per_second"]["bf16"] / summary["samples_per_second"]["fp32"]
if ddp_out:
    m = json.load(open(os.path.join(ddp_out, "metrics.json")))
    summary["ddp"] = {"world_size": m["world_size"], "precision": m["precision"], "global_batch": m["batch_size"],
                      "samples_per_second": m["samples_per_second"],
                      "speedup_over_1_gpu_bf16": m["samples_per_second"] / summary["samples_per_second"]["bf16"]}
    print(f"DDP on {m['world_size']} GPUs: {m['samples_per_second']:,.0f} samples/s, "
          f"{summary['ddp']['speedup_over_1_gpu_bf16']:.2f}x one GPU (bf16)")
print(f"median samples/s on 1 GPU: fp32 {summary['samples_per_second']['fp32']:,.0f}, "
      f"bf16 {summary['samples_per_second']['bf16']:,.0f}; ratio bf16/fp32 {summary['ratio_bf16_over_fp32']:.2f}x")
print("note: digits with a small MLP is launch-bound on a GPU; these figures measure the step's per-step overhead, "
      "not the GPU's arithmetic")
if os.environ.get("OUT"):
    path = os.path.join(os.environ["OUT"], "gpu_check.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)
    print(f"summary written to {path}")
else:
    print(json.dumps(summary, indent=2))
EOF

# ---- 7. the RAG steps on the GPU (EMBED_MODEL: a sentence-transformers model directory or package)
if [ -n "${EMBED_MODEL:-}" ]; then
    rag_args=(--embed-model "$EMBED_MODEL" --train-output "${RUNS[0]#*:}" --data "$WORK/data")
    [ "$DRY" = 1 ] && rag_args+=(--device cpu)
    [ -n "${OUT:-}" ] && rag_args+=(--out "$OUT/gpu_rag_check.json")
    # shellcheck disable=SC2086  # RAG_ARGS: extra options, split on purpose
    budgeted "$PY" bench/gpu_rag_check.py "${rag_args[@]}" ${RAG_ARGS:-} >"$WORK/rag.log" 2>&1 \
        || { tail -40 "$WORK/rag.log" >&2; die 3 "the RAG check failed"; }
    grep -E '^(embed|recall|batch_infer)' "$WORK/rag.log" || true
else
    say "EMBED_MODEL not set: RAG check (embed, batch_infer) skipped"
fi
