"""The scenes' text: premises, hypotheses with entailment labels, and captions.

Visual entailment labels follow from what the image shows. An occluder hides a whole cell and
may hide an item, so a statement that could become true or false under a block is `neutral`:
it is decided by the pixels (is there a block where the statement looks?), never by the text.

The label is chosen first, then a template, then attributes that give that label in this scene
(probe lesson 3). Pairs that a scene cannot give are owed and asked again of the next scenes, so
labels stay balanced within every template.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .render import CLASS_NAMES, COLOUR_NAMES, QUADRANTS, Item, Scene

LABELS = ("entailment", "contradiction", "neutral")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six")


def pre_caption(text: str, max_words: int = 80) -> str:
    """OFA's pre_caption (spec 2.1): lowercase, strip leading ,.!?*#:;~, '-' and '/' to spaces,
    '<person>' to 'person', collapse whitespace, keep max_words words."""
    text = text.lower().lstrip(",.!?*#:;~").replace("-", " ").replace("/", " ")
    text = text.replace("<person>", "person")
    text = re.sub(r"\s{2,}", " ", text).rstrip("\n").strip(" ")
    return " ".join(text.split(" ")[:max_words])


def fix_articles(text: str) -> str:
    """'a orange' -> 'an orange'."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _one(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def unique_of_class(items: List[Item], cls: str) -> Optional[Item]:
    """The one item of class `cls` among `items`, or None when there are none or several."""
    found = [it for it in items if it.cls == cls]
    return found[0] if len(found) == 1 else None


# -- premise --------------------------------------------------------------------------------

def premise(scene: Scene, rng: np.random.Generator) -> Tuple[str, Item]:
    """A partial description: one visible item, its colour, class and quadrant."""
    it = _one(rng, scene.visible)
    return fix_articles(f"a {it.colour} {it.cls} is in the {it.quadrant}"), it


# -- hypotheses -----------------------------------------------------------------------------
# Each template: (scene, wanted label, rng, premise item) -> hypothesis text or None. It samples
# attributes and returns a hypothesis only if the scene gives it the wanted label. The premise's
# own item (its class and colour) is never the subject, so the premise cannot give the answer.

def _label_exists(scene: Scene, match: Callable[[Item], bool], quad: Optional[str]) -> str:
    """Entailment if a visible item matches (in quad); neutral if none does but a block could
    hide one (in quad); contradiction otherwise."""
    if any(match(it) and (quad is None or it.quadrant == quad) for it in scene.visible):
        return "entailment"
    blocks = len(scene.occluded) if quad is None else scene.occluded_in(quad)
    return "neutral" if blocks else "contradiction"


def _fresh_class(rng, p: Item) -> str:
    return _one(rng, [c for c in CLASS_NAMES if c != p.cls])


def t_exist_class(scene, rng, p):
    cls = _fresh_class(rng, p)
    return f"there is a {cls}", _label_exists(scene, lambda it: it.cls == cls, None)


def t_exist_colour_class(scene, rng, p):
    cls = _one(rng, CLASS_NAMES)
    col = _one(rng, COLOUR_NAMES)
    if (cls, col) == (p.cls, p.colour):
        return None
    return (f"there is a {col} {cls}",
            _label_exists(scene, lambda it: it.cls == cls and it.colour == col, None))


def t_position(scene, rng, p):
    cls = _fresh_class(rng, p)
    quad = _one(rng, QUADRANTS)
    return (f"there is a {cls} in the {quad}",
            _label_exists(scene, lambda it: it.cls == cls, quad))


def t_colour(scene, rng, p):
    """'the X is C': about the one visible X; neutral when no X is visible but a block could hide
    it. Scenes with two visible Xs give no label."""
    cls = _fresh_class(rng, p)
    col = _one(rng, COLOUR_NAMES)
    visible = [it for it in scene.visible if it.cls == cls]
    if len(visible) == 1:
        label = "entailment" if visible[0].colour == col else "contradiction"
    elif not visible and scene.occluded:
        label = "neutral"
    else:
        return None
    return f"the {cls} is {col}", label


def t_count(scene, rng, p):
    """'there are exactly N items': each block may hide one item."""
    n = int(rng.integers(1, 7))
    v, k = len(scene.visible), len(scene.occluded)
    if v == n and k == 0:
        label = "entailment"
    elif v > n or v + k < n:
        label = "contradiction"
    else:
        label = "neutral"
    noun = "item" if n == 1 else "items"
    verb = "is" if n == 1 else "are"
    return f"there {verb} exactly {NUMBERS[n]} {noun}", label


RELATIONS = {"left of": (1, -1), "right of": (1, 1), "above": (0, -1), "below": (0, 1)}


