#!/usr/bin/env bash
# README command 1: Position Interpolation in miniature, on 2 CPU cores, from nothing.
#   1. set up and build (scripts/build.sh)
#   2. build the embedded corpus from Debian's public-domain texts and train its tokenizer
#   3. tokenize it once (prepare-data)
#   4. pretrain a small LLaMA at window L = 128            (configs/demo_base.yaml)
#   5. extend it 4x by PI to L' = 512 and fine-tune briefly (configs/demo_pi.yaml)
#   6. print the paper's Table 3 in miniature: test-set perplexity (sliding window, stride L'/2) of
#      (a) the base extrapolating to L', (b) PI without fine-tuning, (c) PI fine-tuned, (d) the base at L
# Every step resumes or skips what is already done, so rerunning it is cheap. Outputs: runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
LT=build/bin/longtune
DEMO=runs/demo
start=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - start ))s] $*"; }

step "corpus and tokenizer -> $DEMO/corpus"
scripts/make_corpus.sh "$DEMO/corpus" "$LT"
step "prepare-data -> $DEMO/tokens"
"$LT" prepare-data --input "$DEMO/corpus" --tokenizer "$DEMO/corpus/tokenizer.model" --out "$DEMO/tokens"
step "pretrain the base model at L = 128 -> $DEMO/base"
"$LT" train configs/demo_base.yaml
step "PI x4 to L' = 512 and fine-tune -> $DEMO/pi"
"$LT" train configs/demo_pi.yaml
"$LT" plot "$DEMO/base" >/dev/null
"$LT" plot "$DEMO/pi" >/dev/null

step "evaluate on the test split"
ppl() {  # model window stride [extra args]: the paper's perplexity figure
  "$LT" eval perplexity --quiet --model "$1" --data "$DEMO/tokens" --split test --window "$2" --stride "$3" \
    --batch 16 "${@:4}" | sed -n 's/.*"ppl":\([0-9.eE+-]*\).*/\1/p'
}
a=$(ppl "$DEMO/base" 512 256)
b=$(ppl "$DEMO/base" 512 256 --rope-scaling linear:4)
c=$(ppl "$DEMO/pi" 512 256)
d=$(ppl "$DEMO/base" 128 64)
step "done"
cat <<TABLE

Test-set perplexity (embedded corpus, sliding window, lower is better)
| model                                   | eval window | PPL      |
|-----------------------------------------|-------------|----------|
| (a) base (L = 128), extrapolating       | L' = 512    | $(printf '%8.2f' "$a") |
| (b) PI x4, no fine-tuning               | L' = 512    | $(printf '%8.2f' "$b") |
| (c) PI x4, fine-tuned at 512            | L' = 512    | $(printf '%8.2f' "$c") |
| (d) base at its own window              | L  = 128    | $(printf '%8.2f' "$d") |

runs:    $DEMO/base and $DEMO/pi (metrics.jsonl, train.log, checkpoints/, hf/ = HF transformers format)
plots:   $DEMO/base/plots/*.png, $DEMO/pi/plots/*.png
TABLE
