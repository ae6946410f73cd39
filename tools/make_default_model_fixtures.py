#!/usr/bin/env python3
"""Reference outputs of the shipped default model, for tests/test_default_model.cpp.

  make_default_model_fixtures.py --model models/mue-scenes-small --ve-dump DIR --caption-dump DIR
      --out tests/fixtures/default_model [--pairs 12] [--images 4]

Copies --pairs VE pairs' images (one a scene) and the first --images caption images of the held-out
dumps (tools/scenes/write_dumps.py) into OUT and writes OUT/expected.json: for each VE pair the
PyTorch reference's answer probabilities and exit layers, for each caption image the best beam's
tokens, text and score and the decoder layers per step, each under full depth and under fixed
exit depths (deterministic: no threshold margin to worry about). The reference reads the same
float16 weights the engine does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import export_default_model as X  # noqa: E402
from ofa_reference import mue  # noqa: E402
from scenes import pre_caption, prompts  # noqa: E402

POLICIES = {
    "full_depth": mue.ExitPolicy(exit_threshold_image=1.0, exit_threshold_text=1.0,
                                 exit_threshold_decoder=1.0),
    "fixed_2_3_2": mue.ExitPolicy(exit_threshold_image=1.0, exit_threshold_text=1.0,
                                  exit_threshold_decoder=1.0, fixed_depth_image=2,
                                  fixed_depth_text=3, fixed_depth_decoder=2),
}


def read(dump: str, n: int):
    with open(os.path.join(dump, "manifest.jsonl")) as f:
        return [json.loads(x) for x in f if x.strip()][:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--ve-dump", required=True)
    ap.add_argument("--caption-dump", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--images", type=int, default=4)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    ev = X.Evaluator(args.model)
    cfg = ev.config
    os.makedirs(args.out, exist_ok=True)
    answers = [ev.batcher.ids(cfg["tasks"]["entailment"]["answers"][k])[0]
               for k in ("entailment", "neutral", "contradiction")]
    expected = {"model": os.path.basename(os.path.normpath(args.model)), "ve": [], "caption": []}

    # One pair per scene (a dump has 4 a scene), rotating through them, so templates vary.
    ve_lines = read(args.ve_dump, 4 * args.pairs)
    for x in [ve_lines[4 * i + i % 4] for i in range(len(ve_lines) // 4)]:
        name = os.path.basename(x["image"])
        shutil.copyfile(os.path.join(args.ve_dump, x["image"]), os.path.join(args.out, name))
        image = ev.images(args.ve_dump, [x["image"]])
        src = torch.tensor([[cfg["bos_id"]] + ev.batcher.ids(prompts.ve_prompt(
            pre_caption(x["premise"]), pre_caption(x["hypothesis"]))) + [cfg["eos_id"]]])
        entry = {"image": name, "premise": x["premise"], "hypothesis": x["hypothesis"],
                 "label": x["label"], "results": {}}
        for pname, policy in POLICIES.items():
            eo = mue.encode(ev.model, image, src, policy)
            logits, used = mue.score_ve(ev.model, eo, src[:, :-1], policy)
            p = torch.softmax(logits[0, answers].double(), -1).tolist()
            layers = mue.exit_layers(eo)
            entry["results"][pname] = {
                "p_entailment": p[0], "p_neutral": p[1], "p_contradiction": p[2],
                "image_layers": int(layers["image"][0]), "text_layers": int(layers["text"][0]),
                "decoder_layers": int(used[0])}
        expected["ve"].append(entry)

    task = cfg["tasks"]["caption"]
    options = mue.GenerationOptions(beam_size=task["beam_size"], max_len=task["max_len"],
                                    min_len=task["min_len"],
                                    no_repeat_ngram_size=task["no_repeat_ngram_size"],
                                    length_penalty=task["length_penalty"])
    for x in read(args.caption_dump, args.images):
        name = os.path.basename(x["image"])
        shutil.copyfile(os.path.join(args.caption_dump, x["image"]), os.path.join(args.out, name))
        image = ev.images(args.caption_dump, [x["image"]])
        src = torch.tensor([[cfg["bos_id"]] + ev.batcher.caption_src + [cfg["eos_id"]]])
        entry = {"image": name, "references": x["references"], "results": {}}
        for pname, policy in POLICIES.items():
            eo = mue.encode(ev.model, image, src, policy)
            gen = mue.beam_search(ev.model, eo, options, policy)[0]
            best = gen.hypotheses[0]
            text = ev.bpe.decode([t - 4 for t in best.tokens if t >= 4]).strip()
            layers = mue.exit_layers(eo)
            entry["results"][pname] = {
                "tokens": best.tokens, "caption": text, "score": best.score,
                "image_layers": int(layers["image"][0]), "text_layers": int(layers["text"][0]),
                "decoder_layers": gen.decoder_layers}
        expected["caption"].append(entry)

    expected["policies"] = {k: v.to_json() for k, v in POLICIES.items()}
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print(f"{args.out}: {len(expected['ve'])} VE pairs, {len(expected['caption'])} captions")


if __name__ == "__main__":
    main()