def t_relation(scene, rng, p):
    """'the X is left of the Y' between the unique visible X and Y; neutral when one of them is
    not visible (the other is) and a block could hide it."""
    a, b = rng.choice(len(CLASS_NAMES), size=2, replace=False)
    ca, cb = CLASS_NAMES[a], CLASS_NAMES[b]
    if p.cls in (ca, cb):
        return None
    rel = _one(rng, list(RELATIONS))
    axis, sign = RELATIONS[rel]
    ia, ib = unique_of_class(scene.visible, ca), unique_of_class(scene.visible, cb)
    text = f"the {ca} is {rel} the {cb}"
    if ia is not None and ib is not None:
        da = (ia.col - ib.col) if axis else (ia.row - ib.row)
        if da == 0:
            return None
        return text, "entailment" if da * sign > 0 else "contradiction"
    missing = [c for c, i in ((ca, ia), (cb, ib)) if i is None]
    if (len(missing) == 1 and scene.occluded
            and not any(it.cls == missing[0] for it in scene.visible)):
        return text, "neutral"
    return None


TEMPLATES: Dict[str, Callable] = {
    "exist_class": t_exist_class, "exist_colour_class": t_exist_colour_class,
    "position": t_position, "colour": t_colour, "count": t_count, "relation": t_relation}
TEMPLATE_NAMES = list(TEMPLATES)


class HypothesisSampler:
    """Draws (label, template) pairs uniformly; a pair a scene cannot give is owed to later
    scenes, so that every template gets every label equally often in the long run."""

    def __init__(self, rng: np.random.Generator, tries: int = 40):
        self.rng = rng
        self.tries = tries
        self.owed: List[Tuple[str, str]] = []

    def _attempt(self, scene, label, name, p):
        for _ in range(self.tries):
            out = TEMPLATES[name](scene, self.rng, p)
            if out is not None and out[1] == label:
                return fix_articles(out[0])
        return None

    def sample(self, scene: Scene, p: Item, count: int) -> List[Tuple[str, str, str]]:
        """Up to `count` (hypothesis, label, template) for this scene, owed pairs first."""
        out = []
        for i, (label, name) in enumerate(list(self.owed)):
            if len(out) >= count:
                break
            text = self._attempt(scene, label, name, p)
            if text is not None and text not in {o[0] for o in out}:
                out.append((text, label, name))
                self.owed.remove((label, name))
        while len(out) < count:
            label = _one(self.rng, LABELS)
            name = _one(self.rng, TEMPLATE_NAMES)
            text = self._attempt(scene, label, name, p)
            if text is None or text in {o[0] for o in out}:
                if len(self.owed) < 1000:
                    self.owed.append((label, name))
                if len(out) + len(self.owed) > count * 50:
                    break
                continue
            out.append((text, label, name))
        return out


# -- captions -------------------------------------------------------------------------------

CLASS_SYNONYMS = {"shirt": ["shirt", "t shirt", "top"], "trouser": ["trouser", "pant"],
                  "dress": ["dress"], "sandal": ["sandal"], "sneaker": ["sneaker", "shoe"],
                  "bag": ["bag", "handbag"], "boot": ["boot", "ankle boot"]}
QUAD_SYNONYMS = {"top left": ["top left", "upper left"], "top right": ["top right", "upper right"],
                 "bottom left": ["bottom left", "lower left"],
                 "bottom right": ["bottom right", "lower right"]}
THINGS = ["items", "objects", "things"]


def caption_subjects(scene: Scene) -> List[Item]:
    """The visible items a caption names: the first two in reading order."""
    return sorted(scene.visible, key=lambda it: (it.row, it.col))[:2]


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """One caption from a small grammar with synonyms and varied order: the visible count, the
    first two items in reading order (colour, class, sometimes quadrant), and any blocks."""
    subj = caption_subjects(scene)
    n = len(scene.visible)

    def np_(it: Item, with_quad: bool) -> str:
        noun = f"{it.colour} {_one(rng, CLASS_SYNONYMS[it.cls])}"
        if with_quad:
            return f"a {noun} {_one(rng, ['in', 'at'])} the {_one(rng, QUAD_SYNONYMS[it.quadrant])}"
        return f"a {noun}"

    if n == 1:
        form = int(rng.integers(3))
        one = np_(subj[0], True)
        text = [f"a single {one[2:]}", f"one {one[2:]}", f"only {one}"][form]
    else:
        things = _one(rng, THINGS)
        count = f"{NUMBERS[n]} {things}"
        form = int(rng.integers(4))
        if form == 0:
            text = f"{count} with {np_(subj[0], False)} and {np_(subj[1], False)}"
        elif form == 1:
            text = f"{np_(subj[0], False)} and {np_(subj[1], False)} among {count}"
        elif form == 2:
            text = f"{count} including {np_(subj[0], True)}"
        else:
            text = f"{np_(subj[0], True)} and {np_(subj[1], False)}"
    if scene.occluded and rng.random() < 0.6:
        text += _one(rng, [" and a gray block", " with a gray square", " partly hidden"])
    return fix_articles(text)


def captions(scene: Scene, rng: np.random.Generator, count: int = 5) -> List[str]:
    out: List[str] = []
    for _ in range(count * 20):
        c = caption(scene, rng)
        if c not in out:
            out.append(c)
        if len(out) == count:
            break
    while len(out) < count:  # a one-item scene has fewer distinct forms; repeats are fine
        out.append(caption(scene, rng))
    return out
