"""Scenes of tinted Fashion-MNIST items on a 128x128 canvas, and their rendering.

The canvas is a 4x4 grid of 32-px cells, aligned with the model's 16-px image tokens (each cell is
2x2 tokens). A cell holds at most one thing: an item (a Fashion-MNIST photo of one of seven
classes, tinted in one of six colours, at one of three sizes, jittered inside the cell), a
distractor (a grey outline shape, not an item), or an occluder (a grey textured block that hides
the whole cell, and whatever item may lie under it). The background carries clutter: noise and
faint lines. Training scenes take their items from the train split, held-out scenes from t10k.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
CANVAS = 128
GRID = 4
CELL = CANVAS // GRID  # 32 px = 2x2 image tokens

# Fashion-MNIST label -> our class word. Pullover, coat and shirt are left out: at 28 px they
# look alike (and like the T-shirt), which would make the class words ambiguous.
CLASSES: Dict[int, str] = {0: "shirt", 1: "trouser", 3: "dress", 5: "sandal", 7: "sneaker",
                           8: "bag", 9: "boot"}
CLASS_NAMES: List[str] = list(CLASSES.values())
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 100, 240),
    "yellow": (235, 220, 40), "purple": (170, 60, 220), "orange": (245, 140, 20)}
COLOUR_NAMES: List[str] = list(COLOURS)
SIZES = (20, 26, 32)
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")


def quadrant(row: int, col: int) -> str:
    return QUADRANTS[(row >= GRID // 2) * 2 + (col >= GRID // 2)]


@dataclass
class Item:
    cls: str
    colour: str
    row: int
    col: int
    size: int
    glyph: int  # index into the split's images
    hidden: bool = False  # under an occluder

    @property
    def quadrant(self) -> str:
        return quadrant(self.row, self.col)


@dataclass
class Scene:
    items: List[Item]  # visible and hidden
    occluded: List[Tuple[int, int]]  # occluder cells
    distractors: List[Tuple[int, int, int]]  # (row, col, shape)
    clutter: int  # 0 (clean) .. 2 (busy background)
    seed: int
    split: str
    extra: dict = field(default_factory=dict)

    @property
    def visible(self) -> List[Item]:
        return [it for it in self.items if not it.hidden]

    def occluded_in(self, quad: str) -> int:
        return sum(1 for r, c in self.occluded if quadrant(r, c) == quad)

    def metadata(self) -> dict:
        """Difficulty fields written into dump manifests (documented in the model card)."""
        return {"num_objects": len(self.visible), "num_hidden": len(self.items) - len(self.visible),
                "num_occluders": len(self.occluded), "num_distractors": len(self.distractors),
                "clutter": self.clutter, "scene_seed": self.seed}


class Glyphs:
    """The Fashion-MNIST images of one split, restricted to CLASSES, by class word."""

    def __init__(self, split: str, directory: str = FASHION_DIR):
        prefix = {"train": "train", "test": "t10k"}[split]
        images = _read_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"))
        labels = _read_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"))
        if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
            raise ValueError(f"{directory}: {prefix} images {images.shape} and labels "
                             f"{labels.shape} do not match")
        self.split = split
        self.images = images
        self.by_class = {name: np.flatnonzero(labels == label) for label, name in CLASSES.items()}
        self._cache: Dict[Tuple[int, int], np.ndarray] = {}

    def pick(self, cls: str, rng: np.random.Generator) -> int:
        pool = self.by_class[cls]
        return int(pool[rng.integers(len(pool))])

    def alpha(self, index: int, size: int) -> np.ndarray:
        """The glyph resized to size x size, as float32 coverage in [0, 1]."""
        key = (index, size)
        a = self._cache.get(key)
        if a is None:
            img = Image.fromarray(self.images[index]).resize((size, size), Image.BILINEAR)
            a = np.asarray(img, dtype=np.float32) / 255.0
            if len(self._cache) < 200000:
                self._cache[key] = a
        return a


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 8 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(data) - offset != count:
        raise ValueError(f"{path}: expected {count} bytes of data, found {len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def sample_scene(rng: np.random.Generator, glyphs: Glyphs, seed: int) -> Scene:
    """A random scene: 1-6 visible items, occluders in about 60% of scenes (some hiding an
    item), distractors and clutter. The visible count is spread evenly over 1..6."""
    cells = [(r, c) for r in range(GRID) for c in range(GRID)]
    order = rng.permutation(len(cells))
    num_visible = int(rng.integers(1, 7))
    num_occluders = int(rng.choice([0, 1, 2, 3], p=[0.4, 0.3, 0.2, 0.1]))
    num_distractors = int(rng.choice([0, 1, 2, 3], p=[0.3, 0.3, 0.25, 0.15]))
    clutter = int(rng.integers(0, 3))
    picked = [cells[i] for i in order]
    item_cells = picked[:num_visible]
    occluded = picked[num_visible:num_visible + num_occluders]
    free = picked[num_visible + num_occluders:]
    items = []
    for (r, c) in item_cells:
        cls = CLASS_NAMES[rng.integers(len(CLASS_NAMES))]
        items.append(Item(cls, COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))], r, c,
                          SIZES[rng.integers(len(SIZES))], glyphs.pick(cls, rng)))
    for (r, c) in occluded:
        if rng.random() < 0.5:  # an item under the block: the scene is not what it shows
            cls = CLASS_NAMES[rng.integers(len(CLASS_NAMES))]
            items.append(Item(cls, COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))], r, c,
                              SIZES[rng.integers(len(SIZES))], glyphs.pick(cls, rng), hidden=True))
    distractors = [(r, c, int(rng.integers(3))) for (r, c) in free[:num_distractors]]
    return Scene(items, occluded, distractors, clutter, seed, glyphs.split)


def render(scene: Scene, glyphs: Glyphs, rng: np.random.Generator) -> np.ndarray:
    """uint8 [128, 128, 3]."""
    base = rng.uniform(10, 45, size=3).astype(np.float32)
    noise_amp = (4.0, 10.0, 18.0)[scene.clutter]
    canvas = base + rng.normal(0.0, noise_amp, size=(CANVAS, CANVAS, 1)).astype(np.float32)
    for _ in range((0, 3, 8)[scene.clutter]):  # faint lines across the canvas
        tint = rng.uniform(40, 90, size=3).astype(np.float32)
        if rng.random() < 0.5:
            y = int(rng.integers(CANVAS))
            canvas[y, :, :] = 0.5 * canvas[y, :, :] + 0.5 * tint
        else:
            x = int(rng.integers(CANVAS))
            canvas[:, x, :] = 0.5 * canvas[:, x, :] + 0.5 * tint
    for (r, c, shape) in scene.distractors:
        _draw_distractor(canvas, r, c, shape, rng)
    for it in scene.items:
        if it.hidden:
            continue
        a = glyphs.alpha(it.glyph, it.size)[..., None]
        slack = CELL - it.size
        y = it.row * CELL + int(rng.integers(slack + 1))
        x = it.col * CELL + int(rng.integers(slack + 1))
        colour = np.asarray(COLOURS[it.colour], dtype=np.float32)
        shade = rng.uniform(0.85, 1.1)
        region = canvas[y:y + it.size, x:x + it.size]
        # Fashion-MNIST photos are brightness maps; tint them (a darker shade where the
        # photo is dark) and cover the background by their coverage.
        region[:] = region * (1 - a) + np.clip(colour * shade, 0, 255) * a
    for (r, c) in scene.occluded:
        grey = rng.uniform(115, 150)
        block = grey + rng.normal(0.0, 6.0, size=(CELL, CELL, 1)).astype(np.float32)
        canvas[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = block
    return np.clip(canvas, 0, 255).astype(np.uint8)


def _draw_distractor(canvas: np.ndarray, r: int, c: int, shape: int,
                     rng: np.random.Generator) -> None:
    """A light grey outline (ring, cross or frame), small, inside cell (r, c)."""
    size = int(rng.integers(10, 18))
    y0 = r * CELL + int(rng.integers(CELL - size + 1))
    x0 = c * CELL + int(rng.integers(CELL - size + 1))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    centre = (size - 1) / 2.0
    if shape == 0:
        d = np.hypot(yy - centre, xx - centre)
        mask = np.abs(d - size / 2.5) < 1.0
    elif shape == 1:
        mask = (np.abs(yy - xx) < 1.0) | (np.abs(yy + xx - (size - 1)) < 1.0)
    else:
        mask = (yy < 2) | (xx < 2) | (yy >= size - 2) | (xx >= size - 2)
    level = rng.uniform(150, 210)
    region = canvas[y0:y0 + size, x0:x0 + size]
    region[mask] = level
