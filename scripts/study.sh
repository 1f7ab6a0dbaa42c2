#!/usr/bin/env bash
# The PI paper in miniature: one command runs the paper's experiments at toy scale and writes a
# report that states where the miniature agrees or disagrees with the paper's four claims.
#
# Usage: scripts/study.sh [--ci | --smoke | --gpu] OUT_DIR
#   (default) CPU, about 45 minutes on 2 cores: configs/study_cpu_{base,pi,ft}.yaml as written
#   --ci      CPU, about 8 minutes: the same jobs with fewer steps, one test document, fewer trials
#   --smoke   CPU, about 2 minutes: a handful of steps; what the integration test runs (numbers mean nothing)
#   --gpu     one CUDA GPU, under 10 minutes: configs/study_gpu_*.yaml, ~90M parameters, L = 512 -> L' = 4096
# LONGTUNE_BIN=path/to/longtune skips the build and uses that binary.
#
# Steps (each skipped or resumed when its output exists, so a rerun continues):
#   1. corpus + tokenizer (scripts/make_corpus.sh); the corpus plus synthetic passkey drills in its
#      train split (see below); prepare-data                                    -> OUT/corpus, OUT/tokens
#   2. pretrain the base at window L, checkpoints along the way                 -> OUT/runs/base
#   3. PI: linear RoPE scaling x(L'/L), fine-tune at L', checkpoint every N     -> OUT/runs/pi
#   4. FT: the same fine-tuning without PI (the paper's baseline)              -> OUT/runs/ft
#   5. perplexity (sliding window, BOS, new tokens scored) of the base at L..L' -> OUT/eval/*.json
#      (Table 1), of the base's pretraining checkpoints at L and L', of PI with 0 steps and of PI and
#      FT after each checkpoint at L and L' (Table 3; every window after the last step)
#   6. passkey retrieval at L' for PI and FT after 0 steps and each checkpoint   -> OUT/passkey/*.json (Table 4)
#   7. `longtune study-report OUT`: OUT/report/study.md with the verdicts and PNG charts
# OUT/timings.tsv records the seconds of each phase; OUT/study.json the settings.
#
# Passkey drills: LLaMA learned in-context retrieval from a trillion tokens; a 2M-parameter model on
# 1.6M tokens of Bible and dictionaries does not (0% passkey accuracy even inside its own window), so
# Table 4 would say nothing. The train split therefore gets DRILLS synthetic passkey prompts with
# their answers (`longtune data passkey-drills`, fillers short enough to fit in L), about 10% of the
# training tokens. Pretraining teaches retrieval within L; neither fine-tuning sees a key farther
# than L from its question, so retrieval at L..L' has to come from the position handling.
# Validation and test hold no drills.
#
# Perplexity stride: the paper's S = 256 is L/8 of LLaMA's window. Scoring every window size at a
# small fixed stride costs W/S forward tokens per scored token (8x at 4L with S = L/2), more than 2
# CPU cores have for ~25 evaluations, so the study scores each window's second half (S = W/2): the
# scored tokens see between W/2 and W tokens of context, at W = 4L all of it beyond L.
set -euo pipefail
cd "$(dirname "$0")/.."

variant=cpu
case "${1:-}" in
  --ci) variant=ci; shift ;;
  --smoke) variant=smoke; shift ;;
  --gpu) variant=gpu; shift ;;
esac
if [ $# -ne 1 ] || [[ "$1" == -* ]]; then
  echo "usage: $0 [--ci | --smoke | --gpu] OUT_DIR" >&2
  exit 2
fi
mkdir -p "$1"
OUT="$(cd "$1" && pwd)"

# Per variant: configs, L and factor, step counts, evaluation sizes.
config=cpu
L=128 FACTOR=4
PT_STEPS=1600 PT_EVERY=300        # pretraining steps, checkpoint interval (extrapolation vs pretraining)
FT_STEPS=200 FT_EVERY=50          # fine-tuning steps per method, checkpoint interval (Table 3/4 columns)
EVAL_DOCS=3                       # test documents for perplexity (0: all)
STRIDE_FRACTION=0.5               # sliding-window stride = W/2 for window W (see below)
PK_DISTANCES=32 PK_TRIALS=5       # passkey grid and trials per distance (the paper: 32 x 10)
DRILLS=5000 DRILL_FILLER=200      # passkey drills in the train split, filler characters per drill at most
EVAL_DTYPE=float32                # dtype of the evaluations
DEVICE_NOTE="CPU"
case "$variant" in
  ci)
    PT_STEPS=400 PT_EVERY=200 FT_STEPS=40 FT_EVERY=10 EVAL_DOCS=1 PK_DISTANCES=16 PK_TRIALS=4 ;;
  smoke)
    PT_STEPS=12 PT_EVERY=6 FT_STEPS=4 FT_EVERY=2 EVAL_DOCS=1 PK_DISTANCES=4 PK_TRIALS=1 DRILLS=50 ;;
  gpu)
    config=gpu L=512 FACTOR=8 PT_STEPS=600 PT_EVERY=200 FT_STEPS=200 FT_EVERY=50 EVAL_DOCS=0
    PK_DISTANCES=32 PK_TRIALS=5 EVAL_DTYPE=bfloat16 DRILLS=600 DRILL_FILLER=1700 DEVICE_NOTE="one CUDA GPU" ;;
