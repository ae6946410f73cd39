#!/usr/bin/env python3
"""Trains the embedded default model (models/mue-scenes-small) on procedural scenes, MuE style.

  train_default_model.py --out DIR --minutes 70 [--image-minutes 7] [--procs 2] [--seed 0]
      [--log DIR/train.log] [--init-from CHECKPOINT] [--blank-images] [--position-heads]
      [--grounding-heads] [--grounding-attention] [--random-exit-depth P]

One command from nothing: it learns the BPE vocabulary into DIR (tools/learn_bpe.py) unless
DIR/encoder.json exists, then trains in two stages of fixed wall time and leaves
DIR/checkpoint.pt (written every --save-minutes and at the end). Stage 1 (--image-minutes)
trains only the ResNet, with the cell heads on its output; stage 2 (--minutes) trains
everything on both tasks. tools/export_default_model.py turns the checkpoint into the model
directory. --init-from continues a stopped run from its checkpoint (weights, step and scene
counts; a fresh optimizer and LR schedule).

--blank-images trains the text-only baseline of the model card: the same model, recipe and
scenes, but every image is uniform grey (the text stream and decoder see premise and hypothesis
only), so its entailment accuracy is what the text alone gives this architecture. It has no
stage 1 and no cell heads (a blank image has no cells to learn).

--position-heads adds training-only heads (dropped at export like the cell heads) with which every
image token predicts its own row and column from each image-stream layer: OFA adds no position to
a token's content and MuE's image stream has no 2-D relative bias, so without them the stream
need not know where its items are (the model card's relation errors).

--grounding-heads adds training-only heads (dropped at export) on every decoder layer's answer
state that predict the cells of the items the hypothesis names (the subject of a position or
colour hypothesis; both items of a relation): the answer loss alone left relations at chance, as
nothing told the decoder that it must find the two named items and read where they are.

--grounding-attention adds a training-only loss: at the answer position of decoder layers 2-6,
cross-attention head 0 should rest on the first named item's cell (its 4 image tokens), head 1
on the second's. With the grounding heads alone their loss stayed at chance: the decoder must
first look at the named items before it can read their cells.

--random-exit-depth P feeds the decoder, for a fraction P of the rows, an encoder stream that
exited early: each stream (image, text) independently, after a layer drawn uniformly from 1 to
N-1 instead of N, through the encoder's final LayerNorm as an exit at inference is. MuE's
layer-wise loss makes every decoder layer an exit; this makes every encoder exit a state the
decoder has learned to read. Without it, a model whose upper text layers do work (the model
card's 92% candidate) lost 26 points at a text exit after layer 2.

Recipe (spec 1.7 and the probe's notes):
- the shipped model is ofa_reference.OFAModel with the decomposed (MuE) encoder; exits are off
  in training, both encoder streams run every layer;
- VE and captioning in every step: B scenes per process, H hypotheses per scene (the image stream
  runs once per scene: it never sees the text) and one of the 5 captions per scene;
- MuE's layer-wise task loss: the task CE of every decoder layer's output through the final
  decoder LayerNorm and the tied output projection, summed over layers (VE's CE is over the three
  answer tokens at the last prompt position, as OFA's constraint mask does; captioning has label
  smoothing 0.1);
- training-only auxiliary heads (dropped at export): every image token predicts its cell's
  colour, class and kind (empty / item / occluder / distractor) from each encoder layer's image
  output after the final encoder LayerNorm (so early image exits keep the scene), and from the
  ResNet's output directly (a class signal that must cross the transformer first stayed at
  chance for 12k scenes; probe lesson 2); stage 1 trains the ResNet on its heads alone (batch
  32 scenes per process, LR 1e-3), stage 2 weighs the heads 4x (at 1x the tasks' gradients,
  summed over 6 decoder layers, wore the class accuracy down);
- AdamW (0.9, 0.98), weight decay 0.05 on matrices, peak LR 1e-3, 4% warm-up then cosine over
  the time budget, gradient clip 1.0;
- --procs one-thread processes, data-parallel with gloo (gradients averaged by hand); Debian's
  torch runs slower with two threads in one process.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import ofa_reference as R  # noqa: E402
from blank_dump import BLANK_GREY  # noqa: E402
from learn_bpe import Bpe  # noqa: E402
from scenes import SceneSource, pre_caption  # noqa: E402
from scenes import prompts  # noqa: E402
from scenes.language import RELATIONS, unique_of_class  # noqa: E402
from scenes.render import CLASS_NAMES, COLOUR_NAMES, GRID  # noqa: E402

NAME = "mue-scenes-small"


def model_config(vocab_size: int, d_model: int, resnet_width: int = 32,
                 resnet_layers=(2, 2, 2)) -> dict:
    """OFA's architecture at a small size (FORMAT.md schema; tokenizer/tasks added at export)."""
    config = R.make_config("tiny", encoder_mode="decomposed", image_size=[128, 128], name=NAME)
    config.update(d_model=d_model, encoder_layers=6, decoder_layers=6, attention_heads=4,
                  ffn_dim=4 * d_model, resnet_layers=list(resnet_layers),
                  resnet_width=resnet_width, vocab_size=vocab_size, image_bucket_size=8)
    return R.normalize_config(config)


