#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/) with clang in build-fuzz/, replays every seed corpus
# and regression input, then fuzzes each target for ${MUE_FUZZ_SECONDS:-60} seconds. Any crash,
# sanitizer report, leak or timeout fails; the input that did it is left in
# build-fuzz/artifacts/<target>/ (keep it under tests/fuzz/regressions/<target>/ once fixed).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${MUE_FUZZ_BUILD_DIR:-$root/build-fuzz}"
seconds="${MUE_FUZZ_SECONDS:-60}"
jobs="${MUE_JOBS:-$(nproc)}"
targets=(safetensors config exit_policy image tokenizer dump)
if [ $# -gt 0 ]; then targets=("$@"); fi

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DMUE_FUZZ=ON -DMUE_BUILD_TESTS=OFF -DMUE_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "$jobs" --target "${targets[@]/#/fuzz_}"

export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# Per input: 20 s and 2 GB at most (an image is limited to 2^20 pixels in its target).
limits=(-timeout=20 -rss_limit_mb=2048 -print_final_stats=0)
for t in "${targets[@]}"; do
  bin="$build/tests/fuzz/fuzz_$t"
  artifacts="$build/artifacts/$t/"
  work="$build/corpus/$t"
  mkdir -p "$artifacts" "$work"
  inputs=("$root/tests/fuzz/corpus/$t")
  [ -d "$root/tests/fuzz/regressions/$t" ] && inputs+=("$root/tests/fuzz/regressions/$t")
  echo "fuzz: $t: replaying ${inputs[*]#$root/}" >&2
  # Every seed and regression input runs once (-runs=0 stops after loading them).
  "$bin" "${limits[@]}" -artifact_prefix="$artifacts" -runs=0 "${inputs[@]}" 2>"$build/$t.replay.log" ||
    { cat "$build/$t.replay.log" >&2; echo "fuzz: $t: a corpus input fails" >&2; exit 1; }
  if [ "$seconds" -gt 0 ]; then
    echo "fuzz: $t: fuzzing for $seconds s" >&2
    # New inputs go to the build's own corpus; the committed seeds stay as they are.
    "$bin" "${limits[@]}" -artifact_prefix="$artifacts" -max_total_time="$seconds" \
      "$work" "${inputs[@]}" 2>"$build/$t.fuzz.log" ||
      { tail -n 60 "$build/$t.fuzz.log" >&2; echo "fuzz: $t: crash, input in $artifacts" >&2; exit 1; }
    tail -n 1 "$build/$t.fuzz.log" >&2
  fi
done
echo "fuzz: ${targets[*]}: clean" >&2
