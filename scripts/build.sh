#!/usr/bin/env bash
# Configures and builds longtune into build/ (Release with line info, ccache, Ninja).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh)"
cmake -S . -B build -G Ninja -DCMAKE_PREFIX_PATH="$LONGTUNE_TORCH_CMAKE" -DLONGTUNE_PYTHON="$LONGTUNE_PYTHON" >/dev/null
cmake --build build -j "$(nproc)"