class AuxHeads(nn.Module):
    """Training-only per-image-token heads: cell colour (7), class (8), kind (4), on the image
    stream's layers (d_model) and on the ResNet's output (stem_channels) directly: a class
    signal that reaches the ResNet only through the transformer layers was measured to stay at
    chance for 12k scenes, while the same head on the ResNet's output learns in 3k."""

    def __init__(self, d_model: int, stem_channels: int, position: bool = False,
                 grounding: bool = False):
        super().__init__()
        if grounding:  # --grounding-heads: the cells (16) of the hypothesis's first/second item
            self.ref_a = nn.Linear(d_model, GRID * GRID)
            self.ref_b = nn.Linear(d_model, GRID * GRID)
        if position:  # --position-heads: every image token's own row and column (8 each)
            self.row = nn.Linear(d_model, 8)
            self.col = nn.Linear(d_model, 8)
        self.colour = nn.Linear(d_model, 1 + len(COLOUR_NAMES))
        self.cls = nn.Linear(d_model, 1 + len(CLASS_NAMES))
        self.kind = nn.Linear(d_model, 4)
        self.stem_colour = nn.Linear(stem_channels, 1 + len(COLOUR_NAMES))
        self.stem_cls = nn.Linear(stem_channels, 1 + len(CLASS_NAMES))
        self.stem_kind = nn.Linear(stem_channels, 4)


def cell_targets(grid: np.ndarray) -> np.ndarray:
    """[4, 4] cell values -> [64] per image token (8x8 row-major; a cell is 2x2 tokens)."""
    return np.repeat(np.repeat(grid, 2, axis=0), 2, axis=1).reshape(-1)


IGNORE = -100  # no grounding target (F.cross_entropy's ignore_index)
# template -> (its hypothesis form, the groups that name items); other templates name no item
_GROUNDED_TEMPLATES = {
    "relation": (re.compile(r"^the (\w+) is (" + "|".join(RELATIONS) + r") the (\w+)$"), (1, 3)),
    "position": (re.compile(r"^there is an? (\w+) in the "), (1,)),
    "colour": (re.compile(r"^the (\w+) is \w+$"), (1,))}


def grounding_cells(scene, hypothesis: str, template: str) -> Tuple[int, int]:
    """The cells (row * 4 + col) of the unique visible items a hypothesis names, for the
    --grounding-heads: (subject, IGNORE) for position and colour, (first, second) for relation;
    IGNORE where an item is not uniquely visible or the template names no single item."""
    names: List[str] = []
    if template in _GROUNDED_TEMPLATES:
        pattern, groups = _GROUNDED_TEMPLATES[template]
        m = pattern.match(hypothesis)
        if m is None:
            raise ValueError(f"{template} hypothesis {hypothesis!r}: not in the template's form")
        names = [m.group(g) for g in groups]
    cells = []
    for name in names:
        it = unique_of_class(scene.visible, name)
        cells.append(IGNORE if it is None else it.row * GRID + it.col)
    cells += [IGNORE] * (2 - len(cells))
    return cells[0], cells[1]


