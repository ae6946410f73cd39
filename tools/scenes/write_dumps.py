#!/usr/bin/env python3
"""Writes held-out bench dumps (bench/DUMPS.md) of test-split scenes.

  write_dumps.py --ve DIR [--ve-pairs 2400] --caption DIR [--caption-images 600] [--seed 0]

VE: scenes from t10k items, 4 hypotheses a scene (SNLI-VE style: premise + hypothesis + label).
Captioning: other test scenes (their own seed), 5 references each. Both output directories must
be new or empty. Besides the required fields each line carries scene metadata for difficulty
analysis: num_objects, num_hidden, num_occluders, num_distractors, clutter, scene_seed, and for
VE template (and relation for the relation template).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from PIL import Image  # noqa: E402

from scenes import SceneSource  # noqa: E402
from scenes.language import RELATIONS  # noqa: E402

# Test seeds: the VE and caption dumps draw from different seeds of the test split, so their
# scenes differ too; training only ever uses the train split (SPLIT_TAGS).
VE_SEED_OFFSET = 1000
CAPTION_SEED_OFFSET = 2000


def _prepare(directory: str) -> None:
    if os.path.isdir(directory) and os.listdir(directory):
        raise SystemExit(f"{directory}: output directory is not empty")
    os.makedirs(os.path.join(directory, "images"), exist_ok=True)


def write_ve(directory: str, pairs: int, seed: int) -> None:
    _prepare(directory)
    source = SceneSource("test", seed=seed + VE_SEED_OFFSET)
    written, index = 0, 0
    with open(os.path.join(directory, "manifest.jsonl"), "w") as f:
        while written < pairs:
            s = source.sample(index)
            name = f"images/ve_{index:05d}.png"
            Image.fromarray(s.image).save(os.path.join(directory, name))
            for k, (hyp, label, template) in enumerate(s.hypotheses):
                if written >= pairs:
                    break
                line = {"id": f"ve{index:05d}_{k}", "image": name, "premise": s.premise,
                        "hypothesis": hyp, "label": label, "template": template}
                if template == "relation":
                    line["relation"] = next(r for r in RELATIONS if f" {r} " in hyp)
                line.update(s.scene.metadata())
                f.write(json.dumps(line) + "\n")
                written += 1
            index += 1
    print(f"{directory}: {written} VE pairs over {index} scenes", file=sys.stderr)


def write_caption(directory: str, images: int, seed: int) -> None:
    _prepare(directory)
    source = SceneSource("test", seed=seed + CAPTION_SEED_OFFSET, hypotheses_per_scene=0)
    with open(os.path.join(directory, "manifest.jsonl"), "w") as f:
        for index in range(images):
            s = source.sample(index)
            name = f"images/cap_{index:05d}.png"
            Image.fromarray(s.image).save(os.path.join(directory, name))
            line = {"id": f"cap{index:05d}", "image": name, "references": s.captions}
            line.update(s.scene.metadata())
            f.write(json.dumps(line) + "\n")
    print(f"{directory}: {images} captioned images", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ve")
    ap.add_argument("--ve-pairs", type=int, default=2400)
    ap.add_argument("--caption")
    ap.add_argument("--caption-images", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.ve and not args.caption:
        ap.error("nothing to write: give --ve and/or --caption")
    if args.ve:
        write_ve(args.ve, args.ve_pairs, args.seed)
    if args.caption:
        write_caption(args.caption, args.caption_images, args.seed)


if __name__ == "__main__":
    main()
