#!/usr/bin/env python3
"""Exports the trained default model into a model directory, and measures it with the reference.

  export_default_model.py --work build-default-model --out models/mue-scenes-small
      [--ve-dump DIR --caption-dump DIR] [--limit N]

Writes OUT/config.json (models/FORMAT.md plus the tokenizer and task fields), OUT/model.safetensors
(float16; the training-only auxiliary heads are dropped; position tables cut to
--max-positions), OUT/encoder.json, vocab.bpe, dict.txt.
With dumps (tools/scenes/write_dumps.py) it reloads the written directory (so the float16 weights
are what is measured) and writes OUT/reference_eval.json: PyTorch-reference VE accuracy at every
fixed decoder depth and at every image / text encoder depth, greedy-caption BLEU-4 / CIDEr-D at
every fixed decoder depth, and the trivial baselines (majority class, hypothesis-only lookup
learned from training scenes, the most frequent training caption).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import caption_metrics  # noqa: E402
import ofa_reference as R  # noqa: E402
import safetensors_np  # noqa: E402
import train_default_model as T  # noqa: E402
from learn_bpe import Bpe  # noqa: E402
from scenes import SceneSource, pre_caption, prompts  # noqa: E402

TOKENIZER_FILES = ("encoder.json", "vocab.bpe", "dict.txt")
LABELS = ("contradiction", "entailment", "neutral")  # answer index order of the trainer


def export(work: str, out: str, max_positions: int) -> dict:
    ckpt = torch.load(os.path.join(work, "checkpoint.pt"), map_location="cpu")
    config = dict(ckpt["config"])
    state = dict(ckpt["model"])
    # Position tables beyond the longest prompt and caption were never trained: keep the first
    # max_positions (+2, fairseq's offset) rows and say so in the config, so the file stays small.
    for side, key in (("encoder", "max_source_positions"), ("decoder", "max_target_positions")):
        if max_positions < config[key]:
            config[key] = max_positions
            name = f"{side}.embed_positions.weight"
            state[name] = state[name][:max_positions + 2].clone()
    model = R.OFAModel(config)
    model.load_state_dict(state)
    model.eval()
    config["tokenizer"] = {"encoder_json": "encoder.json", "vocab_bpe": "vocab.bpe",
                           "dict": "dict.txt", "ofa_extra_tokens": False}
    config["tasks"] = {
        "caption": {"prompt": prompts.CAPTION_PROMPT, "beam_size": 5, "max_len": 16,
                    "min_len": 1, "no_repeat_ngram_size": 3, "length_penalty": 1.0},
        "entailment": {"prompt": prompts.VE_PROMPT,
                       "prompt_without_premise": prompts.VE_PROMPT_WITHOUT_PREMISE,
                       "answers": dict(prompts.ANSWERS)}}
    os.makedirs(out, exist_ok=True)
    R.write_config(config, out)
    tensors = {n: t.detach().float().numpy().astype(np.float16)
               for n, t in R.stored_tensors(model)}
    for n, a in tensors.items():
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{n}: not finite in float16")
    safetensors_np.save_file(tensors, os.path.join(out, R.checkpoint.WEIGHTS_FILE))
    for name in TOKENIZER_FILES:
        shutil.copyfile(os.path.join(work, name), os.path.join(out, name))
    size = os.path.getsize(os.path.join(out, R.checkpoint.WEIGHTS_FILE))
    print(f"{out}: {sum(a.size for a in tensors.values())} parameters, "
          f"model.safetensors {size / 2**20:.2f} MiB", file=sys.stderr)
    return {"step": ckpt["step"], "scenes": ckpt["scenes"], "train_ema": ckpt["ema"],
            "parameters": int(sum(a.size for a in tensors.values())), "weights_bytes": size}


class Evaluator:
    def __init__(self, model_dir: str):
        self.model = R.load_model(model_dir)
        self.model.eval()
        self.config = self.model.config
        self.bpe = Bpe.load(model_dir)
        self.trainer = T.Trainer.__new__(T.Trainer)  # its loops, over the loaded model
        torch.nn.Module.__init__(self.trainer)
        self.trainer.model = self.model
        self.batcher = T.Batcher(None, self.bpe, self.config)

    def images(self, dump: str, names) -> torch.Tensor:
        size = tuple(reversed(R.image_hw(self.config)))
        arrays = []
        for n in names:
            img = Image.open(os.path.join(dump, n)).convert("RGB")
            if img.size != size:
                img = img.resize(size, Image.BICUBIC)
            arrays.append(np.asarray(img))
        return self.batcher.image_tensor(arrays)

    def ve(self, dump: str, limit: int, batch: int = 96) -> dict:
        lines = [json.loads(x) for x in open(os.path.join(dump, "manifest.jsonl")) if x.strip()]
        lines = lines[:limit]
        n_layers = self.config["encoder_layers"]
        answers = self.model.decoder.embed_tokens.weight[self.batcher.answer_ids]
        # results[(img_depth, txt_depth)] = correct count per decoder depth
        settings = [(n_layers, n_layers)] + [(k, n_layers) for k in range(1, n_layers)] + \
            [(n_layers, k) for k in range(1, n_layers)]
        correct = {s: np.zeros(self.config["decoder_layers"]) for s in settings}
        by_template = collections.defaultdict(lambda: [0, 0])
        by_objects = collections.defaultdict(lambda: [0, 0])
        for start in range(0, len(lines), batch):
            chunk = lines[start:start + batch]
            names = sorted({x["image"] for x in chunk})
            scene_of = {n: i for i, n in enumerate(names)}
            images = self.images(dump, names)
            src = self.batcher.pad_rows([
                [0] + self.batcher.ids(prompts.ve_prompt(pre_caption(x["premise"]),
                                                         pre_caption(x["hypothesis"]))) + [2]
                for x in chunk])
            lengths = src.ne(self.config["pad_id"]).sum(1)
            prev = src[:, :-1].clone()
            for r, n in enumerate(lengths.tolist()):
                prev[r, n - 1:] = self.config["pad_id"]
            rows = torch.arange(len(chunk))
            scene = torch.tensor([scene_of[x["image"]] for x in chunk])
            label = torch.tensor([LABELS.index(x["label"]) for x in chunk])
            enc = self.model.encoder
            image_states, image_pos = self.trainer.encode_image(images)
            text_x, text_pad, text_pos = enc.embed_text(src)
            text_abs = enc.abs_pos_bias(text_pos)
            text_states = T.run_encoder_layers(
                enc, text_x, lambda idx: text_abs + enc.token_rel_bias(idx, src.shape[1]),
                text_pad)
            for (di, dt) in settings:
                img = image_states[di][scene]
                hidden = enc.layer_norm(torch.cat([img, text_states[dt]], 1))
                eo = R.EncoderOutput(hidden=hidden, padding_mask=torch.cat(
                    [torch.zeros(img.shape[:2], dtype=torch.bool), text_pad], 1),
                    position_embedding=torch.cat([image_pos, text_pos]),
                    num_image_tokens=img.shape[1], layers_used={}, streams={})
                for depth, h in enumerate(self.trainer.decoder_layers(prev, eo)):
                    pred = (h[rows, lengths - 2] @ answers.t()).argmax(-1)
                    ok = (pred == label).numpy()
                    correct[(di, dt)][depth] += ok.sum()
                    if (di, dt) == settings[0] and depth == len(correct[(di, dt)]) - 1:
                        for x, o in zip(chunk, ok):
                            by_template[x["template"]][0] += int(o)
                            by_template[x["template"]][1] += 1
                            by_objects[x["num_objects"]][0] += int(o)
                            by_objects[x["num_objects"]][1] += 1
        n = len(lines)
        full = settings[0]
        return {
            "pairs": n,
            "accuracy_by_decoder_depth": [float(c / n) for c in correct[full]],
            "accuracy_by_image_depth": {str(di): float(correct[(di, dt)][-1] / n)
                                        for (di, dt) in settings if dt == n_layers},
            "accuracy_by_text_depth": {str(dt): float(correct[(di, dt)][-1] / n)
                                       for (di, dt) in settings if di == n_layers},
            "accuracy_by_template": {k: v[0] / v[1] for k, v in sorted(by_template.items())},
            "accuracy_by_num_objects": {str(k): v[0] / v[1]
                                        for k, v in sorted(by_objects.items())},
        }

    def captions(self, dump: str, limit: int, depths, batch: int = 100, max_len: int = 16):
        lines = [json.loads(x) for x in open(os.path.join(dump, "manifest.jsonl")) if x.strip()]
        lines = lines[:limit]
        out = {}
        hyps = {d: [] for d in depths}
        for start in range(0, len(lines), batch):
            chunk = lines[start:start + batch]
            images = self.images(dump, [x["image"] for x in chunk])
            image_states, image_pos = self.trainer.encode_image(images)
            src = torch.tensor([[0] + self.batcher.caption_src + [2]] * len(chunk))
            eo = self.trainer.encode_rows(image_states, image_pos, torch.arange(len(chunk)), src)
            for d in depths:
                hyps[d].extend(self.greedy(eo, d, len(chunk), max_len))
        refs = [x["references"] for x in lines]
        for d in depths:
            s = caption_metrics.score(hyps[d], refs)
            out[str(d)] = {"bleu4": s["bleu"][3], "cider_d": s["cider_d"]}
        return out, hyps[depths[-1]][:10]

    def greedy(self, eo, depth: int, batch: int, max_len: int):
        """Greedy decoding exiting every step after `depth` layers (full-sequence recompute),
        with EOS allowed from the second token and no repeated trigram."""
        tokens = torch.zeros(batch, 1, dtype=torch.long)
        done = torch.zeros(batch, dtype=torch.bool)
        for t in range(max_len + 1):
            h = self.trainer.decoder_layers(tokens, eo)[depth - 1][:, -1]
            logits = self.model.decoder.logits(h)
            logits[:, self.config["pad_id"]] = -1e9
            logits[:, self.config["bos_id"]] = -1e9
            if t == 0:
                logits[:, self.config["eos_id"]] = -1e9
            if t == max_len:
                logits[:] = -1e9
                logits[:, self.config["eos_id"]] = 0
            seq = tokens.tolist()
            for r in range(batch):
                if len(seq[r]) >= 3:
                    a, b = seq[r][-2:]
                    for i in range(len(seq[r]) - 2):
                        if seq[r][i] == a and seq[r][i + 1] == b:
                            logits[r, seq[r][i + 2]] = -1e9
            nxt = logits.argmax(-1)
            nxt[done] = self.config["pad_id"]
            done |= nxt.eq(self.config["eos_id"])
            tokens = torch.cat([tokens, nxt[:, None]], 1)
            if bool(done.all()):
                break
        texts = []
        for row in tokens.tolist():
            ids = [i - 4 for i in row[1:] if i >= 4]
            texts.append(self.bpe.decode(ids).strip())
        return texts


def hypothesis_only_classifier(table, texts) -> list:
    """A trained text-only model: softmax regression on the hypothesis's word unigrams and
    bigrams, fitted (full batch, 300 Adam steps) on the training hypotheses; labels of texts."""
    def grams(t):
        w = t.split()
        return w + [a + " " + b for a, b in zip(w, w[1:])]
    vocab = {g: i for i, g in enumerate(sorted({g for t in table for g in grams(t)}))}
    label_names = sorted({label for c in table.values() for label in c})

    def features(items):
        x = torch.zeros(len(items), len(vocab))
        for r, t in enumerate(items):
            for g in grams(t):
                if g in vocab:
                    x[r, vocab[g]] = 1.0
        return x
    rows, ys, weights = [], [], []
    for text, counts in table.items():
        for label, n in counts.items():
            rows.append(text)
            ys.append(label_names.index(label))
            weights.append(float(n))
    x, y, w = features(rows), torch.tensor(ys), torch.tensor(weights)
    lin = torch.nn.Linear(len(vocab), len(label_names))
    opt = torch.optim.Adam(lin.parameters(), lr=0.05)
    with torch.enable_grad():
        for _ in range(300):
            loss = (torch.nn.functional.cross_entropy(lin(x), y, reduction="none") * w).sum() / w.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = lin(features(texts)).argmax(-1).tolist()
    return [label_names[i] for i in pred]


def baselines(ve_dump: str, cap_dump: str, scenes: int) -> dict:
    """Majority class, hypothesis-only lookup and the most frequent caption, from training
    scenes (train split, the training seed)."""
    source = SceneSource("train", seed=0)
    table = collections.defaultdict(collections.Counter)
    labels = collections.Counter()
    caps = collections.Counter()
    for i in range(scenes):
        s = source.sample(i)
        for hyp, label, _ in s.hypotheses:
            table[pre_caption(hyp)][label] += 1
            labels[label] += 1
        caps.update(pre_caption(c) for c in s.captions)
    majority = labels.most_common(1)[0][0]
    lines = [json.loads(x) for x in open(os.path.join(ve_dump, "manifest.jsonl")) if x.strip()]
    lookup = [table[pre_caption(x["hypothesis"])].most_common(1)[0][0]
              if pre_caption(x["hypothesis"]) in table else majority for x in lines]
    bow = hypothesis_only_classifier(table, [pre_caption(x["hypothesis"]) for x in lines])
    cap_lines = [json.loads(x) for x in open(os.path.join(cap_dump, "manifest.jsonl"))
                 if x.strip()]
    constant = caps.most_common(1)[0][0]
    s = caption_metrics.score([constant] * len(cap_lines), [x["references"] for x in cap_lines])
    test_labels = collections.Counter(x["label"] for x in lines)
    return {"train_scenes": scenes, "ve_majority_class": majority,
            "ve_majority_accuracy": test_labels[majority] / len(lines),
            "ve_test_label_counts": dict(test_labels),
            "ve_hypothesis_only_lookup_accuracy":
                float(np.mean([p == x["label"] for p, x in zip(lookup, lines)])),
            "ve_hypothesis_only_bow_accuracy":
                float(np.mean([p == x["label"] for p, x in zip(bow, lines)])),
            "caption_constant": constant, "caption_constant_bleu4": s["bleu"][3],
            "caption_constant_cider_d": s["cider_d"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="training directory (checkpoint, tokenizer)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--ve-dump")
    ap.add_argument("--caption-dump")
    ap.add_argument("--limit", type=int, default=1 << 30)
    ap.add_argument("--max-positions", type=int, default=256,
                    help="keep this many source and target positions (default 256)")
    ap.add_argument("--baseline-scenes", type=int, default=20000)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    info = export(args.work, args.out, args.max_positions)
    if args.ve_dump and args.caption_dump:
        t = time.time()
        ev = Evaluator(args.out)
        info["ve"] = ev.ve(args.ve_dump, args.limit)
        print(json.dumps(info["ve"]), file=sys.stderr)
        info["caption_greedy"], info["caption_examples"] = ev.captions(
            args.caption_dump, args.limit, list(range(1, ev.config["decoder_layers"] + 1)))
        print(json.dumps(info["caption_greedy"]), file=sys.stderr)
        info["baselines"] = baselines(args.ve_dump, args.caption_dump, args.baseline_scenes)
        info["eval_seconds"] = time.time() - t
        with open(os.path.join(args.out, "reference_eval.json"), "w") as f:
            json.dump(info, f, indent=1)
            f.write("\n")
        print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
