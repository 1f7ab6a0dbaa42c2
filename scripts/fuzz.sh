#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang, ASan and UBSan into build-fuzz/, then runs each
# for SECONDS (default 60) from its seed corpus under tests/fuzz/corpus/<target>/ (new inputs go to
# build-fuzz/corpus/<target>/, crashes to build-fuzz/crashes/). Prints executions per target; exits
# non-zero if any target crashed, leaked, hung or tripped a sanitizer. Optional: --runs N stops a
# target after N executions if that comes before SECONDS; target names after SECONDS run only those.
#   scripts/fuzz.sh            # every target, 60 s each
#   scripts/fuzz.sh 3600 job_config_fuzz
#   scripts/fuzz.sh 3600 --runs 10000000 tokenizer_fuzz    # the long run: 10M executions or an hour
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-60}"
shift || true
RUNS=-1
if [ "${1:-}" = "--runs" ]; then RUNS="$2"; shift 2; fi
eval "$(scripts/setup.sh)"
CXX_CLANG=$(command -v clang++-14 || command -v clang++)
cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER="$CXX_CLANG" -DLONGTUNE_FUZZ=ON \
  -DCMAKE_PREFIX_PATH="$LONGTUNE_TORCH_CMAKE" >/dev/null
cmake --build build-fuzz --target fuzz_targets -j "$(nproc)"

declare -A DICT=([safetensors_fuzz]=json [hf_config_fuzz]=json [job_config_fuzz]=yaml [manifest_fuzz]=json
                 [checkpoint_marker_fuzz]=json [bpe_tokenizer_fuzz]=json [import_tokens_fuzz]=json)
TARGETS=("$@")
if ((${#TARGETS[@]} == 0)); then
  TARGETS=(safetensors_fuzz hf_config_fuzz job_config_fuzz token_shard_fuzz manifest_fuzz tokenizer_fuzz
           bpe_tokenizer_fuzz import_tokens_fuzz checkpoint_marker_fuzz)
fi
# LibTorch's and our Debian libraries' own allocations are not ours to chase; leaks in our code are.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
mkdir -p build-fuzz/crashes
failed=()
printf '%-24s %12s %10s %8s %8s\n' target executions exec/s seconds result
for t in "${TARGETS[@]}"; do
  mkdir -p "build-fuzz/corpus/$t"
  dict=()
  [ -n "${DICT[$t]:-}" ] && dict=(-dict="tests/fuzz/${DICT[$t]}.dict")
  log="build-fuzz/$t.log"
  status=0
  started=$(date +%s)
  "build-fuzz/bin/$t" -max_total_time="$SECONDS_EACH" -runs="$RUNS" -timeout=10 -rss_limit_mb=4096 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="build-fuzz/crashes/$t-" "${dict[@]}" \
    "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" > "$log" 2>&1 || status=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  result=ok
  if [ "$status" -ne 0 ]; then result="FAILED (exit $status, see $log)"; failed+=("$t"); fi
  printf '%-24s %12s %10s %8s %8s\n' "$t" "$runs" "$rate" "$(( $(date +%s) - started ))" "$result"
done
if ((${#failed[@]})); then
  echo "fuzzing found problems in: ${failed[*]} (inputs in build-fuzz/crashes/)" >&2
  exit 1
fi
