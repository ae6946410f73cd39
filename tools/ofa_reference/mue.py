"""MuE early exits on the reference model (spec 1.2-1.5, 2.1, 2.2), batched.

- `ExitPolicy`: thresholds (per stack, or per layer), the decoder's rule (`cosine`, MuE's, or
  `confidence`: the answer's softmax confidence at the layer through the final LayerNorm and the
  output projection, measured as the top-1 probability or the top-1 minus top-2 margin), the
  decoder's schedule, fixed depths and the skipped-layer cache mode, with the same JSON fields as
  the engine's `mue::ExitPolicy::to_json`.
- `encode`: the encoder with per-sample exits (one cosine per sample and stream).
- `score_ve`: visual entailment's single decoder pass over `prev_output_tokens` with per-sample
  exits; logits at each sample's last valid position.
- `beam_search`: fairseq-style beam search (greedy = beam 1) with one decoder exit decision per
  sample per step over all of its beams' rows.

Every exit test compares a float64 signal (cosine or confidence) of float32 states with a
threshold, strictly (`signal > threshold`); a threshold of 1.0 never exits. `Margins` collects how
far each tested signal was from its threshold and how close the beam candidates came to each other, so that fixtures can
stay clear of decisions that float32 differences between implementations could flip.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from .decoder import SKIPPED_LAYER_CACHE_MODES
from .encoder import EncoderOutput
from .model import OFAModel

DECODER_SCHEDULES = ("static", "decaying", "calm")
DECODER_RULES = ("cosine", "confidence")
CONFIDENCE_MEASURES = ("top1", "margin")
STACKS = ("image", "text", "decoder")


@dataclass
class ExitPolicy:
    exit_threshold_image: float = 1.0
    exit_threshold_text: float = 1.0
    exit_threshold_decoder: float = 1.0
    # Per layer (after layer l = 0..layers-2); non-empty replaces the stack's single threshold.
    exit_thresholds_image: List[float] = field(default_factory=list)
    exit_thresholds_text: List[float] = field(default_factory=list)
    exit_thresholds_decoder: List[float] = field(default_factory=list)
    decoder_rule: str = "cosine"
    confidence_threshold: float = 1.0
    confidence_thresholds: List[float] = field(default_factory=list)
    confidence_measure: str = "top1"
    decoder_schedule: str = "static"
    calm_beta: float = 0.9
    calm_tau: float = 1.0
    fixed_depth_image: int = 0  # every sample exits after this many layers (0 = off)
    fixed_depth_text: int = 0
    fixed_depth_decoder: int = 0
    skipped_layer_cache: str = "propagate"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("exit_thresholds_image", "exit_thresholds_text", "exit_thresholds_decoder",
                     "confidence_thresholds"):
            for i, value in enumerate(getattr(self, name)):
                if not 0.0 < value <= 1.0:
                    raise ValueError(f"exit policy: {name}[{i}] (after layer {i + 1}) = {value} "
                                     f"is outside (0, 1]")
        if not 0.0 < self.confidence_threshold <= 1.0:
            raise ValueError(f"exit policy: confidence_threshold = {self.confidence_threshold} "
                             f"is outside (0, 1]")
        if self.decoder_rule not in DECODER_RULES:
            raise ValueError(f"exit policy: decoder_rule must be one of {DECODER_RULES}")
        if self.confidence_measure not in CONFIDENCE_MEASURES:
            raise ValueError(f"exit policy: confidence_measure must be one of "
                             f"{CONFIDENCE_MEASURES}")
        for stack in STACKS:
            value = getattr(self, f"exit_threshold_{stack}")
            if not 0.0 < value <= 1.0:
                raise ValueError(f"exit policy: exit_threshold_{stack} = {value} is outside (0, 1]")
            depth = getattr(self, f"fixed_depth_{stack}")
            if not isinstance(depth, int) or depth < 0:
                raise ValueError(f"exit policy: fixed_depth_{stack} = {depth!r} must be an "
                                 f"integer >= 0 (0 means off)")
        if self.decoder_schedule not in DECODER_SCHEDULES:
            raise ValueError(f"exit policy: decoder_schedule must be one of {DECODER_SCHEDULES}")
        if self.skipped_layer_cache not in SKIPPED_LAYER_CACHE_MODES:
            raise ValueError(f"exit policy: skipped_layer_cache must be one of "
                             f"{SKIPPED_LAYER_CACHE_MODES}")
        if not 0.0 <= self.calm_beta <= 1.0:
            raise ValueError(f"exit policy: calm_beta = {self.calm_beta} is outside [0, 1]")
        if not self.calm_tau > 0.0:
            raise ValueError(f"exit policy: calm_tau = {self.calm_tau} must be positive")

    def to_json(self) -> Dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict) -> "ExitPolicy":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known - {"comment", "calibration"}
        if unknown:
            raise ValueError(f"exit policy: unknown fields {sorted(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def reads_confidence(self, stack: str) -> bool:
        return stack == "decoder" and self.decoder_rule == "confidence"

    def base_threshold(self, stack: str, layer: int, num_layers: int) -> float:
        """The unscheduled threshold after layer `layer` (0-based): the per-layer value where
        given (it must have num_layers - 1 entries), else the stack's single one."""
        if self.reads_confidence(stack):
            name, single = "confidence_thresholds", self.confidence_threshold
        else:
            name, single = f"exit_thresholds_{stack}", getattr(self, f"exit_threshold_{stack}")
        values = getattr(self, name)
        if not values:
            return single
        if len(values) != num_layers - 1:
            raise ValueError(f"exit policy: {name} has {len(values)} values; the {stack} stack "
                             f"has {num_layers} layers, so it needs {num_layers - 1}")
        return values[layer] if layer < len(values) else 1.0

    def scheduled(self, theta: float, step: int = 0, max_len: int = 0) -> float:
        """The decoder threshold theta at generation step `step` of at most `max_len` under the
        schedule (spec 1.4); the confidence rule's thresholds follow it too."""
        if self.decoder_schedule == "static":
            return theta
        if self.decoder_schedule == "decaying":
            # Released MuE code: the first third of the steps never exits.
            if step < (max_len + 1) / 3.0:
                return 1.0
            return 0.9 * theta + 0.1 * math.exp(-(step + 1.0) / (max_len + 1.0))
        beta = self.calm_beta
        decay = math.exp(-self.calm_tau * (step + 1.0) / (max_len + 1.0))
        value = beta * theta + (1.0 - beta) * decay
        return min(max(value, 0.0), 1.0)

    def threshold(self, stack: str, step: int = 0, max_len: int = 0, layer: int = 0,
                  num_layers: int = 0) -> float:
        """The threshold of `stack` ("image", "text", "decoder") after `layer`; the decoder's
        follows its schedule at generation step `step` of at most `max_len` (spec 1.4). A base
        of 1.0 turns the exit off whatever the schedule would make of it."""
        theta = self.base_threshold(stack, layer, num_layers)
        if theta >= 1.0:
            return 1.0
        return self.scheduled(theta, step, max_len) if stack == "decoder" else theta

    def fixed_depth(self, stack: str) -> int:
        return getattr(self, f"fixed_depth_{stack}")

    def exits(self, stack: str, layer: int, num_layers: int, signal: Tensor, step: int = 0,
              max_len: int = 0, margins: Optional["Margins"] = None, where: str = "") -> Tensor:
        """Stop after layer `layer` (0-based)? One decision per entry of signal [N] (float64:
        the cosine, or the decoder's confidence under the `confidence` rule). The last layer
        always stops; a fixed depth k stops at layer k - 1 (or the last)."""
        if layer + 1 >= num_layers:
            return torch.ones_like(signal, dtype=torch.bool)
        fixed = self.fixed_depth(stack)
        if fixed > 0:
            return torch.full_like(signal, layer + 1 >= fixed, dtype=torch.bool)
        threshold = self.threshold(stack, step, max_len, layer, num_layers)
        # 1.0 never exits, even if rounding lifts a cosine past 1.
        if threshold >= 1.0:
            return torch.zeros_like(signal, dtype=torch.bool)
        if margins is not None:
            margins.cosine(where, layer, signal, threshold)
        return signal > threshold


