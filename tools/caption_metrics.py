#!/usr/bin/env python3
"""Caption metrics written from the papers, with the COCO caption toolkit's conventions.

An independent check of src/tasks/metrics.cpp (it shares no code with it):
  BLEU      Papineni et al. 2002: corpus-level clipped n-gram precisions p_1..p_4, their geometric
            mean, one brevity penalty for the corpus. Toolkit conventions: the effective reference
            length of a sample is the reference length closest to the candidate's (ties: the
            shorter), p_n = (clipped + 1e-15) / (total + 1e-9), and
            BP = exp(1 - (r + 1e-9) / (c + 1e-15)) when c < r.
  CIDEr-D   Vedantam et al. 2015: tf-idf n-gram vectors (n = 1..4), idf from the references of the
            evaluated corpus, candidate weights clipped by the reference's, cosine, Gaussian length
            penalty (sigma 6), mean over n, mean over references, times 10. Toolkit conventions: tf
            is the raw count, idf = log(N) - log(max(1, df)), a zero-norm vector leaves the dot
            product undivided, and the "length" is the number of bigrams.
  ROUGE-L   Lin 2004: LCS-based recall and precision, F with beta = 1.2. Toolkit conventions: the
            best precision and the best recall over the references are combined; an empty caption
            counts as one empty token.
Tokenisation follows the rule documented in src/tasks/metrics.h (a stand-in for the PTB tokenizer).

Usage: caption_metrics.py INPUT.json [-o OUTPUT.json]
INPUT holds {"candidates": [str], "references": [[str]]} and/or {"texts": [str]}; with
"tokenized": true the captions are lists of tokens instead of strings. OUTPUT (stdout by default)
holds "bleu" [4], "cider_d", "rouge_l", "cider_d_per_sample", "rouge_l_per_sample" and, for
"texts", "tokens".
"""

import argparse
import json
import math
import re
import sys
from collections import Counter

MAX_N = 4
SIGMA = 6.0
BETA = 1.2
TINY = 1e-15
SMALL = 1e-9

PUNCTUATION = ".,?!:;-'\"`(){}"
CLITIC_RE = re.compile(r"(.+?)(n't|'s|'re|'ve|'ll|'d|'m)", re.DOTALL)
CLITICS = {"n't", "'s", "'re", "'ve", "'ll", "'d", "'m"}
WHITESPACE_RE = re.compile(r"[ \t\n\r\v\f]+")
ASCII_LOWER = {ord(c): ord(c) + 32 for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


class MetricsInputError(ValueError):
    pass


def tokenize(text):
    tokens = []
    for chunk in WHITESPACE_RE.split(text.translate(ASCII_LOWER)):
        chunk = chunk.rstrip(PUNCTUATION)
        if chunk in CLITICS:
            tokens.append(chunk)
            continue
        chunk = chunk.lstrip(PUNCTUATION)
        if not chunk:
            continue
        m = CLITIC_RE.fullmatch(chunk)
        tokens.extend(m.groups() if m else [chunk])
    return tokens


def ngrams(tokens, n):
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu(cands, refs_list):
    clipped = [0] * MAX_N
    total = [0] * MAX_N
    c = 0
    r = 0
    for cand, refs in zip(cands, refs_list):
        c += len(cand)
        r += min((len(ref) for ref in refs), key=lambda length: (abs(length - len(cand)), length))
        for n in range(1, MAX_N + 1):
            cand_counts = ngrams(cand, n)
            max_ref = Counter()
            for ref in refs:
                max_ref |= ngrams(ref, n)  # Counter union keeps the larger count
            clipped[n - 1] += sum((cand_counts & max_ref).values())
            total[n - 1] += sum(cand_counts.values())
    log_bp = min(0.0, 1.0 - (r + SMALL) / (c + TINY))
    log_p = [math.log((clipped[i] + TINY) / (total[i] + SMALL)) for i in range(MAX_N)]
    return [math.exp(log_bp + sum(log_p[:n]) / n) for n in range(1, MAX_N + 1)]


def cider_d(cands, refs_list):
    num_images = len(cands)
    # df per order n: in how many images' reference sets the n-gram occurs.
    df = [Counter() for _ in range(MAX_N)]
    for refs in refs_list:
        for n in range(1, MAX_N + 1):
            df[n - 1].update(set().union(*(ngrams(ref, n).keys() for ref in refs)))

    def vectors(tokens):
        vecs = []
        for n in range(1, MAX_N + 1):
            vecs.append({g: tf * (math.log(num_images) - math.log(max(1.0, df[n - 1][g])))
                         for g, tf in ngrams(tokens, n).items()})
        return vecs

    def norm(vec):
        return math.sqrt(sum(w * w for w in vec.values()))

    scores = []
    for cand, refs in zip(cands, refs_list):
        g_c = vectors(cand)
        per_n = [0.0] * MAX_N
        for ref in refs:
            g_r = vectors(ref)
            delta = max(len(cand) - 1, 0) - max(len(ref) - 1, 0)  # toolkit: bigram counts
            penalty = math.exp(-delta * delta / (2 * SIGMA * SIGMA))
            for i in range(MAX_N):
                dot = sum(min(w, g_r[i][g]) * g_r[i][g] for g, w in g_c[i].items() if g in g_r[i])
                nc, nr = norm(g_c[i]), norm(g_r[i])
                if nc != 0 and nr != 0:
                    dot /= nc * nr
                per_n[i] += dot * penalty
        scores.append(10.0 * sum(per_n) / MAX_N / len(refs))
    return scores


def lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) - 1, -1, -1):
        for j in range(len(b) - 1, -1, -1):
            table[i][j] = table[i + 1][j + 1] + 1 if a[i] == b[j] else max(table[i + 1][j],
                                                                          table[i][j + 1])
    return table[0][0]


