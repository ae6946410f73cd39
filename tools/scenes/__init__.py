"""Seeded procedural scenes of Fashion-MNIST items for the embedded default model.

    from scenes import SceneSource
    source = SceneSource("train", seed=1)
    sample = source.sample(index)        # image, premise, hypotheses, captions, cell targets

Scene `index` of a source is drawn and rendered from numpy's SeedSequence([split tag, seed,
index]); train and test seeds never meet (the split tag is part of every seed) and the splits
draw their items from different Fashion-MNIST files (train, t10k). The hypotheses' (label,
template) pairs also depend on the pairs earlier scenes of the same source could not give (see
HypothesisSampler), so a source reproduces its samples when read in the same order, as training
and write_dumps.py do (indices 0, 1, 2, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

from .language import (LABELS, TEMPLATE_NAMES, HypothesisSampler, captions, pre_caption,
                       premise)
from .render import (CANVAS, CELL, CLASS_NAMES, COLOUR_NAMES, GRID, Glyphs, Scene, render,
                     sample_scene)

SPLIT_TAGS = {"train": 1, "test": 2}


@dataclass
class Sample:
    image: np.ndarray  # uint8 [128, 128, 3]
    scene: Scene
    premise: str
    hypotheses: List[Tuple[str, str, str]]  # (text, label, template)
    captions: List[str]
    cell_colour: np.ndarray  # [4, 4] int: 0 none, 1 + colour index (visible items only)
    cell_class: np.ndarray  # [4, 4] int: 0 none, 1 + class index
    cell_kind: np.ndarray  # [4, 4] int: 0 empty, 1 item, 2 occluder, 3 distractor


class SceneSource:
    def __init__(self, split: str, seed: int = 0, hypotheses_per_scene: int = 4):
        if split not in SPLIT_TAGS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.split = split
        self.seed = seed
        self.glyphs = Glyphs(split)
        self.per_scene = hypotheses_per_scene
        self.sampler = HypothesisSampler(np.random.default_rng([SPLIT_TAGS[split], seed, 1 << 30]))

    def sample(self, index: int) -> Sample:
        rng = np.random.default_rng([SPLIT_TAGS[self.split], self.seed, index])
        scene = sample_scene(rng, self.glyphs, index)
        image = render(scene, self.glyphs, rng)
        text, p_item = premise(scene, rng)
        hyps = self.sampler.sample(scene, p_item, self.per_scene)
        caps = captions(scene, rng)
        colour = np.zeros((GRID, GRID), np.int64)
        cls = np.zeros((GRID, GRID), np.int64)
        kind = np.zeros((GRID, GRID), np.int64)
        for it in scene.visible:
            colour[it.row, it.col] = 1 + COLOUR_NAMES.index(it.colour)
            cls[it.row, it.col] = 1 + CLASS_NAMES.index(it.cls)
            kind[it.row, it.col] = 1
        for r, c in scene.occluded:
            kind[r, c] = 2
        for r, c, _ in scene.distractors:
            kind[r, c] = 3
        return Sample(image, scene, text, hyps, caps, colour, cls, kind)
