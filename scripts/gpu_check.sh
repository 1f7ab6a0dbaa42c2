#!/usr/bin/env bash
# GPU checks in one call, for any CUDA machine: scripts/gpu_check.sh OUT_DIR
# Uses build/bundle (scripts/bundle_runtime.sh) when present, so a machine with a Python torch 2.11
# but without our Debian libraries can run it; otherwise builds with scripts/build.sh. Runs the CUDA
# unit tests, then trains configs/gpu_check.yaml in bf16 (with and without activation checkpointing)
# and fp32, then sharded (full_shard) through NCCL at world size 1, through Gloo with two processes
# sharing the GPU, and through NCCL with one rank per GPU when there are several (fp32 and bf16
# reduce-scatter); profiles the world-size-1 NCCL run with Nsight Systems where `nsys` exists (prefetch
# depth 1 and 0) and reports how much of the collective time overlaps compute; writes logs and
# metrics under OUT_DIR; prints a summary table last, with each run's device peak beside
# `longtune plan`'s prediction for it.
set -uo pipefail
OUT="${1:?usage: $0 OUT_DIR}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
if [ -x build/bundle/bin/longtune ]; then
  BIN=build/bundle/bin
  TORCH_LIB="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
  export LD_LIBRARY_PATH="$PWD/build/bundle/lib:$TORCH_LIB:${LD_LIBRARY_PATH:-}"
else
  scripts/build.sh || exit 1
  BIN=build/bin
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

echo "== unit tests (CUDA cases included)"
for t in trainer_tests dist_tests eval_tests model_tests data_tests; do
  "$BIN/$t" --gtest_brief=1 > "$OUT/$t.log" 2>&1; echo "$t exit $?: $(grep -E '^\[  (PASSED|FAILED)' "$OUT/$t.log" | tr '\n' ' ')"
done

echo "== data for training"
DATA=runs/gpu/tokens
if [ ! -f "$DATA/manifest.json" ]; then
  if [ -f runs/corpus_tokens/manifest.json ]; then mkdir -p runs/gpu && cp -r runs/corpus_tokens "$DATA"
  else
    scripts/make_corpus.sh runs/gpu/corpus "$BIN/longtune" >/dev/null &&
      "$BIN/longtune" prepare-data --input runs/gpu/corpus --tokenizer runs/gpu/corpus/tokenizer.model --out "$DATA" --quiet
  fi
fi

run() {  # name, extra --set arguments
  local name=$1; shift
  rm -rf "runs/gpu/$name"
  timeout 240 "$BIN/longtune" train configs/gpu_check.yaml --set "train.run_dir=runs/gpu/$name" "$@" \
    > "$OUT/$name.log" 2>&1
  echo "$name exit $?"
  cp "runs/gpu/$name/metrics.jsonl" "$OUT/$name.metrics.jsonl" 2>/dev/null
  "$BIN/longtune" plan configs/gpu_check.yaml --set "train.run_dir=runs/gpu/$name" "$@" --single-process \
    --device cuda --json > "$OUT/$name.plan.json" 2>> "$OUT/$name.log"
}
echo "== training"
run bf16_mixed
run bf16_mixed_ckpt model.activation_checkpointing=true
run fp32 train.precision=fp32 model.dtype=float32
run bf16_mixed_8k data.seq_len=8192 train.micro_batch=2 train.global_batch=8 model.activation_checkpointing=true train.steps=15

