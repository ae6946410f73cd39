#!/usr/bin/env python3
"""Learns a byte-level BPE vocabulary in GPT-2's file format, and encodes text with it.

  learn_bpe.py --out DIR [--scenes 20000] [--seed 0]

learns from the scene generator's text (VE prompts with premises and hypotheses, the caption
prompt, captions, the answers), all through OFA's pre_caption, and writes into DIR:

- encoder.json: token string -> BPE id; the 256 byte symbols of GPT-2's bytes_to_unicode first
  (ids 0..255, in that function's order), then each merge's result in merge order;
- vocab.bpe: "#version: 0.2" and then the merges, one "a b" a line, in rank order;
- dict.txt: fairseq's dictionary, "<bpe id> <count>" a line in BPE-id order, so that the OFA id of
  BPE id i is i + 4 (after <s> <pad> </s> <unk>).

The encoder here (`Bpe`) is GPT-2's algorithm: pre-tokenise with GPT-2's pattern, map bytes with
bytes_to_unicode, then repeatedly merge the adjacent pair of lowest rank. GPT-2's pattern uses
Unicode letter/number classes; Debian's python has no `regex` module, so the pattern here is the
same pattern for ASCII text, and the text is checked to be ASCII.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
from typing import Dict, Iterable, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# GPT-2's pattern with \p{L} -> [A-Za-z] and \p{N} -> [0-9] (equal on ASCII text).
PATTERN = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


def bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_SYMBOLS = bytes_to_unicode()


def pretokenize(text: str) -> List[str]:
    if not text.isascii():
        raise ValueError(f"text is not ASCII: {text!r}")
    return ["".join(BYTE_SYMBOLS[b] for b in piece.encode("utf-8"))
            for piece in PATTERN.findall(text)]


def learn(words: Dict[str, int], min_count: int = 2) -> List[Tuple[str, str]]:
    """Merges in rank order: repeatedly the most frequent adjacent pair (ties: the smaller pair
    as strings), until no pair occurs min_count times."""
    segs = {w: list(w) for w in words}
    merges = []
    while True:
        pairs: Dict[Tuple[str, str], int] = collections.Counter()
        for w, count in words.items():
            s = segs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < min_count:
            break
        merges.append(best)
        joined = best[0] + best[1]
        for w in segs:
            s = segs[w]
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == best[0] and s[i + 1] == best[1]:
                    out.append(joined)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            segs[w] = out
    return merges


class Bpe:
    """GPT-2's encoder over encoder.json + vocab.bpe."""

    def __init__(self, encoder: Dict[str, int], merges: List[Tuple[str, str]]):
        self.encoder = encoder
        self.decoder = {v: k for k, v in encoder.items()}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.byte_decoder = {v: k for k, v in BYTE_SYMBOLS.items()}
        self.cache: Dict[str, List[str]] = {}

    @classmethod
    def load(cls, directory: str) -> "Bpe":
        with open(os.path.join(directory, "encoder.json")) as f:
            encoder = json.load(f)
        with open(os.path.join(directory, "vocab.bpe")) as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:] if line.strip()]
        return cls(encoder, merges)

    def bpe(self, token: str) -> List[str]:
        if token in self.cache:
            return self.cache[token]
        word = list(token)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == best[0] and word[i + 1] == best[1]:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        self.cache[token] = word
        return word

    def encode(self, text: str) -> List[int]:
        return [self.encoder[t] for piece in pretokenize(text) for t in self.bpe(piece)]

    def decode(self, ids: Iterable[int]) -> str:
        text = "".join(self.decoder[i] for i in ids)
        return bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace")


def corpus(num_scenes: int, seed: int) -> Iterable[str]:
    """The text the model will see, from training scenes only."""
    from scenes import SceneSource, pre_caption
    from scenes import prompts
    source = SceneSource("train", seed=seed)
    yield prompts.CAPTION_PROMPT
    for answer in prompts.ANSWERS.values():
        yield answer
    for i in range(num_scenes):
        s = source.sample(i)
        for hyp, label, _ in s.hypotheses:
            yield prompts.ve_prompt(pre_caption(s.premise), pre_caption(hyp))
            yield prompts.ANSWERS[label]
        for c in s.captions:
            yield " " + pre_caption(c)
        yield prompts.CAPTION_PROMPT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--scenes", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-count", type=int, default=2)
    args = ap.parse_args()
    texts = list(corpus(args.scenes, args.seed))
    words = collections.Counter(w for t in texts for w in pretokenize(t))
    merges = learn(words, args.min_count)
    encoder = {}
    for sym in BYTE_SYMBOLS.values():
        encoder[sym] = len(encoder)
    for a, b in merges:
        encoder.setdefault(a + b, len(encoder))
    bpe = Bpe(encoder, merges)
    counts = collections.Counter(i for t in texts for i in bpe.encode(t))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "encoder.json"), "w") as f:
        json.dump(encoder, f, ensure_ascii=False)
    with open(os.path.join(args.out, "vocab.bpe"), "w") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    with open(os.path.join(args.out, "dict.txt"), "w") as f:
        for i in range(len(encoder)):
            f.write(f"{i} {counts.get(i, 0)}\n")
    longest = max(len(bpe.encode(t)) for t in texts)
    print(f"{len(texts)} texts, {len(words)} distinct words, {len(merges)} merges, "
          f"{len(encoder)} BPE tokens, vocab_size {len(encoder) + 4}; longest text "
          f"{longest} tokens", file=sys.stderr)


if __name__ == "__main__":
    main()