esac
LP=$((L * FACTOR))
WINDOWS=$L
w=$L
while [ "$w" -lt "$LP" ]; do w=$((w * 2)); WINDOWS="$WINDOWS,$w"; done

if [ -n "${LONGTUNE_BIN:-}" ]; then
  LT=$LONGTUNE_BIN               # a binary built elsewhere (the integration test passes its own)
elif [ "$variant" = gpu ] && [ -x build/bundle/bin/longtune ] && [ ! -x build/bin/longtune ]; then
  LT=build/bundle/bin/longtune   # scripts/bundle_runtime.sh on a machine without our Debian libraries
  export LD_LIBRARY_PATH="$PWD/build/bundle/lib:${LD_LIBRARY_PATH:-}"
else
  scripts/build.sh
  LT=build/bin/longtune
fi
# Spinning OpenMP workers stall badly when the cores are shared with other jobs; passive waiting
# costs nothing when they are not.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
command -v gnuplot >/dev/null || { echo "study: gnuplot is needed for the charts (apt-get install gnuplot-nox)" >&2; exit 1; }

start=$(date +%s)
mkdir -p "$OUT/eval" "$OUT/passkey" "$OUT/logs"
: >"$OUT/timings.tsv"
phase() {  # NAME COMMAND...: runs it, logs to OUT/logs/NAME.log, records its seconds
  local name=$1 t0
  shift
  t0=$(date +%s)
  echo "== [$(( $(date +%s) - start ))s] $name"
  # Not `if ! cmd`: errexit would be off inside the phase's shell functions.
  set +e
  (set -e; "$@") >"$OUT/logs/$name.log" 2>&1
  local status=$?
  set -e
  if [ "$status" -ne 0 ]; then
    echo "study: phase '$name' failed; its log ($OUT/logs/$name.log) ends with:" >&2
    tail -20 "$OUT/logs/$name.log" >&2
    exit 1
  fi
  printf '%s\t%s\n' "$name" "$(( $(date +%s) - t0 ))" >>"$OUT/timings.tsv"
}
ckpt() { printf '%s/runs/%s/checkpoints/step_%08d' "$OUT" "$1" "$2"; }
data_sets=(--set "data.train=$OUT/tokens/train" --set "data.validation=$OUT/tokens/validation"
           --set "data.tokenizer=$OUT/corpus/tokenizer.model")

with_drills() {  # the corpus, plus the drills as one more training book
  if [ ! -f "$OUT/study_corpus/train/90000.txt" ]; then
    rm -rf "$OUT/study_corpus.tmp"
    mkdir -p "$OUT/study_corpus.tmp"
    cp -r "$OUT/corpus/train" "$OUT/corpus/validation" "$OUT/corpus/test" "$OUT/corpus/metadata.csv" \
      "$OUT/study_corpus.tmp/"
    "$LT" data passkey-drills --out "$OUT/study_corpus.tmp/train/90000.txt" --count "$DRILLS" \
      --max-filler-chars "$DRILL_FILLER" --seed 1
    rm -rf "$OUT/study_corpus"
    mv "$OUT/study_corpus.tmp" "$OUT/study_corpus"
  fi
}
phase corpus scripts/make_corpus.sh "$OUT/corpus" "$LT"
phase drills with_drills
phase prepare_data "$LT" prepare-data --input "$OUT/study_corpus" --tokenizer "$OUT/corpus/tokenizer.model" \
  --out "$OUT/tokens"
finished() { [ -f "$(ckpt "$1" "$2")/COMPLETE" ]; }  # a run whose last checkpoint is complete is skipped
earlier() {  # NAME RUN: the seconds of a run finished by an earlier invocation, from its metrics.jsonl
  printf '%s (an earlier invocation)\t%s\n' "$1" \
    "$(grep -o '"elapsed_s": [0-9.]*' "$OUT/runs/$2/metrics.jsonl" | tail -1 | grep -o '[0-9.]*$')" >>"$OUT/timings.tsv"
}
finished base "$PT_STEPS" && earlier pretrain base || phase pretrain "$LT" train "configs/study_${config}_base.yaml" "${data_sets[@]}" --set "train.run_dir=$OUT/runs/base" \
  --set "train.steps=$PT_STEPS" --set "checkpoint.every=$PT_EVERY" --set "data.seq_len=$L"