def rouge_l(cands, refs_list):
    scores = []
    for cand, refs in zip(cands, refs_list):
        cand = cand or [""]
        precision = 0.0
        recall = 0.0
        for ref in refs:
            ref = ref or [""]
            common = lcs(cand, ref)
            precision = max(precision, common / len(cand))
            recall = max(recall, common / len(ref))
        if precision == 0 or recall == 0:
            scores.append(0.0)
        else:
            scores.append((1 + BETA**2) * precision * recall / (recall + BETA**2 * precision))
    return scores


def score(candidates, references, tokenized=False):
    if len(candidates) != len(references):
        raise MetricsInputError("%d candidates but %d reference lists" %
                                (len(candidates), len(references)))
    if not candidates:
        raise MetricsInputError("no captions to score (empty corpus)")
    for i, refs in enumerate(references):
        if not refs:
            raise MetricsInputError("sample %d has no reference caption" % i)
    prepare = list if tokenized else tokenize
    cands = [prepare(c) for c in candidates]
    refs_list = [[prepare(r) for r in refs] for refs in references]
    cider_scores = cider_d(cands, refs_list)
    rouge_scores = rouge_l(cands, refs_list)
    return {
        "bleu": bleu(cands, refs_list),
        "cider_d": sum(cider_scores) / len(cider_scores),
        "rouge_l": sum(rouge_scores) / len(rouge_scores),
        "cider_d_per_sample": cider_scores,
        "rouge_l_per_sample": rouge_scores,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="JSON file with candidates/references and/or texts")
    parser.add_argument("-o", "--output", help="where to write the JSON result (default stdout)")
    args = parser.parse_args()
    with open(args.input, encoding="utf-8") as f:
        request = json.load(f)
    result = {}
    try:
        if "candidates" in request or "references" in request:
            result.update(score(request.get("candidates", []), request.get("references", []),
                                bool(request.get("tokenized", False))))
        if "texts" in request:
            result["tokens"] = [tokenize(t) for t in request["texts"]]
    except MetricsInputError as e:
        sys.exit("caption_metrics: %s: %s" % (args.input, e))
    text = json.dumps(result)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