def answer_confidence(model: OFAModel, states: Tensor, measure: str,
                      ids: Optional[Sequence[int]] = None) -> Tensor:
    """The confidence [N] (float64) of decoder states [N, D] taken after an intermediate layer:
    decoder.layer_norm, the output projection (only `ids`' columns where given, else the whole
    vocabulary), softmax in float64, then the top-1 probability or the top-1 minus top-2 margin."""
    logits = model.decoder.logits(model.decoder.layer_norm(states))
    if ids is not None:
        logits = logits[:, list(ids)]
    probs = torch.softmax(logits.double(), dim=-1)
    top = probs.topk(min(2, probs.shape[-1]), dim=-1).values
    if measure == "top1" or top.shape[-1] < 2:
        return top[:, 0]
    return top[:, 0] - top[:, 1]


@dataclass
class Margins:
    """Closest calls of one run: |cosine - threshold| of every exit test taken, and the gaps
    between the sorted beam candidates that decide the search (top 2 * beam + 1)."""

    cosines: List[float] = field(default_factory=list)
    cosine_records: List[Dict] = field(default_factory=list)
    candidate_gaps: List[float] = field(default_factory=list)
    final_gaps: List[float] = field(default_factory=list)

    def cosine(self, where: str, layer: int, cosine: Tensor, threshold: float) -> None:
        for value in cosine.tolist():
            self.cosines.append(value)
            self.cosine_records.append(dict(where=where, layer=layer, cosine=value,
                                            threshold=threshold))

    def min_cosine_margin(self) -> float:
        return min((abs(r["cosine"] - r["threshold"]) for r in self.cosine_records),
                   default=math.inf)

    def min_candidate_gap(self) -> float:
        return min(self.candidate_gaps, default=math.inf)

    def min_final_gap(self) -> float:
        return min(self.final_gaps, default=math.inf)


