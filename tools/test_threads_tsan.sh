#!/usr/bin/env bash
# Builds the thread-safety test under ThreadSanitizer (build-tsan/) and runs it: one Engine
# shared by 4 threads, separate Engines per thread, and the worker mode, each call on one OpenMP
# thread so that only the library's own threads run (tests/tsan.supp says why).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${MUE_TSAN_BUILD_DIR:-$root/build-tsan}"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMUE_SANITIZE=thread \
  -DMUE_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target test_engine_threads test_threads
cd "$root"
export MUE_TEST_OMP_THREADS=1 OMP_NUM_THREADS=1
export TSAN_OPTIONS="suppressions=$root/tests/tsan.supp halt_on_error=1 second_deadlock_stack=1"
"$build/test_threads"
"$build/test_engine_threads"
