#!/usr/bin/env bash
# Builds mue and runs the benchmarks (timing only, never part of the tests): GEMM and attention
# at OFA-base shapes, one encoder layer, the ResNet-101 stages, the full-depth encoder, and
# captioning / entailment at full depth against exits forced at the paper's average depths, on a
# random-weight OFA-base model made here once (696 MiB, about 15 s).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/tools/setup.sh"
bash "$root/tools/build.sh" --target bench_gemm bench_model >/dev/null
build="${MUE_BUILD_DIR:-$root/build}"
model="${MUE_BENCH_MODEL:-$build/bench-models/ofa-base-random}"
if [ ! -f "$model/model.safetensors" ]; then
  /usr/bin/python3 "$root/tools/make_model.py" --size base --out "$model"
  bash "$root/tools/fetch_gpt2_bpe.sh" "$model"
fi
image="${MUE_BENCH_IMAGE:-}"
shared_image="$root/../shared/real/coco-val2017-mini/val2017/000000000139.jpg"
[ -z "$image" ] && [ -f "$shared_image" ] && image="$shared_image"
"$build/bench_gemm" "$@"
MUE_BENCH_MODEL="$model" MUE_BENCH_IMAGE="$image" "$build/bench_model" "$@"