class Batcher:
    """Tensors of one step from the scene source."""

    def __init__(self, source: SceneSource, bpe: Bpe, config: dict, blank_images: bool = False):
        self.source, self.bpe, self.config = source, bpe, config
        self.blank_images = blank_images
        self.bos, self.pad, self.eos = config["bos_id"], config["pad_id"], config["eos_id"]
        self.caption_src = self.ids(prompts.CAPTION_PROMPT)
        self.answer_ids = [self.ids(prompts.ANSWERS[k])[0] for k in ("contradiction",
                                                                     "entailment", "neutral")]
        for k in prompts.ANSWERS:
            if len(self.ids(prompts.ANSWERS[k])) != 1:
                raise ValueError(f"answer {prompts.ANSWERS[k]!r} is not one token")
        self.label_index = {"contradiction": 0, "entailment": 1, "neutral": 2}
        mean = np.asarray(config["image_mean"], np.float32)
        std = np.asarray(config["image_std"], np.float32)
        self.mean, self.std = mean, std

    def ids(self, text: str) -> List[int]:
        """OFA ids (BPE id + 4) of a text already through pre_caption where needed."""
        return [i + 4 for i in self.bpe.encode(text)]

    def pad_rows(self, rows: List[List[int]]) -> torch.Tensor:
        width = max(len(r) for r in rows)
        return torch.tensor([r + [self.pad] * (width - len(r)) for r in rows], dtype=torch.long)

    def image_tensor(self, images: List[np.ndarray]) -> torch.Tensor:
        x = np.stack(images).astype(np.float32) / 255.0
        if self.blank_images:
            x[...] = BLANK_GREY / 255.0
        x = (x - self.mean) / self.std
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()

    def make(self, indices: List[int], rng: np.random.Generator) -> Dict[str, torch.Tensor]:
        samples = [self.source.sample(i) for i in indices]
        ve_src, ve_scene, ve_label, ve_template, ve_ref = [], [], [], [], []
        cap_tgt = []
        for j, s in enumerate(samples):
            p = pre_caption(s.premise)
            for hyp, label, template in s.hypotheses:
                hyp = pre_caption(hyp)
                ve_src.append([self.bos] + self.ids(prompts.ve_prompt(p, hyp)) + [self.eos])
                ve_scene.append(j)
                ve_label.append(self.label_index[label])
                ve_template.append(template)
                ve_ref.append(grounding_cells(s.scene, hyp, template))
            cap = self.ids(" " + pre_caption(s.captions[int(rng.integers(len(s.captions)))]))
            cap_tgt.append(cap[:15] + [self.eos])
        ve_src_t = self.pad_rows(ve_src)
        # spec 2.1, prompt_type prev_output: the decoder reads [BOS] + prompt (no EOS) and the
        # answer is predicted at the last prompt position.
        ve_prev = ve_src_t.clone()[:, :-1]
        lengths = torch.tensor([len(r) for r in ve_src])
        for r, n in enumerate(lengths.tolist()):
            ve_prev[r, n - 1:] = self.pad
        cap_prev = self.pad_rows([[self.bos] + t[:-1] for t in cap_tgt])
        cap_tgt_t = self.pad_rows(cap_tgt)
        return dict(
            images=self.image_tensor([s.image for s in samples]),
            ve_src=ve_src_t, ve_prev=ve_prev, ve_pos=lengths - 2,
            ve_scene=torch.tensor(ve_scene), ve_label=torch.tensor(ve_label),
            ve_ref=torch.tensor(ve_ref, dtype=torch.long),
            cap_src=torch.tensor([[self.bos] + self.caption_src + [self.eos]] * len(samples)),
            cap_prev=cap_prev, cap_tgt=cap_tgt_t,
            colour=torch.from_numpy(np.stack([cell_targets(s.cell_colour) for s in samples])),
            cls=torch.from_numpy(np.stack([cell_targets(s.cell_class) for s in samples])),
            kind=torch.from_numpy(np.stack([cell_targets(s.cell_kind) for s in samples])),
            templates=ve_template)


