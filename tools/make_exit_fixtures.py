#!/usr/bin/python3
"""Writes the exit-parity fixtures: MuE exits, VE scoring and beam search on random-weight models.

  /usr/bin/python3 tools/make_exit_fixtures.py --out tests/fixtures/exits
  /usr/bin/python3 tools/make_exit_fixtures.py --explore CASE [--stack decoder]

Each case is a directory with config.json (the model), case.json (weight seed, parameter list,
exit policy, generation options, description, and what the fixture was checked for: exit
histograms and decision margins) and io.safetensors (inputs and reference outputs; see
tests/fixtures/exits/README.md). The weights come from tests/fixtures/SYNTHETIC_WEIGHTS.md with
the case's seed, as for the parity fixtures.

Thresholds are chosen per case from the measured cosines of the random model (--explore prints
them and scans thresholds) so that samples and steps exit at varied layers. The generator refuses
to write a case whose exits are all at one layer or that has a close call: a tested cosine within
MIN_COSINE_MARGIN of its threshold, or beam candidates within MIN_CANDIDATE_GAP of each other,
which float32 differences between implementations could flip. Output is byte-identical from run
to run (single-threaded torch, seeded numpy inputs).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import make_fixtures  # noqa: E402
import ofa_reference as R  # noqa: E402
import safetensors_np  # noqa: E402

MIN_COSINE_MARGIN = 1e-4  # |cos - threshold| of every exit test taken
MIN_CANDIDATE_GAP = 1e-4  # between consecutive top beam candidates, and between final scores
MIN_MODE_DIFFERENCE = 1e-3  # best scores of the two cache modes, where they must differ
KV_MODES = ("propagate", "reference")


@dataclass(frozen=True)
class ExitCase:
    name: str
    size: str  # "test" or "tiny" (real OFA-tiny shapes)
    encoder_mode: str
    image_size: Tuple[int, int]  # (height, width)
    seed: int  # weights and inputs
    src_lengths: Sequence[int]  # per row, including bos/eos
    tgt_lengths: Sequence[int]  # per row, including the leading bos (VE scoring input)
    policy: Dict = field(default_factory=dict)  # ExitPolicy fields (skipped_layer_cache aside)
    beam_size: int = 3
    max_len: int = 7
    min_len: int = 1
    no_repeat_ngram_size: int = 3
    length_penalty: float = 1.0
    # Require the two cache modes to give different generations (a skipped layer runs again
    # later, so the engine's `reference` caches are really tested).
    modes_differ: bool = False
    # Where exits must come at more than one depth; "ve_decoder" can be dropped where the VE
    # pass's (lower) cosines and the generation's cannot share a static threshold.
    must_vary: Tuple[str, ...] = ("image", "text", "ve_decoder", "gen")
    # Token ids the VE pass's confidence rule reads (as entailment's three answers); empty: the
    # whole vocabulary.
    confidence_ids: Sequence[int] = ()
    note: str = ""

    def exit_policy(self, mode: str = "propagate") -> R.ExitPolicy:
        return R.ExitPolicy(**dict(self.policy, skipped_layer_cache=mode))

    def options(self) -> R.GenerationOptions:
        return R.GenerationOptions(beam_size=self.beam_size, max_len=self.max_len,
                                   min_len=self.min_len,
                                   no_repeat_ngram_size=self.no_repeat_ngram_size,
                                   length_penalty=self.length_penalty)

    @property
    def description(self) -> str:
        h, w = self.image_size
        p = self.exit_policy()
        if p.fixed_depth_image or p.fixed_depth_text or p.fixed_depth_decoder:
            exits = (f"fixed depths image {p.fixed_depth_image}, text {p.fixed_depth_text}, "
                     f"decoder {p.fixed_depth_decoder}")
        elif (p.exit_thresholds_image or p.exit_thresholds_text or p.exit_thresholds_decoder
              or p.decoder_rule != "cosine"):
            def per(stack):
                values = getattr(p, f"exit_thresholds_{stack}")
                return values if values else getattr(p, f"exit_threshold_{stack}")
            if p.decoder_rule == "confidence":
                decoder = (f"decoder confidence ({p.confidence_measure}) "
                           f"{p.confidence_thresholds or p.confidence_threshold}, read over "
                           + (f"ids {list(self.confidence_ids)} in VE" if self.confidence_ids
                              else "the vocabulary"))
            else:
                decoder = f"decoder {per('decoder')}"
            exits = (f"thresholds (per layer where a list) image {per('image')}, text "
                     f"{per('text')}, {decoder} ({p.decoder_schedule})")
        else:
            exits = (f"thresholds image {p.exit_threshold_image}, text {p.exit_threshold_text}, "
                     f"decoder {p.exit_threshold_decoder} ({p.decoder_schedule})")
        search = "greedy" if self.beam_size == 1 else f"beam {self.beam_size}"
        return (f"{self.size} config, {self.encoder_mode} encoder, {h}x{w} images, batch "
                f"{len(self.src_lengths)}, source lengths {list(self.src_lengths)}, VE target "
                f"lengths {list(self.tgt_lengths)}; {exits}; {search}, max_len {self.max_len}; "
                f"weights: synthetic recipe, seed {self.seed}"
                + (f". {self.note}" if self.note else ""))


CASES: List[ExitCase] = [
    ExitCase("test_decomposed_static", "test", "decomposed", (32, 32), 305, (9, 5, 3), (7, 4, 2),
             dict(exit_threshold_image=0.634, exit_threshold_text=0.5669,
                  exit_threshold_decoder=0.55), modes_differ=True,
             must_vary=("image", "text", "gen"),
             note="The VE pass runs all layers: its cosines lie below the generation's"),
    ExitCase("test_decomposed_decaying_greedy_b1", "test", "decomposed", (32, 32), 302, (8,),
             (6,), dict(exit_threshold_image=0.66, exit_threshold_text=0.58,
                        exit_threshold_decoder=0.65, decoder_schedule="decaying"),
             beam_size=1, max_len=8),
    ExitCase("test_joint_calm", "test", "joint", (32, 32), 303, (10, 6, 3), (5, 7, 3),
             dict(exit_threshold_text=0.6459, exit_threshold_decoder=0.55, decoder_schedule="calm",
                  calm_beta=0.9, calm_tau=1.0)),
    ExitCase("test_decomposed_fixed_greedy", "test", "decomposed", (32, 32), 304, (7, 4, 10),
             (3, 6, 5), dict(fixed_depth_image=1, fixed_depth_text=2, fixed_depth_decoder=1),
             beam_size=1, max_len=6),
    ExitCase("tiny_decomposed_static", "tiny", "decomposed", (32, 48), 401, (9, 5, 3), (7, 4, 2),
             dict(exit_threshold_image=0.5913, exit_threshold_text=0.7764,
                  exit_threshold_decoder=0.788), modes_differ=True),
    ExitCase("tiny_decomposed_decaying_greedy", "tiny", "decomposed", (32, 32), 402, (11, 6, 4),
             (6, 3, 7), dict(exit_threshold_image=0.8491, exit_threshold_text=0.5573,
                             exit_threshold_decoder=0.85, decoder_schedule="decaying"),
             beam_size=1, max_len=8, modes_differ=True),
    ExitCase("tiny_decomposed_calm_b1", "tiny", "decomposed", (64, 64), 403, (12,), (8,),
             dict(exit_threshold_image=0.8, exit_threshold_text=0.8, exit_threshold_decoder=0.8,
                  decoder_schedule="calm", calm_beta=0.9, calm_tau=1.0), max_len=6),
    ExitCase("tiny_decomposed_fixed", "tiny", "decomposed", (32, 32), 404, (6, 9, 2), (4, 2, 6),
             dict(fixed_depth_image=1, fixed_depth_text=3, fixed_depth_decoder=2), max_len=6),
    ExitCase("tiny_joint_static_greedy", "tiny", "joint", (32, 32), 405, (9, 4, 7), (5, 3, 6),
             dict(exit_threshold_text=0.8315, exit_threshold_decoder=0.79), beam_size=1,
             max_len=7),
    # Per-layer cosine thresholds on all three stacks: the decoder never exits after layer 2
    # (threshold 0.99) but does after layers 1 and 3.
    ExitCase("tiny_decomposed_per_layer", "tiny", "decomposed", (32, 32), 411, (9, 5, 3),
             (7, 4, 2), dict(exit_thresholds_image=[0.585, 0.9, 0.834],
                             exit_thresholds_text=[0.545, 0.76, 0.99],
                             exit_thresholds_decoder=[0.56, 0.99, 0.845])),
    # The confidence rule, per layer, top-1 probability: VE reads three answer ids. The random
    # OFA-tiny head is so peaked over its 59457 tokens that every generation step exits after
    # layer 1; the per-step variation is tested by test_decomposed_confidence_margin.
    ExitCase("tiny_decomposed_confidence", "tiny", "decomposed", (32, 32), 412, (9, 5, 3),
             (7, 4, 2), dict(decoder_rule="confidence", confidence_thresholds=[0.95, 0.9, 0.75]),
             confidence_ids=(4, 5, 6), must_vary=("ve_decoder",)),
    # The confidence rule's margin measure (CALM's top-1 minus top-2) with one threshold.
    ExitCase("test_decomposed_confidence_margin", "test", "decomposed", (32, 32), 414, (9, 5, 3),
             (7, 4, 2), dict(decoder_rule="confidence", confidence_measure="margin",
                             confidence_threshold=0.2),
             confidence_ids=(10, 20, 30), must_vary=("ve_decoder", "gen")),
]


@dataclass
class Outcome:
    tensors: Dict[str, np.ndarray]
    info: Dict
    margins: R.Margins


def histogram(values) -> Dict[str, int]:
    counts = collections.Counter(int(v) for v in values if int(v) > 0)
    return {str(k): counts[k] for k in sorted(counts)}


def run_case(case: ExitCase, model: Optional[R.OFAModel] = None) -> Outcome:
    config = R.make_config(case.size, case.encoder_mode, list(case.image_size),
                           name=f"exits-{case.name}")
    if model is None:
        model = R.synthetic_model(config, case.seed)
    inputs = make_fixtures.Case(case.name, case.size, case.encoder_mode, case.image_size,
                                case.seed, case.src_lengths, case.tgt_lengths)
    images, src, prev = make_fixtures.make_inputs(inputs, config, np.random.default_rng(case.seed))
    pad = config["pad_id"]
    ids = torch.from_numpy(make_fixtures.logit_ids(config["vocab_size"]))
    margins = R.Margins()
    policy = case.exit_policy()

    encoder_out = R.mue.encode(model, torch.from_numpy(images), torch.from_numpy(src), policy,
                               margins)
    layers = R.exit_layers(encoder_out)
    ve_logits, ve_layers = R.score_ve(model, encoder_out, torch.from_numpy(prev), policy, margins,
                                      list(case.confidence_ids) or None)
    tensors = {
        "patch_images": images,
        "src_tokens": src,
        "prev_output_tokens": prev,
        "image_layers": layers["image"].numpy(),
        "text_layers": layers["text"].numpy(),
        "encoder_out": encoder_out.hidden.numpy(),
        "ve_decoder_layers": ve_layers.numpy(),
        "ve_logits_ids": ids.numpy(),
        "ve_logits": ve_logits[:, ids].numpy(),
        "ve_logsumexp": torch.logsumexp(ve_logits, dim=-1).numpy(),
    }
    batch, width = len(case.src_lengths), case.max_len + 1
    hist = {"image": histogram(tensors["image_layers"]), "text": histogram(tensors["text_layers"]),
            "ve_decoder": histogram(tensors["ve_decoder_layers"])}
    scores64 = {}
    for mode in KV_MODES:
        results = R.beam_search(model, encoder_out, case.options(), case.exit_policy(mode), margins)
        tokens = np.full((batch, width), pad, dtype=np.int64)
        used = np.zeros((batch, width), dtype=np.int64)
        for b, result in enumerate(results):
            best = result.hypotheses[0]
            tokens[b, :len(best.tokens)] = best.tokens
            used[b, :len(result.decoder_layers)] = result.decoder_layers
        tensors[f"gen_tokens_{mode}"] = tokens
        tensors[f"gen_scores_{mode}"] = np.array([r.hypotheses[0].score for r in results],
                                                 dtype=np.float32)
        tensors[f"gen_decoder_layers_{mode}"] = used
        scores64[mode] = [r.hypotheses[0].score for r in results]
        hist[f"gen_decoder_{mode}"] = histogram(used.flatten())

    info = {
        "seed": case.seed,
        "description": case.description,
        "src_lengths": list(case.src_lengths),
        "tgt_lengths": list(case.tgt_lengths),
        "policy": policy.to_json(),
        "ve_confidence_ids": list(case.confidence_ids),
        "generation": {"beam_size": case.beam_size, "max_len": case.max_len,
                       "min_len": case.min_len, "no_repeat_ngram_size": case.no_repeat_ngram_size,
                       "length_penalty": case.length_penalty},
        "gen_scores_float64": scores64,
        # How much skipped layers' caches matter here: 0 when no skipped layer ever runs again.
        "gen_score_diff_propagate_vs_reference": float(np.max(np.abs(
            np.array(scores64["propagate"]) - np.array(scores64["reference"])))),
        "exit_histograms": hist,
        "margins": {
            "min_cosine_margin": margins.min_cosine_margin(),
            "min_candidate_gap": margins.min_candidate_gap(),
            "min_final_score_gap": margins.min_final_gap(),
            "required": {"cosine": MIN_COSINE_MARGIN, "candidates": MIN_CANDIDATE_GAP},
            "exit_tests": len(margins.cosine_records),
        },
        "parameters": [[n, list(s)] for n, s in R.parameter_specs(model)],
    }
    return Outcome(tensors, info, margins)


def problems(case: ExitCase, outcome: Outcome) -> List[str]:
    """Why a case is not a good fixture (empty when it is)."""
    out = []
    m = outcome.info["margins"]
    if m["min_cosine_margin"] < MIN_COSINE_MARGIN:
        out.append(f"a cosine lies {m['min_cosine_margin']:.2e} from its threshold")
    if min(m["min_candidate_gap"], m["min_final_score_gap"]) < MIN_CANDIDATE_GAP:
        out.append(f"beam candidates lie {m['min_candidate_gap']:.2e} / final scores "
                   f"{m['min_final_score_gap']:.2e} apart")
    if case.modes_differ and (outcome.info["gen_score_diff_propagate_vs_reference"]
                              < MIN_MODE_DIFFERENCE):
        out.append("the propagate and reference generations do not differ")
    policy = case.exit_policy()
    for stack, keys in (("image", ["image"]), ("text", ["text"]),
                        ("decoder", ["ve_decoder"] + [f"gen_decoder_{k}" for k in KV_MODES])):
        fixed = policy.fixed_depth(stack) > 0
        if policy.reads_confidence(stack):
            similar = min([policy.confidence_threshold] + policy.confidence_thresholds) < 1.0
        else:
            similar = min([getattr(policy, f"exit_threshold_{stack}")]
                          + getattr(policy, f"exit_thresholds_{stack}")) < 1.0
        if fixed or not similar or (stack == "image" and case.encoder_mode == "joint"):
            continue
        if len(case.src_lengths) == 1:  # one sample: only the generation steps can vary
            keys = [k for k in keys if k.startswith("gen_")]
        keys = [k for k in keys if k.replace("_propagate", "").replace("_reference", "")
                .replace("gen_decoder", "gen") in case.must_vary]
        for key in keys:
            if len(outcome.info["exit_histograms"][key]) < 2:
                out.append(f"{key} exits all at one depth: {outcome.info['exit_histograms'][key]}")
    return out


def _strict_json(value):
    """JSON has no Infinity or NaN (nlohmann::json rejects them): write null instead, e.g. for a
    margin that no test ever measured."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def write_case(case: ExitCase, outcome: Outcome, out_dir: str) -> None:
    directory = os.path.join(out_dir, case.name)
    os.makedirs(directory, exist_ok=True)
    config = R.make_config(case.size, case.encoder_mode, list(case.image_size),
                           name=f"exits-{case.name}")
    R.write_config(config, directory)
    with open(os.path.join(directory, "case.json"), "w") as f:
        json.dump(_strict_json(outcome.info), f, indent=1, allow_nan=False)
        f.write("\n")
    safetensors_np.save_file(outcome.tensors, os.path.join(directory, "io.safetensors"))