def flat_cosine(a: Tensor, b: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    """Cosine similarity per sample of a, b [N, T, D] (float32) over each sample's whole valid
    tensor, flattened over positions and channels (spec 1.2.4), in float64; valid [N, T] bool
    (None = all). 0 when either vector is zero."""
    a, b = a.double(), b.double()
    if valid is not None:
        keep = valid[:, :, None].to(a.dtype)
        a, b = a * keep, b * keep
    dot = (a * b).sum(dim=(1, 2))
    norm_a, norm_b = (a * a).sum(dim=(1, 2)), (b * b).sum(dim=(1, 2))
    cosine = dot / (norm_a.sqrt() * norm_b.sqrt())
    return torch.where((norm_a == 0) | (norm_b == 0), torch.zeros_like(cosine), cosine)


def encode(model: OFAModel, patch_images: Tensor, src_tokens: Tensor, policy: ExitPolicy,
           margins: Optional[Margins] = None) -> EncoderOutput:
    """The encoder with MuE exits, per sample. In joint mode only the text policy applies, to
    the joint stack. `layers_used` has [B] int64 per stream."""
    num_layers = len(model.encoder.layers)
    text_valid = src_tokens.ne(model.config["pad_id"])
    exited: Dict[str, Tensor] = {}

    def after_layer(stream: str, idx: int, x: Tensor, y: Tensor) -> Tensor:
        if stream == "image":
            valid = None
        elif stream == "text":
            valid = text_valid
        else:  # joint: [image; text], image tokens never padded
            image = text_valid.new_ones(text_valid.shape[0], x.shape[1] - text_valid.shape[1])
            valid = torch.cat([image, text_valid], dim=1)
        stack = "image" if stream == "image" else "text"
        return decide(policy, stack, idx, num_layers, flat_cosine(y, x, valid), exited, stream,
                      margins, where=stream)

    return model.encode(patch_images, src_tokens, after_layer=after_layer)


def decide(policy: ExitPolicy, stack: str, layer: int, num_layers: int, cosine: Tensor,
           exited: Dict[str, Tensor], key: str, margins: Optional[Margins], where: str,
           step: int = 0, max_len: int = 0) -> Tensor:
    """The exit decisions [N] of one hook call. exited[key] remembers who has already stopped:
    those ride along with their exit state, their answer is ignored, and their cosine is no
    decision, so it stays out of the margins."""
    before = exited.get(key, torch.zeros_like(cosine, dtype=torch.bool))
    stop = policy.exits(stack, layer, num_layers, cosine, step, max_len)
    if margins is not None:
        policy.exits(stack, layer, num_layers, cosine[~before], step, max_len, margins, where)
    exited[key] = before | stop
    return stop


def exit_layers(encoder_out: EncoderOutput) -> Dict[str, Tensor]:
    """{"image": [B], "text": [B]}; joint mode reports the joint stack's layers for both."""
    used = encoder_out.layers_used
    if "joint" in used:
        return {"image": used["joint"], "text": used["joint"]}
    return {"image": used["image"], "text": used["text"]}


def score_ve(model: OFAModel, encoder_out: EncoderOutput, prev_output_tokens: Tensor,
             policy: ExitPolicy, margins: Optional[Margins] = None,
             confidence_ids: Optional[Sequence[int]] = None):
    """Visual entailment's decoder pass (spec 2.1): the whole right-padded prev_output_tokens
    [B, T] under the causal mask, each sample exiting on the cosine over its valid (non-pad)
    positions. The threshold is exit_threshold_decoder whatever the schedule: the schedule is
    the generator's (spec 1.4); VE calls the decoder once with the static threshold. Returns
    (logits [B, V] at each sample's last valid position, decoder layers used [B] int64)."""
    policy = replace(policy, decoder_schedule="static")
    num_layers = len(model.decoder.layers)
    valid = prev_output_tokens.ne(model.config["pad_id"])
    exited: Dict[str, Tensor] = {}

    last = valid.sum(1) - 1
    rows = torch.arange(prev_output_tokens.shape[0])

    def after_layer(idx: int, x: Tensor, y: Tensor) -> Tensor:
        if policy.reads_confidence("decoder"):
            signal = answer_confidence(model, y[rows, last], policy.confidence_measure,
                                       confidence_ids)
        else:
            signal = flat_cosine(y, x, valid)
        return decide(policy, "decoder", idx, num_layers, signal, exited, "ve", margins,
                      where="ve")

    used: List[Tensor] = []
    features = model.decoder(prev_output_tokens, encoder_out, after_layer, layers_used=used)
    return model.decoder.logits(features[rows, last]), used[0]


@dataclass
class GenerationOptions:
    beam_size: int = 5
    max_len: int = 16  # generated tokens before the forced EOS
    min_len: int = 1  # EOS is banned before this many tokens
    no_repeat_ngram_size: int = 3
    length_penalty: float = 1.0


@dataclass
class Hypothesis:
    tokens: List[int]  # generated tokens, ending with EOS
    score: float  # sum of log-probabilities / length ** length_penalty


@dataclass
class Generation:
    hypotheses: List[Hypothesis]  # best first
    decoder_layers: List[int]  # decoder layers used at each step the sample was active


def banned_by_ngrams(sequence: Sequence[int], n: int) -> List[int]:
    """fairseq's no-repeat-ngram block: the tokens that would complete an n-gram already in
    `sequence` ([BOS] + generated tokens)."""
    if n <= 0 or len(sequence) + 1 < n:
        return []
    tail = list(sequence[len(sequence) - (n - 1):]) if n > 1 else []
    return [sequence[i + n - 1] for i in range(len(sequence) - n + 1)
            if list(sequence[i:i + n - 1]) == tail]


def beam_search(model: OFAModel, encoder_out: EncoderOutput, options: GenerationOptions,
                policy: ExitPolicy, margins: Optional[Margins] = None) -> List[Generation]:
    """fairseq-style beam search (spec 2.2) from BOS, with MuE decoder exits (spec 1.3, 1.4).

    Each step: log_softmax of the logits (float64); pad banned; EOS banned before min_len, and
    the only choice at step == max_len; no-repeat-ngram blocking over [BOS] + tokens; step 0
    uses beam 0 only. The top 2 * beam candidates (ties: lower beam, then lower token) are
    taken; an EOS among the first `beam` of them finishes a hypothesis with score / (step +
    1) ** length_penalty; a sample is done with `beam` finished hypotheses or at step ==
    max_len; otherwise its next beams are the first `beam` non-EOS candidates. One exit
    decision per sample per step, on the cosine over all its beams' rows (the confidence rule:
    the least confident beam's confidence over the vocabulary).
    """
    config = model.config
    bos, eos, pad = config["bos_id"], config["eos_id"], config["pad_id"]
    beam, max_len = options.beam_size, options.max_len
    num_layers = len(model.decoder.layers)
    batch = encoder_out.hidden.shape[0]
    # Each sample's rows are `beam` consecutive copies of it.
    rows = torch.arange(batch).repeat_interleave(beam)
    expanded = EncoderOutput(hidden=encoder_out.hidden[rows],
                             padding_mask=encoder_out.padding_mask[rows],
                             position_embedding=encoder_out.position_embedding,
                             num_image_tokens=encoder_out.num_image_tokens,
                             layers_used=encoder_out.layers_used, streams={})
    state = model.start_decoding(expanded, capacity=max_len + 1)

    active = list(range(batch))  # samples still searching, in row-group order
    tokens = {s: [[] for _ in range(beam)] for s in range(batch)}
    scores = {s: [0.0] * beam for s in range(batch)}
    results = [Generation([], []) for _ in range(batch)]
    step_holder = {"step": 0}
    exited: Dict[str, Tensor] = {}

    def after_layer(idx: int, x: Tensor, y: Tensor) -> Tensor:
        step = step_holder["step"]
        groups = x.shape[0] // beam
        if policy.reads_confidence("decoder"):
            confidence = answer_confidence(model, y.reshape(groups * beam, -1),
                                           policy.confidence_measure)
            signal = confidence.reshape(groups, beam).min(dim=1).values
        else:
            signal = flat_cosine(y.reshape(groups, beam, -1), x.reshape(groups, beam, -1))
        stop = decide(policy, "decoder", idx, num_layers, signal, exited, f"step {step}",
                      margins, f"step {step}", step, max_len)
        return stop.repeat_interleave(beam)

    for step in range(max_len + 1):
        if not active:
            break
        step_holder["step"] = step
        inputs = torch.tensor([bos if step == 0 else tokens[s][b][-1]
                               for s in active for b in range(beam)], dtype=torch.long)
        logits = model.decode_step(inputs, state, after_layer, policy.skipped_layer_cache)
        used = state.layers_used[-1]
        lprobs_all = torch.log_softmax(logits.double(), dim=-1)
        next_active, source_rows = [], []
        for g, s in enumerate(active):
            results[s].decoder_layers.append(int(used[g * beam]))
            lprobs = lprobs_all[g * beam:(g + 1) * beam].clone()
            lprobs[:, pad] = -math.inf
            if step >= max_len:
                keep = lprobs[:, eos].clone()
                lprobs.fill_(-math.inf)
                lprobs[:, eos] = keep
            elif step < options.min_len:
                lprobs[:, eos] = -math.inf
            for b in range(beam):
                banned = banned_by_ngrams([bos] + tokens[s][b], options.no_repeat_ngram_size)
                if banned:
                    lprobs[b, banned] = -math.inf
            beams_here = 1 if step == 0 else beam  # all beams start identical: use the first
            candidates = (torch.tensor(scores[s][:beams_here], dtype=torch.float64)[:, None]
                          + lprobs[:beams_here]).flatten()
            # Stable descending sort of the flat (beam, token) order: ties keep the lower
            # (beam, token).
            order = torch.sort(candidates, descending=True, stable=True).indices
            order = order[torch.isfinite(candidates[order])]
            ranked = candidates[order]
            if margins is not None:
                top = ranked[:2 * beam + 1].tolist()
                margins.candidate_gaps += [a - b for a, b in zip(top, top[1:])]
            chosen = [(float(candidates[i]), int(i) // lprobs.shape[1], int(i) % lprobs.shape[1])
                      for i in order[:2 * beam].tolist()]
            finals = results[s].hypotheses
            for score, b, token in chosen[:beam]:
                if token == eos and len(finals) < beam:
                    finals.append(Hypothesis(tokens[s][b] + [eos],
                                             score / (step + 1.0) ** options.length_penalty))
            if len(finals) >= beam or step >= max_len:
                continue
            live = [(score, b, token) for score, b, token in chosen if token != eos][:beam]
            if len(live) < beam:
                raise ValueError("beam search: fewer than beam_size live candidates")
            tokens[s] = [tokens[s][b] + [token] for _, b, token in live]
            scores[s] = [score for score, _, _ in live]
            source_rows += [g * beam + b for _, b, _ in live]
            next_active.append(s)
        active = next_active
        if active:
            state.reorder(torch.tensor(source_rows, dtype=torch.long))
    for result in results:
        result.hypotheses.sort(key=lambda h: -h.score)  # stable: ties keep finishing order
        if margins is not None:
            ranked = [h.score for h in result.hypotheses]
            margins.final_gaps += [a - b for a, b in zip(ranked, ranked[1:])]
    return results