def init_weights(module: nn.Module, d_model: int, pad_id: int) -> None:
    """BERT-style init as fairseq/OFA: linear weights N(0, 0.02) with zero bias; token and
    position embeddings N(0, d^-1/2) (the tied output projection then starts with logits of
    about unit scale); the pad embedding row zero. Convolutions and norms keep torch's init."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02 if m.weight.shape[1] != d_model else d_model ** -0.5)
    with torch.no_grad():
        module.model.encoder.embed_tokens.weight[pad_id].zero_()


def run_encoder_layers(enc, x, bias, padding_mask) -> List[torch.Tensor]:
    """[input, output of layer 1, ..., output of layer N] of one encoder stream (spec 1.2; no
    exits in training)."""
    states = [x]
    for idx, layer in enumerate(enc.layers):
        x = layer(x, bias(idx), padding_mask)
        states.append(x)
    return states


def cell_token_mask() -> torch.Tensor:
    """[16, 64] bool: the image tokens of each cell (row * 4 + col), as cell_targets lays
    cells over tokens."""
    cell = torch.from_numpy(cell_targets(np.arange(GRID * GRID).reshape(GRID, GRID)))
    return cell[None, :] == torch.arange(GRID * GRID)[:, None]


class Trainer(nn.Module):
    """The model plus training-only heads, and the MuE forward that collects every layer."""

    def __init__(self, config: dict, position_heads: bool = False, grounding_heads: bool = False,
                 grounding_attention: bool = False, random_exit_depth: float = 0.0):
        super().__init__()
        if not 0.0 <= random_exit_depth <= 1.0:
            raise ValueError(f"random_exit_depth must be in [0, 1], got {random_exit_depth}")
        self.grounding_attention = grounding_attention
        self.random_exit_depth = random_exit_depth
        self.register_buffer("cell_tokens", cell_token_mask(), persistent=False)
        self.model = R.OFAModel(config)
        self.aux = AuxHeads(config["d_model"], self.model.encoder.embed_images.out_channels,
                            position_heads, grounding_heads)
        init_weights(self, config["d_model"], config["pad_id"])
        self.stem_features = None  # the last ResNet output [B, C, h, w], for the stem heads
        self.model.encoder.embed_images.register_forward_hook(self._keep_stem)

    def _keep_stem(self, module, inputs, output) -> None:
        self.stem_features = output

    def encode_image(self, images: torch.Tensor):
        """The image stream once per scene: (per-layer states [B, P, D] list, image_pos [P, D])."""
        enc = self.model.encoder
        x, image_pos, _ = enc.embed_image(images)
        image_abs = enc.abs_pos_bias(image_pos)
        return run_encoder_layers(enc, x, lambda idx: image_abs, None), image_pos

    def encode_rows(self, image_states, image_pos, scene_of_row, src_tokens):
        """EncoderOutput for text rows whose image is image_states[-1][scene_of_row]."""
        enc = self.model.encoder
        text_x, text_pad, text_pos = enc.embed_text(src_tokens)
        text_abs = enc.abs_pos_bias(text_pos)
        length = src_tokens.shape[1]
        text_states = run_encoder_layers(
            enc, text_x, lambda idx: text_abs + enc.token_rel_bias(idx, length), text_pad)
        image_final, text_final = image_states[-1][scene_of_row], text_states[-1]
        if self.random_exit_depth > 0:
            image_final = self.exit_states(image_states, scene_of_row)
            text_final = self.exit_states(text_states, torch.arange(text_x.shape[0]))
        hidden = enc.layer_norm(torch.cat([image_final, text_final], dim=1))
        padding = torch.cat([torch.zeros(image_final.shape[:2], dtype=torch.bool), text_pad], 1)
        return R.EncoderOutput(hidden=hidden, padding_mask=padding,
                               position_embedding=torch.cat([image_pos, text_pos]),
                               num_image_tokens=image_final.shape[1], layers_used={},
                               streams={})

    def exit_states(self, states: List[torch.Tensor], source: torch.Tensor) -> torch.Tensor:
        """--random-exit-depth: one stream's output per row [R, T, D], row r reading sequence
        source[r] of the stream's states [input, layer 1, ..., layer N] (each [S, T, D]; the image
        stream runs once per scene): after a layer drawn uniformly from 1..N-1 for a fraction
        random_exit_depth of the rows, after layer N for the others."""
        outputs = torch.stack(states[1:])  # [N, S, T, D]
        layers, rows = outputs.shape[0], source.shape[0]
        depth = torch.full((rows,), layers - 1, dtype=torch.long)
        early = torch.rand(rows) < self.random_exit_depth
        depth[early] = torch.randint(0, layers - 1, (int(early.sum()),))
        return outputs[depth, source]

    def decoder_layers(self, prev, encoder_out,
                       cross_log_probs: Optional[List[torch.Tensor]] = None) -> List[torch.Tensor]:
        """Every decoder layer's output, each through decoder.layer_norm (spec 1.7): the full
        sequence decoder of spec 3.6 with every layer kept (the reference's own loop serves
        inference and its exits). cross_log_probs, if given, receives every layer's
        cross-attention log-probabilities [B, H, T, S] (for --grounding-attention)."""
        dec = self.model.decoder
        t = prev.shape[1]
        pt = dec.target_positions(t, prev.device)
        self_abs = (dec.heads(dec.self_pos_q_linear(pt) * dec.pos_scaling)
                    @ dec.heads(dec.self_pos_k_linear(pt)).transpose(1, 2)).unsqueeze(0)
        cross_bias = (dec.heads(dec.cross_pos_q_linear(pt) * dec.pos_scaling)
                      @ dec.heads(dec.cross_pos_k_linear(encoder_out.position_embedding))
                      .transpose(1, 2)).unsqueeze(0)
        padding = prev.eq(dec.pad_id)
        x = dec.embed(prev)
        outs = []
        for idx, layer in enumerate(dec.layers):
            layer.encoder_attn.recorded_log_probs = cross_log_probs
            try:
                x = layer(x, encoder_kv=layer.encoder_key_value(encoder_out.hidden),
                          self_bias=self_abs + dec.token_rel_bias(idx, t, t),
                          cross_bias=cross_bias, self_padding_mask=padding,
                          encoder_padding_mask=encoder_out.padding_mask)
            finally:
                layer.encoder_attn.recorded_log_probs = None
            outs.append(dec.layer_norm(x))
        return outs

    def forward(self, b: Dict[str, torch.Tensor], answer_ids: List[int]):
        dec = self.model.decoder
        image_states, image_pos = self.encode_image(b["images"])
        out = {}
        # Visual entailment: scores of the three answers at the last prompt position per layer.
        enc_ve = self.encode_rows(image_states, image_pos, b["ve_scene"], b["ve_src"])
        rows = torch.arange(b["ve_prev"].shape[0])
        answers = dec.embed_tokens.weight[answer_ids]  # [3, D]
        ve_losses, ve_acc, ground_losses = [], [], []
        grounded = b["ve_ref"].ne(IGNORE)
        cross = [] if self.grounding_attention else None
        for h in self.decoder_layers(b["ve_prev"], enc_ve, cross):
            state = h[rows, b["ve_pos"]]
            logits = state @ answers.t()
            ve_losses.append(F.cross_entropy(logits, b["ve_label"]))
            ve_acc.append((logits.argmax(-1) == b["ve_label"]).float().mean())
            if hasattr(self.aux, "ref_a"):
                refs = torch.stack([self.aux.ref_a(state), self.aux.ref_b(state)], 1)  # [R,2,16]
                # a sum over the targets that exist (a batch may have none)
                ground_losses.append(F.cross_entropy(refs.flatten(0, 1), b["ve_ref"].flatten(),
                                                     ignore_index=IGNORE, reduction="sum")
                                     / grounded.sum().clamp(min=1))
        out["ve"] = torch.stack(ve_losses).sum()
        if cross:
            out["attend"], out["attend_mass"] = self.attention_grounding(cross, b, grounded)
        if ground_losses:
            out["ground"] = torch.stack(ground_losses).mean()
            right = (refs.argmax(-1) == b["ve_ref"])[grounded]
            out["ground_acc"] = right.float().mean().detach() if right.numel() else None
        out["ve_acc_layers"] = torch.stack(ve_acc).detach()
        # Captioning: teacher forcing from BOS, every layer.
        scenes = torch.arange(b["images"].shape[0])
        enc_cap = self.encode_rows(image_states, image_pos, scenes, b["cap_src"])
        cap_losses = []
        mask = b["cap_tgt"].ne(self.model.config["pad_id"])
        for h in self.decoder_layers(b["cap_prev"], enc_cap):
            logits = dec.logits(h)[mask]
            cap_losses.append(F.cross_entropy(logits, b["cap_tgt"][mask], label_smoothing=0.1))
        out["cap"] = torch.stack(cap_losses).sum()
        out["cap_last"] = cap_losses[-1].detach()
        out["aux"], out["aux_acc"] = self.aux_loss(image_states, b)
        return out

    def attention_grounding(self, cross: List[torch.Tensor], b: Dict[str, torch.Tensor],
                            grounded: torch.Tensor):
        """--grounding-attention: at the answer position of decoder layers 2-6, cross-attention
        head 0 should rest on the first named item's cell (its 4 image tokens), head 1 on the
        second's. grounded [R, 2]: which targets exist. Returns (mean -log attention mass on
        the cell, last layer's mean mass), or (0, None) when the batch names no item."""
        rows = torch.arange(b["ve_prev"].shape[0])
        if not grounded.any():
            # Not cross[0].sum() * 0: masked keys hold -inf log-probabilities, and -inf * 0 is
            # NaN, which made the logged loss NaN for good (its moving average never recovers).
            return torch.zeros(()), None
        target = self.cell_tokens[b["ve_ref"].clamp(min=0)]  # [R, 2, 64]
        losses = []
        for log_probs in cross[1:]:
            lp = log_probs[rows, :2, b["ve_pos"], :64]  # [R, 2 heads, 64 image tokens]
            on_cell = lp.masked_fill(~target, float("-inf")).logsumexp(-1)  # [R, 2]
            losses.append(-on_cell[grounded].mean())
        mass = float(on_cell[grounded].exp().mean())
        return torch.stack(losses).mean(), mass

    def aux_loss(self, image_states, b: Dict[str, torch.Tensor]):
        """Auxiliary cell heads on every encoder layer's image output (after the final LN, as an
        exited stream is seen by the decoder): (mean loss over layers, last-layer accuracies;
        the class accuracy over item tokens only, as empty cells dominate)."""
        aux_losses, aux_acc = [], {}
        enc_ln = self.model.encoder.layer_norm
        items = b["cls"] > 0
        for layer, states in enumerate(image_states[1:]):
            h = enc_ln(states)
            for name, head in (("colour", self.aux.colour), ("cls", self.aux.cls),
                               ("kind", self.aux.kind)):
                logits = head(h)
                aux_losses.append(F.cross_entropy(logits.flatten(0, 1), b[name].flatten()))
                if layer == len(image_states) - 2:
                    right = logits.argmax(-1) == b[name]
                    aux_acc[name] = (right[items] if name == "cls" else right).float().mean()
            if hasattr(self.aux, "row"):
                # Values carry no position in OFA (entangle off; MuE's image stream has no 2-D
                # bias either), so a token knows where it is only if the stream writes it in.
                tokens = torch.arange(h.shape[1])
                for name, target in (("row", tokens // 8), ("col", tokens % 8)):
                    logits = getattr(self.aux, name)(h)
                    target = target.expand(h.shape[0], -1)
                    aux_losses.append(F.cross_entropy(logits.flatten(0, 1), target.flatten()))
                    if layer == len(image_states) - 2:
                        aux_acc[name] = (logits.argmax(-1) == target).float().mean()
        loss = torch.stack(aux_losses).sum() / len(image_states[1:])
        stem_loss, stem_acc = self.stem_loss(self.stem_features, b)
        aux_acc["stem_cls"] = stem_acc
        return loss + stem_loss, aux_acc

    def stem_loss(self, features: torch.Tensor, b: Dict[str, torch.Tensor]):
        """The cell heads on the ResNet's output [B, C, h, w]: (loss, item-token class acc)."""
        stem = features.flatten(2).transpose(1, 2)  # [B, h*w, C], row-major as image tokens
        loss = 0.0
        for name, head in (("colour", self.aux.stem_colour), ("cls", self.aux.stem_cls),
                           ("kind", self.aux.stem_kind)):
            logits = head(stem)
            loss = loss + F.cross_entropy(logits.flatten(0, 1), b[name].flatten())
            if name == "cls":
                items = b["cls"] > 0
                acc = (logits.argmax(-1) == b[name])[items].float().mean()
        return loss, acc


def lr_at(progress: float, peak: float, warmup: float = 0.04) -> float:
    if progress < warmup:
        return peak * progress / warmup
    t = min(1.0, (progress - warmup) / (1 - warmup))
    return peak * 0.5 * (1 + math.cos(math.pi * t))


def param_groups(trainer: Trainer, weight_decay: float):
    decay, no_decay = [], []
    for name, p in trainer.named_parameters():
        (decay if p.dim() >= 2 and "embed_positions" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def all_reduce_mean(params: List[nn.Parameter], procs: int) -> None:
    """Averages the gradients of `params` over the processes (one flat all-reduce)."""
    for p in params:  # parameters a stage does not use get none
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= procs
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n


def run(rank: int, args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed + rank)
    if args.procs > 1:
        dist.init_process_group("gloo", init_method=f"file://{args.rendezvous}",
                                rank=rank, world_size=args.procs)
    bpe = Bpe.load(args.out)
    vocab = len(bpe.encoder) + 4
    config = model_config(vocab, args.d_model, args.resnet_width, args.resnet_layers)
    torch.manual_seed(args.seed)  # identical initial weights in every process
    trainer = Trainer(config, args.position_heads, args.grounding_heads,
                      args.grounding_attention, args.random_exit_depth)
    resumed = None
    if args.init_from:
        resumed = torch.load(args.init_from, map_location="cpu")
        if resumed["config"] != config:
            raise SystemExit(f"--init-from {args.init_from}: its config differs from this run's "
                             f"(d_model, ResNet, vocabulary): {resumed['config']}")
        trainer.model.load_state_dict(resumed["model"])
        missing, unexpected = trainer.aux.load_state_dict(resumed["aux"], strict=False)
        if unexpected or any(not k.startswith(("row.", "col.", "ref_a.", "ref_b."))
                             for k in missing):
            raise SystemExit(f"--init-from {args.init_from}: its auxiliary heads differ from this "
                             f"run's: missing {missing}, unexpected {unexpected}")
    trainer.train()
    torch.manual_seed(args.seed + 1 + rank)
    log = open(args.log, "a") if rank == 0 else None

    def say(msg: str) -> None:
        if log is not None:
            log.write(msg + "\n")
            log.flush()
            print(msg, flush=True)

    n_params = sum(p.numel() for p in trainer.model.parameters())
    say(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} start: {args.procs} procs x {args.threads} "
        f"threads, d_model {args.d_model}, ResNet width {args.resnet_width} blocks "
        f"{args.resnet_layers}, vocab {vocab}, {n_params} model params; stage 1 (ResNet "
        f"and its cell heads only) {args.image_minutes} min at batch {args.image_batch} scenes per "
        f"proc; stage 2 (all tasks) {args.minutes} min at batch {args.batch} scenes x "
        f"{args.hyps} hyps per proc" + ("; blank images (text-only baseline)"
                                          if args.blank_images else ""))
    extras = [flag for flag, on in (("--position-heads", args.position_heads),
                                    ("--grounding-heads", args.grounding_heads),
                                    ("--grounding-attention", args.grounding_attention)) if on]
    if args.random_exit_depth > 0:
        extras.append(f"--random-exit-depth {args.random_exit_depth}")
    if extras:
        say("# training-only: " + " ".join(extras) + f" (seed {args.seed}, peak LR {args.lr})")
    state = {"step": 0, "scenes": 0, "ema": {}}
    if resumed is not None:
        state["step"], state["scenes"] = resumed["step"], resumed["scenes"]
        say(f"# continuing from {args.init_from}: {resumed['step']} steps, {resumed['scenes']} "
            f"scenes so far (fresh AdamW state)")

    def stage(name: str, minutes: float, batch: int, lr_peak: float, source: SceneSource,
              losses) -> None:
        """One stage: AdamW over the parameters the stage's loss reaches, LR warm-up then cosine
        over `minutes` of wall time (rank 0's clock decides for every process)."""
        batcher = Batcher(source, bpe, config, args.blank_images)
        rng = np.random.default_rng([args.seed, rank, 7, len(name)])
        probe = batcher.make(list(range(2)), rng)
        trainer.zero_grad(set_to_none=True)
        losses(probe, batcher)[0].backward()
        params = [p for p in trainer.parameters() if p.grad is not None]
        ids = {id(p) for p in params}
        groups = [{"params": [p for p in g["params"] if id(p) in ids],
                   "weight_decay": g["weight_decay"]}
                  for g in param_groups(trainer, args.weight_decay)]
        trainer.zero_grad(set_to_none=True)
        opt = torch.optim.AdamW(groups, lr=lr_peak, betas=(0.9, 0.98), eps=1e-6)
        start = time.time()
        last_save = start
        ema = state["ema"] = {}
        step = 0
        while True:
            # Rank 0's clock decides both the schedule and when to save: a save all-reduces the
            # BatchNorm buffers, so every process must enter it at the same step.
            now = time.time()
            flag = torch.tensor([(now - start) / (minutes * 60.0),
                                 float(now - last_save > args.save_minutes * 60)],
                                dtype=torch.float64)
            if args.procs > 1:
                if rank != 0:
                    flag.zero_()
                dist.all_reduce(flag)
            progress, save_now = float(flag[0]), bool(flag[1])
            if progress >= 1.0:
                break
            if save_now:
                last_save = now
                save(trainer, args, config, state, rank)
            lr = lr_at(progress, lr_peak)
            for g in opt.param_groups:
                g["lr"] = lr
            t0 = time.time()
            b = batcher.make(list(range(step * batch, (step + 1) * batch)), rng)
            t_data = time.time() - t0
            loss, stats = losses(b, batcher)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.procs > 1:
                all_reduce_mean(params, args.procs)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
            opt.step()
            step += 1
            state["step"] += 1
            state["scenes"] += batch * args.procs
            for k, v in stats.items():
                ema[k] = v if k not in ema else 0.95 * ema[k] + 0.05 * v
            if step % args.log_every == 0 or step == 1:
                elapsed = time.time() - start
                say(f"{name} step {step} t {elapsed / 60:.1f}m scenes {step * batch * args.procs} "
                    f"({step * batch * args.procs / elapsed:.1f}/s, data {t_data:.2f}s/step) "
                    f"lr {lr:.2e} gnorm {grad_norm:.2f} "
                    + " ".join(f"{k} {v:.3f}" for k, v in ema.items()))
        say(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {name} done: {step} steps, "
            f"{step * batch * args.procs} scenes, {(time.time() - start) / 60:.1f} min")

    def image_losses(b, batcher):
        loss, acc = trainer.stem_loss(trainer.model.encoder.embed_images(b["images"]), b)
        return loss, {"stem": float(loss), "stem_cls_acc": float(acc)}

    def task_losses(b, batcher):
        out = trainer(b, batcher.answer_ids)
        loss = out["ve"] + args.caption_weight * out["cap"] + args.aux_weight * out["aux"]
        if "ground" in out:
            loss = loss + args.grounding_weight * out["ground"]
        if "attend" in out:
            loss = loss + args.grounding_weight * out["attend"]
        stats = {"loss": float(loss), "ve": float(out["ve"]) / 6, "cap": float(out["cap_last"]),
                 "aux": float(out["aux"]), "ve_acc": float(out["ve_acc_layers"][-1]),
                 "ve_acc1": float(out["ve_acc_layers"][0])}
        stats.update({f"{k}_acc": float(v) for k, v in out["aux_acc"].items()})
        if "ground" in out:
            stats["ground"] = float(out["ground"])
            if out["ground_acc"] is not None:
                stats["ground_acc"] = float(out["ground_acc"])
        if "attend" in out:
            stats["attend"] = float(out["attend"])
            if out["attend_mass"] is not None:  # None: no named item in the batch
                stats["attend_mass"] = out["attend_mass"]
        return loss, stats

    # Stage 1 (probe lesson 2): the ResNet learns to see every cell's colour, class and kind
    # before the tasks need them; scenes from a seed stage 2 never uses.
    if args.image_minutes > 0:
        stage("image", args.image_minutes, args.image_batch, args.image_lr,
              SceneSource("train", seed=args.seed * 100 + 50 + rank, hypotheses_per_scene=1),
              image_losses)
    stage("tasks", args.minutes, args.batch, args.lr,
          SceneSource("train", seed=args.seed * 100 + rank, hypotheses_per_scene=args.hyps),
          task_losses)
    save(trainer, args, config, state, rank)
    say(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} done: {state['step']} steps, "
        f"{state['scenes']} scenes")
    if args.procs > 1:
        dist.destroy_process_group()


def save(trainer: Trainer, args, config, state: dict, rank: int) -> None:
    """checkpoint.pt with BatchNorm running statistics averaged over the processes."""
    if args.procs > 1:
        for name, buf in trainer.named_buffers():
            if buf.dtype.is_floating_point:
                dist.all_reduce(buf)
                buf /= args.procs
    if rank != 0:
        return
    tmp = os.path.join(args.out, "checkpoint.pt.tmp")
    torch.save({"model": trainer.model.state_dict(), "aux": trainer.aux.state_dict(),
                "config": config, "step": state["step"], "scenes": state["scenes"],
                "ema": state["ema"],
                "args": vars(args)}, tmp)
    os.replace(tmp, os.path.join(args.out, "checkpoint.pt"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="working directory (tokenizer, checkpoint)")
    ap.add_argument("--minutes", type=float, required=True,
                    help="wall-time budget of stage 2 (all tasks)")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=16, help="scenes per process and step")
    ap.add_argument("--hyps", type=int, default=6, help="VE hypotheses per scene")
    ap.add_argument("--d-model", type=int, default=192)
    ap.add_argument("--resnet-width", type=int, default=32)
    ap.add_argument("--resnet-layers", type=int, nargs=3, default=[2, 2, 2])
    ap.add_argument("--image-minutes", type=float, default=7.0,
                    help="stage 1: the ResNet and its cell heads only")
    ap.add_argument("--image-batch", type=int, default=32, help="stage 1 scenes per process")
    ap.add_argument("--image-lr", type=float, default=1e-3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--caption-weight", type=float, default=1.0)
    ap.add_argument("--aux-weight", type=float, default=4.0,
                    help="weight of the cell heads in stage 2 (1.0 let class accuracy fall)")
    ap.add_argument("--log", help="log file (default OUT/train.log)")
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--save-minutes", type=float, default=10.0)
    ap.add_argument("--bpe-scenes", type=int, default=20000)
    ap.add_argument("--init-from", metavar="CHECKPOINT",
                    help="continue from this checkpoint.pt (its weights, step and scene counts; "
                         "its tokenizer files are copied into --out); use another --seed so the "
                         "scenes differ from the first run's")
    ap.add_argument("--blank-images", action="store_true",
                    help="text-only baseline: every image uniform grey; no stage 1, no cell heads")
    ap.add_argument("--position-heads", action="store_true",
                    help="training-only heads: every image token predicts its own row and column "
                         "from each image-stream layer")
    ap.add_argument("--grounding-heads", action="store_true",
                    help="training-only heads: every decoder layer's answer state predicts the "
                         "cells of the items the hypothesis names")
    ap.add_argument("--grounding-attention", action="store_true",
                    help="training-only loss: at the answer position of decoder layers 2-6, "
                         "cross-attention heads 0 and 1 rest on the named items' cells")
    ap.add_argument("--grounding-weight", type=float, default=1.0,
                    help="weight of the grounding losses (each a mean over decoder layers)")
    ap.add_argument("--random-exit-depth", type=float, default=0.0, metavar="P",
                    help="training only: for this fraction of the rows, each encoder stream's "
                         "output is taken after a random earlier layer (1..N-1), so that the "
                         "decoder learns to read early encoder exits")
    args = ap.parse_args()
    if not 0.0 <= args.random_exit_depth <= 1.0:
        ap.error(f"--random-exit-depth must be in [0, 1], got {args.random_exit_depth}")
    if args.blank_images:
        args.image_minutes, args.aux_weight = 0.0, 0.0
    os.makedirs(args.out, exist_ok=True)
    args.out = os.path.abspath(args.out)
    if args.init_from:
        if not os.path.isfile(args.init_from):
            raise SystemExit(f"--init-from {args.init_from}: no such checkpoint file")
        args.init_from = os.path.abspath(args.init_from)
        for name in ("encoder.json", "vocab.bpe", "dict.txt"):
            src = os.path.join(os.path.dirname(args.init_from), name)
            dst = os.path.join(args.out, name)
            if not os.path.exists(dst):
                if not os.path.exists(src):
                    raise SystemExit(f"--init-from: {src} missing (the checkpoint's tokenizer)")
                shutil.copyfile(src, dst)
    args.log = os.path.abspath(args.log or os.path.join(args.out, "train.log"))
    if not os.path.exists(os.path.join(args.out, "encoder.json")):
        subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "learn_bpe.py"),
                        "--out", args.out, "--scenes", str(args.bpe_scenes),
                        "--seed", str(args.seed)], check=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if args.procs == 1:
        run(0, args)
        return
    args.rendezvous = os.path.join(args.out, f"rendezvous.{os.getpid()}")
    if os.path.exists(args.rendezvous):
        os.remove(args.rendezvous)
    torch.multiprocessing.spawn(run, args=(args,), nprocs=args.procs, join=True)


if __name__ == "__main__":
    main()