def explore(case: ExitCase, stack: Optional[str], grid: Sequence[float]) -> None:
    """Prints the cosines of every exit test at the case's policy, then (with `stack`) the
    histograms and margins of each threshold in `grid` for that stack."""
    config = R.make_config(case.size, case.encoder_mode, list(case.image_size))
    model = R.synthetic_model(config, case.seed)
    outcome = run_case(case, model)
    by_place = collections.defaultdict(list)
    for r in outcome.margins.cosine_records:
        where = "gen" if r["where"].startswith("step") else r["where"]
        by_place[(where, r["layer"])].append(r["cosine"])
    for key in sorted(by_place):
        values = np.sort(np.array(by_place[key]))
        print(key, len(values), np.round(values, 4).tolist()[:40])
    print("histograms", outcome.info["exit_histograms"])
    print("margins", {k: v for k, v in outcome.info["margins"].items() if k != "required"})
    print("problems", problems(case, outcome))
    if stack:
        for value in grid:
            trial = replace(case, policy=dict(case.policy, **{f"exit_threshold_{stack}": value}))
            o = run_case(trial, model)
            print(f"{stack} {value}: {o.info['exit_histograms']} cos margin "
                  f"{o.info['margins']['min_cosine_margin']:.1e} gaps "
                  f"{o.info['margins']['min_candidate_gap']:.1e} "
                  f"{o.info['margins']['min_final_score_gap']:.1e} modes differ by "
                  f"{o.info['gen_score_diff_propagate_vs_reference']:.1e}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="fixture directory (cases are replaced)")
    parser.add_argument("--only", nargs="*", default=None, help="case names to (re)write")
    parser.add_argument("--explore", metavar="CASE",
                        help="print a case's cosines and scan thresholds")
    parser.add_argument("--stack", choices=R.mue.STACKS,
                        help="with --explore: the threshold to scan")
    parser.add_argument("--grid", type=float, nargs="*", default=[])
    args = parser.parse_args(argv)
    cases = {c.name: c for c in CASES}
    unknown = set(args.only or ()) - set(cases) | ({args.explore} - set(cases) - {None})
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; known: {sorted(cases)}")
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)  # same reductions every run: byte-identical fixtures
    if args.explore:
        explore(cases[args.explore], args.stack, args.grid)
        return 0
    if not args.out:
        parser.error("--out is required (or --explore)")
    failed = 0
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        outcome = run_case(case)
        bad = problems(case, outcome)
        if bad:
            print(f"{case.name}: NOT WRITTEN: " + "; ".join(bad))
            failed += 1
            continue
        shutil.rmtree(os.path.join(args.out, case.name), ignore_errors=True)
        write_case(case, outcome, args.out)
        size = sum(os.path.getsize(os.path.join(args.out, case.name, f))
                   for f in os.listdir(os.path.join(args.out, case.name)))
        m = outcome.info["margins"]
        print(f"{case.name} ({size / 1024:.0f} KiB): {outcome.info['exit_histograms']}; "
              f"margins cos {m['min_cosine_margin']:.1e}, candidates {m['min_candidate_gap']:.1e}, "
              f"finals {m['min_final_score_gap']:.1e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
