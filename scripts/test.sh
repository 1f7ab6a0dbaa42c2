#!/usr/bin/env bash
# README command 2 (and CI): set up, build, run every test (unit + HF-oracle tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
eval "$(scripts/setup.sh)"
export LONGTUNE_TRANSFORMERS4
ctest --test-dir build --output-on-failure -j 2 "$@"
