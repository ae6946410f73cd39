#!/usr/bin/python3
"""Writes a random-weight model directory (models/FORMAT.md) of an OFA size.

The weights follow tests/fixtures/SYNTHETIC_WEIGHTS.md with --seed, so the C++ tests can
rebuild the same model from (config, seed). Tensors are generated and written one at a time.

  /usr/bin/python3 tools/make_model.py --size base --out /tmp/ofa-base-random
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ofa_reference  # noqa: E402


def parse_image_size(text: str):
    """'480' -> 480, '384x512' -> [384, 512] (height x width)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size {text!r} is not N or HxW")
    if len(values) not in (1, 2) or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"image size {text!r} is not N or HxW")
    return values[0] if len(values) == 1 else values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", required=True, choices=sorted(ofa_reference.SIZES))
    parser.add_argument("--encoder-mode", default="decomposed", choices=("decomposed", "joint"))
    parser.add_argument("--image-size", type=parse_image_size, default=None,
                        help="N or HxW (default: 480, or 64 for --size test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None)
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error("--seed must be non-negative")

    start = time.time()
    config = ofa_reference.make_config(args.size, args.encoder_mode, args.image_size, args.name)
    count = ofa_reference.write_synthetic_model_dir(config, args.seed, args.out)
    size = os.path.getsize(os.path.join(args.out, "model.safetensors"))
    print(f"{config['name']}: {count:,} parameters ({size / 2**20:.1f} MiB), "
          f"encoder {config['encoder_mode']}, image {config['image_size']}, seed {args.seed} "
          f"-> {args.out} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