for method in pi ft; do
  finished "$method" "$FT_STEPS" && earlier "finetune_$method" "$method" || phase "finetune_$method" "$LT" train "configs/study_${config}_$method.yaml" "${data_sets[@]}" \
    --set "model.source=$OUT/runs/base" --set "train.run_dir=$OUT/runs/$method" \
    --set "train.steps=$FT_STEPS" --set "checkpoint.every=$FT_EVERY"
done

BASE=$(ckpt base "$PT_STEPS")
ppl() {  # OUT_NAME MODEL WINDOWS [extra args]
  "$LT" eval perplexity --quiet --model "$2" --data "$OUT/tokens" --split test --windows "$3" \
    --stride-fraction "$STRIDE_FRACTION" \
    --batch 8 --max-documents "$EVAL_DOCS" --dtype "$EVAL_DTYPE" --out "$OUT/eval/$1.json" "${@:4}"
}
passkey() {  # OUT_NAME MODEL TITLE [extra args]
  "$LT" eval passkey --quiet --model "$2" --tokenizer "$OUT/corpus/tokenizer.model" --length "$LP" \
    --distances "$PK_DISTANCES" --trials "$PK_TRIALS" --seed 0 --label "$3" --dtype "$EVAL_DTYPE" \
    --out "$OUT/passkey/$1.json" --plot "$OUT/passkey/$1.png" "${@:4}"
}
evaluate_all() {
  ppl base "$BASE" "$WINDOWS"
  for ((s = PT_EVERY; s < PT_STEPS; s += PT_EVERY)); do
    ppl "base_step_$s" "$(ckpt base "$s")" "$L,$LP"
  done
  cp "$OUT/eval/base.json" "$OUT/eval/base_step_$PT_STEPS.json"  # the last checkpoint is the base
  ppl pi_step_0 "$BASE" "$WINDOWS" --rope-scaling "linear:$FACTOR"
  for ((s = FT_EVERY; s <= FT_STEPS; s += FT_EVERY)); do
    windows="$L,$LP"
    [ "$s" -eq "$FT_STEPS" ] && windows=$WINDOWS
    ppl "pi_step_$s" "$(ckpt pi "$s")" "$windows"
    ppl "ft_step_$s" "$(ckpt ft "$s")" "$windows"
  done
}
run_passkeys() {
  passkey pi_step_0 "$BASE" "PI, 0 steps" --rope-scaling "linear:$FACTOR"
  passkey ft_step_0 "$BASE" "base, no PI"
  for ((s = FT_EVERY; s <= FT_STEPS; s += FT_EVERY)); do
    passkey "pi_step_$s" "$(ckpt pi "$s")" "PI, $s steps"
    passkey "ft_step_$s" "$(ckpt ft "$s")" "FT, $s steps"
  done
}
phase perplexity evaluate_all
phase passkey run_passkeys

steps=$(seq -s, "$FT_EVERY" "$FT_EVERY" "$FT_STEPS")
pt_steps=$( (seq "$PT_EVERY" "$PT_EVERY" "$((PT_STEPS - 1))"; echo "$PT_STEPS") | paste -sd,)
params=$(grep -m1 -o '[0-9.]*M parameters' "$OUT/runs/base/train.log" || true)
cat >"$OUT/study.json" <<JSON
{"variant": "$variant", "L": $L, "factor": $FACTOR, "steps": [$steps], "pretrain_steps": [$pt_steps],
 "setup": {
  "machine": "$(nproc) cores, $DEVICE_NOTE ($(uname -m)); $(date -u +%Y-%m-%d)",
  "model": "$(grep -m1 'source' "configs/study_${config}_base.yaml" | sed 's/^ *source: *//; s/"//g; s/ *#.*//') ($params)",
  "corpus": "embedded corpus (scripts/make_corpus.sh) with the drills: $(grep -m1 -o '[0-9]* tokens ->' "$OUT/runs/base/train.log" | grep -o '^[0-9]*') train tokens",
  "pretraining": "$PT_STEPS steps at L = $L (configs/study_${config}_base.yaml), checkpoints every $PT_EVERY",
  "fine-tuning": "$FT_STEPS steps at L' = $LP per method, checkpoints every $FT_EVERY (configs/study_${config}_{pi,ft}.yaml)",
  "perplexity": "test split ($( [ "$EVAL_DOCS" = 0 ] && echo all || echo "first $EVAL_DOCS") documents), sliding window W in {$WINDOWS}, stride W/2 (each window scores its second half), BOS prepended, ppl = exp(mean of window mean NLL)",
  "passkey": "L' = $LP, $PK_DISTANCES distances over (0, L'], $PK_TRIALS trials each, 10 greedy tokens, seed 0",
  "retrieval drills": "$DRILLS synthetic passkey prompts with answers in the train split (filler <= $DRILL_FILLER characters, so each fits in L); none in validation/test"
 }}
JSON
"$LT" study-report "$OUT"
echo "total: $(( $(date +%s) - start )) s; report: $OUT/report/study.md"
