#!/usr/bin/env python3
"""Checks the training tool's grounding targets (train_default_model.grounding_cells) against
the scene generator's own labels and cell tables, which are computed independently of them.

    /usr/bin/python3 tools/check_grounding_targets.py [--scenes 300] [--split test] [--seed 0]

For every hypothesis of the first N scenes:
- relation, entailment/contradiction: both items' cells are targets, and where those cells lie
  agrees with the label ("the X is left of the Y" is entailed iff X's column < Y's column);
  neutral: exactly one of the two is a target (the other item is not visible);
- colour: entailment/contradiction name the one visible item, whose cell holds that class and,
  for entailment only, that colour; neutral has no target;
- position: a target cell holds the named class, and lies in the named quadrant iff the label is
  entailment;
- every other template has no target.
Also checks that a hypothesis not in its template's form is refused. Exits 1 on any
disagreement, printing the first few.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scenes import SceneSource  # noqa: E402
from scenes.language import RELATIONS  # noqa: E402
from scenes.render import CLASS_NAMES, COLOUR_NAMES, GRID, quadrant  # noqa: E402
from train_default_model import IGNORE, grounding_cells, pre_caption  # noqa: E402


def disagreement(sample, hyp: str, label: str, template: str):
    """Why the targets of one hypothesis disagree with the generator, or None."""
    a, b = grounding_cells(sample.scene, hyp, template)
    words = hyp.split()

    def holds(cell: int, cls: str) -> bool:
        return sample.cell_class[cell // GRID, cell % GRID] == 1 + CLASS_NAMES.index(cls)

    if template == "relation":
        rel = next(r for r in RELATIONS if f" {r} " in hyp)
        ca, cb = words[1], words[-1]
        if label == "neutral":
            return None if (a == IGNORE) != (b == IGNORE) else f"neutral with targets {a}, {b}"
        if IGNORE in (a, b):
            return f"{label} without both targets ({a}, {b})"
        if not (holds(a, ca) and holds(b, cb)):
            return f"cells {a}, {b} do not hold a {ca} and a {cb}"
        axis, sign = RELATIONS[rel]
        d = (a % GRID - b % GRID) if axis else (a // GRID - b // GRID)
        entailed = d * sign > 0
        return None if entailed == (label == "entailment") else f"cells {a}, {b} say {entailed}"
    if b != IGNORE:
        return f"second target {b} for a {template} hypothesis"
    if template == "colour":
        cls, col = words[1], words[-1]
        if label == "neutral":
            return None if a == IGNORE else f"neutral with target {a}"
        if a == IGNORE or not holds(a, cls):
            return f"target {a} does not hold the {cls}"
        is_col = sample.cell_colour[a // GRID, a % GRID] == 1 + COLOUR_NAMES.index(col)
        return None if is_col == (label == "entailment") else f"cell {a} colour says {is_col}"
    if template == "position":
        if a == IGNORE:
            return None
        cls, quad = words[3], " ".join(words[-2:])
        if not holds(a, cls):
            return f"target {a} does not hold the {cls}"
        if label == "neutral":
            return None  # the unique visible item is elsewhere; a block could hide another
        inside = quadrant(a // GRID, a % GRID) == quad
        return None if inside == (label == "entailment") else f"cell {a} in {quad}: {inside}"
    return None if a == IGNORE else f"target {a} for a {template} hypothesis"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--split", default="test", choices=("train", "test"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    source = SceneSource(args.split, seed=args.seed, hypotheses_per_scene=6)
    counts, failures = {}, []
    for i in range(args.scenes):
        sample = source.sample(i)
        for hyp, label, template in sample.hypotheses:
            hyp = pre_caption(hyp)
            why = disagreement(sample, hyp, label, template)
            key = f"{template}/{label}"
            counts[key] = counts.get(key, 0) + 1
            if why is not None:
                failures.append(f"scene {i} {template} {label} {hyp!r}: {why}")
    scene = source.sample(0).scene
    for bad, template in (("the bag is near the boot", "relation"), ("a red bag", "colour"),
                          ("there are bags", "position")):
        try:
            grounding_cells(scene, bad, template)
            failures.append(f"{template} hypothesis {bad!r} was not refused")
        except ValueError as e:
            if bad not in str(e):
                failures.append(f"refusal of {bad!r} does not name it: {e}")
    total = sum(counts.values())
    print(f"{total} hypotheses of {args.scenes} {args.split} scenes: " +
          ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for line in failures[:10]:
        print("DISAGREES:", line)
    if failures:
        print(f"{len(failures)} disagreements")
        return 1
    print("grounding targets agree with the generator's labels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
