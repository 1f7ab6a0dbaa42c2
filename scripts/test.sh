#!/usr/bin/env bash
# README command 2 (and CI): set up, build, run every test (unit, HF-oracle, integration, a short
# fuzzing pass). `scripts/test.sh --sanitize [ctest args]` instead builds build-sanitize/ with ASan +
# UBSan (LONGTUNE_SANITIZE) and runs the C++ unit tests there (slow; not part of CI).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--sanitize" ]; then
  shift
  eval "$(scripts/setup.sh)"
  cmake -S . -B build-sanitize -G Ninja -DLONGTUNE_SANITIZE=ON -DCMAKE_PREFIX_PATH="$LONGTUNE_TORCH_CMAKE" \
    -DLONGTUNE_PYTHON="" >/dev/null
  cmake --build build-sanitize -j "$(nproc)"
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}" UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
  exec ctest --test-dir build-sanitize --output-on-failure -j 2 -L unit "$@"
fi
scripts/build.sh
eval "$(scripts/setup.sh)"
export LONGTUNE_TRANSFORMERS4
ctest --test-dir build --output-on-failure -j 2 "$@"
