#!/usr/bin/env bash
# Sets up a fresh Debian machine if needed, builds mue, runs the thread-safety test under
# ThreadSanitizer, then the whole test suite (ctest).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/tools/setup.sh"
bash "$root/tools/build.sh"
bash "$root/tools/test_threads_tsan.sh"
bash "$root/tools/test_asan.sh"
MUE_FUZZ_SECONDS="${MUE_FUZZ_SECONDS:-30}" bash "$root/tools/fuzz.sh"
cd "${MUE_BUILD_DIR:-$root/build}"
ctest --output-on-failure -j "$(nproc)" --timeout 900
