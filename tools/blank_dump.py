#!/usr/bin/env python3
"""Copies a dump with every image replaced by one uniform grey image: the text-only baseline's input.

  blank_dump.py SRC_DUMP OUT_DUMP [--grey 128]

OUT_DUMP/manifest.jsonl has SRC's lines unchanged but for "image", which names OUT_DUMP/blank.png
(the size of SRC's first image; every pixel (grey, grey, grey), as
train_default_model.py --blank-images trains on). A line that is not a JSON object is an error
that names its line number.
"""

from __future__ import annotations

import argparse
import json
import os

BLANK_GREY = 128  # the text-only baseline's image: every pixel (128, 128, 128)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--grey", type=int, default=BLANK_GREY)
    args = ap.parse_args()
    from PIL import Image  # here, so that train_default_model can import BLANK_GREY without PIL
    if not 0 <= args.grey <= 255:
        raise SystemExit(f"--grey {args.grey}: not in 0..255")
    manifest = os.path.join(args.src, "manifest.jsonl")
    if not os.path.isfile(manifest):
        raise SystemExit(f"{manifest}: no such file (SRC_DUMP must be a dump directory)")
    lines = []
    with open(manifest) as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{manifest}:{number}: not JSON ({e})")
            if not isinstance(line, dict) or "image" not in line:
                raise SystemExit(f"{manifest}:{number}: not an object with an \"image\"")
            lines.append(line)
    if not lines:
        raise SystemExit(f"{manifest}: no samples")
    with Image.open(os.path.join(args.src, lines[0]["image"])) as first:
        size = first.size
    os.makedirs(args.out, exist_ok=True)
    Image.new("RGB", size, (args.grey,) * 3).save(os.path.join(args.out, "blank.png"))
    with open(os.path.join(args.out, "manifest.jsonl"), "w") as f:
        for line in lines:
            line["image"] = "blank.png"
            f.write(json.dumps(line) + "\n")
    print(f"{args.out}: {len(lines)} samples, every image {size[0]}x{size[1]} grey {args.grey}")


if __name__ == "__main__":
    main()