# Sharded path: a one-GPU launch runs FSDP through NCCL at world size 1; the same job through Gloo
# with two processes sharing the GPU shows what the CPU-tested backend costs there.
launched() {  # name, ranks, extra --set arguments
  local name=$1 ranks=$2; shift 2
  rm -rf "runs/gpu/$name"
  timeout 300 "$BIN/longtune-run" --standalone --nproc-per-node "$ranks" --stop-grace-period 10 \
    "$BIN/longtune" train configs/gpu_check.yaml --set "train.run_dir=runs/gpu/$name" \
    --set parallel.sharding=full_shard "$@" > "$OUT/$name.log" 2>&1
  echo "$name exit $?"
  cp "runs/gpu/$name/metrics.jsonl" "$OUT/$name.metrics.jsonl" 2>/dev/null
  "$BIN/longtune" plan configs/gpu_check.yaml --set "train.run_dir=runs/gpu/$name" --set parallel.sharding=full_shard \
    "$@" --nproc-per-node "$ranks" --device cuda --json > "$OUT/$name.plan.json" 2>> "$OUT/$name.log"
}
echo "== sharded training"
launched nccl_full_shard_1 1
launched gloo_full_shard_2 2 parallel.backend=gloo train.steps=12
# NCCL with several ranks, one per GPU, when the machine has them: the same job and global batch, so
# its losses follow the world-size-1 run's (bf16: close, not bitwise).
GPUS=$(nvidia-smi -L | wc -l)
if [ "$GPUS" -ge 2 ]; then
  launched "nccl_full_shard_$GPUS" "$GPUS"
  launched "nccl_full_shard_${GPUS}_bf16_reduce" "$GPUS" parallel.reduce_dtype=bfloat16
else
  echo "nccl with several ranks: skipped ($GPUS GPU)"
fi

# Do all-gathers overlap compute? An Nsight Systems profile of the world-size-1 NCCL run (the
# collectives then are copies on ProcessGroupNCCL's stream), judged by scripts/nsys_overlap.py.
echo "== overlap profile"
if command -v nsys > /dev/null; then
  for depth in 1 0; do
    name="overlap_prefetch_$depth"
    rm -rf "runs/gpu/$name"
    RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 LOCAL_WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=$((29600 + depth)) \
      timeout 300 nsys profile --trace=cuda --sample=none --cpuctxsw=none --force-overwrite=true \
      --output "$OUT/$name" "$BIN/longtune" train configs/gpu_check.yaml --set "train.run_dir=runs/gpu/$name" \
      --set parallel.sharding=full_shard --set parallel.prefetch_depth=$depth --set train.steps=8 \
      > "$OUT/$name.log" 2>&1
    echo "$name exit $?"
    nsys export --type sqlite --force-overwrite true --output "$OUT/$name.sqlite" "$OUT/$name.nsys-rep" \
      >> "$OUT/$name.log" 2>&1 &&
      python3 scripts/nsys_overlap.py "$OUT/$name.sqlite" --json "$OUT/$name.overlap.json" | tee -a "$OUT/$name.log"
    rm -f "$OUT/$name.sqlite"
  done
else
  echo "overlap profile: skipped (no nsys on PATH)"
fi

echo "== summary (median over steps after the first 5)"
python3 - "$OUT" <<'PY'
import json, statistics, sys, pathlib
out = pathlib.Path(sys.argv[1])
# The plan's device peak less what lies outside the caching allocator (its "CUDA context" item), so
# it compares with the allocator's measured peak.
def planned(name):
    path = out / f"{name}.plan.json"
    if not path.exists() or not path.read_text().strip(): return float("nan")
    plan = json.loads(path.read_text())
    outside = sum(i["device_bytes"] for i in plan["items"] if i["name"] == "CUDA context")
    return (plan["device_peak_bytes_per_rank"] - outside) / 2**30
print(f"{'run':<30}{'tok/s':>10}{'MFU %':>8}{'peak GiB':>10}{'plan GiB':>10}{'plan/peak':>10}{'loss first':>12}"
      f"{'loss last':>11}{'val ppl':>9}")
for f in sorted(out.glob("*.metrics.jsonl")):
    rows = [json.loads(l) for l in f.read_text().splitlines() if l.strip()]
    train = [r for r in rows if r["kind"] == "train"]
    ev = [r for r in rows if r["kind"] == "eval"]
    if not train: continue
    steady = train[5:] or train
    name = f.name.split('.')[0]
    peak = max(r['device_peak_bytes'] for r in train) / 2**30
    plan = planned(name)
    print(f"{name:<30}{statistics.median(r['tokens_per_s'] for r in steady):>10.0f}"
          f"{100*statistics.median(r['mfu'] for r in steady):>8.1f}{peak:>10.2f}{plan:>10.2f}"
          f"{(plan / peak if peak else float('nan')):>10.3f}{train[0]['loss']:>12.4f}{train[-1]['loss']:>11.4f}{(ev[-1]['val_ppl'] if ev else float('nan')):>9.2f}")
PY
