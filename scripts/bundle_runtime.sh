#!/usr/bin/env bash
# Packs what the built binaries need to run on a CUDA machine that has LibTorch (a Python torch
# 2.11 install) but not our Debian libraries: stripped copies of build/bin/* and the non-torch shared
# libraries they load (SentencePiece, yaml-cpp, spdlog, fmt, zstd, PCRE2, OpenSSL's libcrypto), into
# build/bundle/{bin,lib}. scripts/gpu_check.sh uses the bundle when it finds one instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf build/bundle
mkdir -p build/bundle/bin build/bundle/lib
for exe in longtune longtune-run trainer_tests dist_tests eval_tests model_tests data_tests; do
  strip --strip-debug -o "build/bundle/bin/$exe" "build/bin/$exe"
done
ldd build/bin/longtune build/bin/trainer_tests build/bin/dist_tests | awk '/=> \// {print $3}' | sort -u |
  grep -E 'libsentencepiece|libprotobuf|libyaml-cpp|libspdlog|libfmt|libzstd|libpcre2|libcrypto' |
  while read -r lib; do cp -L "$lib" build/bundle/lib/; done
du -sh build/bundle >&2
