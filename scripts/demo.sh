#!/usr/bin/env bash
# README command 1: set up, build, and train a tiny random LLaMA for a few steps on generated tokens.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
build/bin/longtune smoke "$@"
