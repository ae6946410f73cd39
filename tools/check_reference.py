#!/usr/bin/python3
"""Quick self-checks of the PyTorch reference and its tools (seconds; --fixtures --ofa ~20 s).

  /usr/bin/python3 tools/check_reference.py               # model, I/O, weights, buckets, exits
  /usr/bin/python3 tools/check_reference.py --fixtures    # + fixtures regenerate byte-identically
  /usr/bin/python3 tools/check_reference.py --ofa GITDIR  # + real OFA code agrees on the fixtures

--ofa runs OFA's own modules (models/ofa/*.py read with `git show REF:path` from an OFA clone,
default ref feature/MuE) under a minimal stand-in for the fairseq imports, into a temporary
directory; nothing of OFA is stored in this repository.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import textwrap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import make_exit_fixtures  # noqa: E402
import make_fixtures  # noqa: E402
import ofa_reference as R  # noqa: E402
import safetensors_np  # noqa: E402
import synthetic_weights  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "parity")
EXIT_FIXTURES = os.path.join(ROOT, "tests", "fixtures", "exits")
failures = []


def check(condition: bool, what: str) -> None:
    print(("ok   " if condition else "FAIL ") + what)
    if not condition:
        failures.append(what)


def random_inputs(config, batch=3, src_lengths=(9, 4, 1), tgt_lengths=(5, 2, 1), seed=0):
    case = make_fixtures.Case("check", "test", config["encoder_mode"], tuple(R.image_hw(config)),
                              seed, src_lengths, tgt_lengths)
    images, src, prev = make_fixtures.make_inputs(case, config, np.random.default_rng(seed))
    return torch.from_numpy(images), torch.from_numpy(src), torch.from_numpy(prev)


def check_synthetic_weights() -> None:
    mask = (1 << 64) - 1

    def scalar(name, shape, seed):  # the recipe, one element at a time with Python integers
        key, (center, spread) = synthetic_weights.tensor_key(name, seed), \
            synthetic_weights.center_and_spread(name, shape)
        out = []
        for i in range(int(np.prod(shape))):
            z = (key + (i + 1) * 0x9E3779B97F4A7C15) & mask
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
            z ^= z >> 31
            u = np.float32((z >> 40) * 2.0 ** -24)
            out.append(np.float32(center) + np.float32(spread) * (np.float32(2) * u - np.float32(1)))
        return np.array(out, dtype=np.float32).reshape(shape)

    cases = [("encoder.layers.0.fc1.weight", (6, 5), 3),
             ("encoder.embed_images.layer1.0.downsample.1.running_var", (7,), 0),
             ("decoder.layers.1.encoder_attn.c_attn", (4,), 2**63 + 5),
             ("encoder.token_rel_pos_table_list.1.weight", (5, 4), 9)]
    same = all(np.array_equal(synthetic_weights.synthetic_tensor(n, s, seed), scalar(n, s, seed))
               for n, s, seed in cases)
    check(same, "synthetic weights: vectorised numpy equals the recipe element by element")
    rules = {
        "encoder.embed_images.bn1.weight": (1.0, 0.2),
        "encoder.embed_images.layer2.0.downsample.1.bias": (0.0, 0.1),
        "encoder.layers.0.attn_ln.weight": (1.0, 0.2),
        "decoder.layers.0.self_attn_ln.bias": (0.0, 0.1),
        "encoder.layers.0.ffn_layernorm.weight": (1.0, 0.2),
        "encoder.embed_positions.weight": (0.0, 0.5),
        "encoder.type_embedding.weight": (0.0, 0.5),
        "decoder.image_rel_pos_table_list.0.weight": (0.0, 0.5),
        "encoder.layers.0.self_attn.q_proj.bias": (0.0, 0.1),
    }
    shapes = {n: ((2, 4) if n.endswith(("positions.weight", "type_embedding.weight", "0.weight"))
                  else (4,)) for n in rules}
    got = {n: synthetic_weights.center_and_spread(n, shapes[n]) for n in rules}
    check(got == rules, "synthetic weights: rule table (norms, embeddings, tables, biases)")
    check(synthetic_weights.center_and_spread("encoder.image_proj.weight", (8, 1024))
          == (0.0, math.sqrt(3 / 1024)), "synthetic weights: linear spread sqrt(3 / fan_in)")


def check_safetensors(tmp: str) -> None:
    path = os.path.join(tmp, "t.safetensors")
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
               "b": np.array([1.5, -2.25], dtype=np.float16),
               "c": np.array([[7, -8]], dtype=np.int64), "empty": np.zeros((0, 4), np.float32)}
    safetensors_np.save_file(tensors, path, metadata={"k": "v"})
    back = safetensors_np.load_file(path)
    check(list(back) == list(tensors) and all(
        back[k].dtype == v.dtype and np.array_equal(back[k], v) for k, v in tensors.items()),
        "safetensors: F32/F16/I64 round trip keeps order, dtype and values")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    check(n % 8 == 0, "safetensors: header padded to 8 bytes")
    bad = os.path.join(tmp, "bad.safetensors")
    for label, blob in [("truncated data", open(path, "rb").read()[:-3]),
                        ("huge header length", struct.pack("<Q", 1 << 40) + b"{}"),
                        ("non-JSON header", struct.pack("<Q", 4) + b"{{{{")]:
        with open(bad, "wb") as f:
            f.write(blob)
        try:
            safetensors_np.load_file(bad)
            check(False, f"safetensors: {label} is rejected")
        except safetensors_np.SafetensorsError:
            check(True, f"safetensors: {label} is rejected")


def check_buckets() -> None:
    # The float32 log buckets agree with a float64 computation for the sizes in use, so an engine
    # may compute them either way.
    rel = torch.arange(-1023, 1024)
    for size in (16, 256):
        mid = size // 2
        a = rel.abs().double()
        exact = torch.where(a <= mid, rel.double(), torch.sign(rel.double()) * (
            torch.ceil(torch.log(a.clamp(min=1) / mid) / math.log(1023 / mid) * (mid - 1)) + mid))
        check(torch.equal(R.token_bucket(rel, size), exact.long() + size - 1),
              f"token buckets (size {size}) match a float64 computation for |i-j| < 1024")
    # The image bucket matrix equals OFA's construction (a (B^2+1)^2 table indexed by position id).
    b, h, w = 8, 3, 5
    coords = torch.stack(torch.meshgrid(torch.arange(b), torch.arange(b), indexing="ij")).flatten(1)
    rel2 = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (b - 1)
    table = torch.zeros(b * b + 1, b * b + 1, dtype=torch.long)
    table[1:, 1:] = rel2[..., 0] * (2 * b - 1) + rel2[..., 1]
    ids = R.image_position_ids(h, w, b)
    check(torch.equal(R.image_bucket_matrix(h, w, b), table[ids][:, ids]),
          "image relative buckets equal OFA's table looked up at the position ids")
    check(ids.tolist()[:6] == [1, 2, 3, 4, 5, 9], "image position ids are r * bucket + c + 1")


def check_model(tmp: str) -> None:
    for mode in ("decomposed", "joint"):
        config = R.make_config("test", mode, [64, 96])
        model = R.synthetic_model(config, 5)
        images, src, prev = random_inputs(config)
        enc = model.encode(images, src)
        full = model.decoder.logits(model.decoder(prev, enc))
        state = model.start_decoding(enc, prev.shape[1])
        inc = torch.stack([model.decode_step(prev[:, t], state) for t in range(prev.shape[1])], 1)
        err = (full - inc).abs().max().item()
        check(err < 1e-5, f"{mode}: full-sequence and incremental logits agree (max diff {err:.1e})")
        check(enc.hidden.shape == (3, 24 + src.shape[1], 32) and enc.num_image_tokens == 24,
              f"{mode}: encoder output is [B, P + L, D] with P = (64/16) * (96/16)")
        # A padded row gives the same results as the same row alone, unpadded.
        n_src, n_tgt = int(src[1].ne(1).sum()), int(prev[1].ne(1).sum())
        alone = model(images[1:2], src[1:2, :n_src], prev[1:2, :n_tgt])
        err = (alone[0] - full[1, :n_tgt]).abs().max().item()
        check(err < 1e-5, f"{mode}: padding does not change a row's valid logits ({err:.1e})")

    config = R.make_config("test", "decomposed")
    decomposed = R.synthetic_model(config, 5)
    joint = R.synthetic_model(dict(config, encoder_mode="joint"), 5)
    images, src, prev = random_inputs(config)
    diff = (decomposed(images, src, prev) - joint(images, src, prev)).abs().max().item()
    check(diff > 1e-2, f"joint and decomposed encoders differ on the same weights ({diff:.2f})")

    # The exit hook: stopping the text stream after layer 0 keeps that layer's output.
    def stop_text(stream, idx, x, y):
        return stream == "text"

    enc = decomposed.encode(images, src, after_layer=stop_text)
    text = enc.streams["text"]
    expected = decomposed.encoder.layer_norm(text.states[1])
    check({k: v.tolist() for k, v in enc.layers_used.items()} == {"image": [2] * 3, "text": [1] * 3}
          and len(text.states) == 2
          and torch.allclose(enc.hidden[:, enc.num_image_tokens:], expected),
          "encoder after_layer hook stops one stream and keeps that layer's output")

    # The decoder hook: a step that stops after layer 0 gives the deeper layers no cache entry
    # (MuE, spec 1.3); later steps still run, with bias rows right-aligned to shorter caches.
    enc = decomposed.encode(images, src)
    state = decomposed.start_decoding(enc, prev.shape[1])
    for t in range(3):
        logits = decomposed.decode_step(prev[:, t], state,
                                        after_layer=lambda idx, x, y: t == 1 and idx == 0)
    check([u.tolist() for u in state.layers_used] == [[2] * 3, [1] * 3, [2] * 3]
          and [c.length for c in state.caches] == [3, 2]
          and bool(torch.isfinite(logits).all()),
          "decoder after_layer hook: a skipped layer gets no K/V entry for that step")

    # Model directory round trip: make_model's output reloads to the synthetic state dict.
    out = os.path.join(tmp, "model")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_model.py"), "--size", "test",
                    "--seed", "9", "--image-size", "32x48", "--out", out], check=True,
                   stdout=subprocess.DEVNULL)
    loaded = R.load_model(out)
    reference = R.synthetic_model(R.make_config("test", image_size=[32, 48]), 9)
    a, b = loaded.state_dict(), reference.state_dict()
    check(list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a),
          "make_model output reloads to the same state dict (aliases included)")
    check(loaded.decoder.output_projection.weight is loaded.encoder.embed_tokens.weight
          and loaded.decoder.embed_tokens is loaded.encoder.embed_tokens,
          "the token embedding stays one shared Parameter after loading")
    names = list(safetensors_np.read_header(os.path.join(out, "model.safetensors"))[0])
    check("decoder.output_projection.weight" not in names and
          not any(n.endswith("num_batches_tracked") for n in names) and
          names == [n for n, _ in R.parameter_specs(reference)],
          "model.safetensors stores the embedding once and no num_batches_tracked")
    half = os.path.join(tmp, "half")
    os.makedirs(half)
    R.write_config(loaded.config, half)
    safetensors_np.save_file({n: t.numpy().astype(np.float16) for n, t in R.stored_tensors(reference)},
                             os.path.join(half, "model.safetensors"))
    widened = R.load_model(half).state_dict()
    check(all(torch.equal(widened[k], b[k].half().float()) for k in b),
          "an F16 model.safetensors loads, widened to float32")
    tensors = dict(safetensors_np.load_file(os.path.join(out, "model.safetensors")))
    del tensors["encoder.layers.0.fc1.bias"]
    tensors["encoder.layer_norm.weight"] = np.zeros(5, np.float32)
    safetensors_np.save_file(tensors, os.path.join(half, "model.safetensors"))
    try:
        R.load_model(half)
        check(False, "a bad model.safetensors is rejected")
    except ValueError as e:
        check("missing encoder.layers.0.fc1.bias" in str(e) and "encoder.layer_norm.weight" in str(e),
              "a bad model.safetensors is rejected, naming every bad tensor")


def exit_inputs(case_name: str):
    """Model, inputs and case of one exit fixture case (tools/make_exit_fixtures.py)."""
    case = {c.name: c for c in make_exit_fixtures.CASES}[case_name]
    config = R.make_config(case.size, case.encoder_mode, list(case.image_size))
    inputs = make_fixtures.Case(case.name, case.size, case.encoder_mode, case.image_size,
                                case.seed, case.src_lengths, case.tgt_lengths)
    arrays = make_fixtures.make_inputs(inputs, config, np.random.default_rng(case.seed))
    return case, R.synthetic_model(config, case.seed), [torch.from_numpy(a) for a in arrays]


def check_exit_policy() -> None:
    policy = R.ExitPolicy(exit_threshold_image=0.7, exit_threshold_decoder=0.9,
                          decoder_schedule="decaying", fixed_depth_text=2,
                          skipped_layer_cache="reference")
    same = R.ExitPolicy.from_json(json.loads(json.dumps(policy.to_json()))) == policy
    check(same and sorted(policy.to_json()) == sorted([
        "exit_threshold_image", "exit_threshold_text", "exit_threshold_decoder",
        "exit_thresholds_image", "exit_thresholds_text", "exit_thresholds_decoder",
        "decoder_rule", "confidence_threshold", "confidence_thresholds", "confidence_measure",
        "decoder_schedule", "calm_beta", "calm_tau", "fixed_depth_image", "fixed_depth_text",
        "fixed_depth_decoder", "skipped_layer_cache"]),
        "exit policy: JSON round trip with mue::ExitPolicy::to_json's fields")
    bad = [dict(exit_threshold_text=0.0), dict(exit_threshold_decoder=1.5),
           dict(decoder_schedule="linear"), dict(skipped_layer_cache="copy"),
           dict(fixed_depth_decoder=-1), dict(calm_beta=2.0), dict(calm_tau=0.0),
           dict(exit_thresholds_text=[0.9, 1.5]), dict(decoder_rule="entropy"),
           dict(confidence_threshold=0.0), dict(confidence_measure="gap")]
    rejected = 0
    for fields in bad:
        try:
            R.ExitPolicy(**fields)
        except ValueError:
            rejected += 1
    check(rejected == len(bad), "exit policy: out-of-range fields are rejected")
    # Decaying (spec 1.4): max_len 16 -> steps 0..5 never exit, then 0.9 theta + 0.1 e^-(t+1)/17.
    decaying = [policy.threshold("decoder", t, 16) for t in range(17)]
    calm = R.ExitPolicy(exit_threshold_decoder=0.99, decoder_schedule="calm", calm_beta=0.95)
    check(decaying[:6] == [1.0] * 6
          and abs(decaying[6] - (0.81 + 0.1 * math.exp(-7 / 17))) < 1e-15
          and abs(calm.threshold("decoder", 3, 16) - (0.95 * 0.99 + 0.05 * math.exp(-4 / 17)))
          < 1e-15, "exit policy: decaying and CALM decoder schedules")
    cos = torch.tensor([0.5, 0.9, 0.9000001, 1.0000001], dtype=torch.float64)
    strict = R.ExitPolicy(exit_threshold_text=0.9).exits("text", 0, 4, cos).tolist()
    never = R.ExitPolicy().exits("text", 0, 4, cos).tolist()
    last = R.ExitPolicy().exits("text", 3, 4, cos).tolist()
    fixed = [policy.exits("text", layer, 4, cos[:1]).item() for layer in range(4)]
    off = [R.ExitPolicy(decoder_schedule=s).exits("decoder", 0, 4, cos, 10, 12).any().item()
           for s in ("decaying", "calm")]
    check(strict == [False, False, True, True] and never == [False] * 4 and last == [True] * 4
          and fixed == [False, True, True, True] and off == [False, False],
          "exit test: strict cos > threshold, 1.0 never exits (whatever the schedule), the last "
          "layer and fixed depth k stop")
    per = R.ExitPolicy(exit_thresholds_text=[0.95, 1.0, 0.5])
    per_layer = [per.exits("text", layer, 4, cos[1:2]).item() for layer in range(4)]
    try:
        per.exits("text", 0, 6, cos)
        wrong_length = False
    except ValueError:
        wrong_length = True
    check(per_layer == [False, False, True, True] and wrong_length,
          "exit test: per-layer thresholds (1.0 after a layer never exits there; a list must "
          "have layers - 1 values)")
    a = torch.randn(3, 5, 4)
    b = torch.randn(3, 5, 4)
    valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    got = R.flat_cosine(a, b, valid)
    want = [torch.nn.functional.cosine_similarity(a[i, :n].flatten().double(),
                                                  b[i, :n].flatten().double(), dim=0).item()
            for i, n in enumerate([5, 2, 1])]
    zero = R.flat_cosine(torch.zeros(1, 2, 3), torch.ones(1, 2, 3)).item()
    check(max(abs(g - w) for g, w in zip(got.tolist(), want)) < 1e-14 and zero == 0.0,
          "exit cosine: per sample over valid positions flattened, float64, 0 for a zero vector")


def run_exits(model, images, src, prev, case, policy):
    """Encoder exits, VE pass and beam search of one policy (both cache modes)."""
    enc = R.mue.encode(model, images, src, policy)
    ve_logits, ve_layers = R.score_ve(model, enc, prev, policy)
    gens = {m: R.beam_search(model, enc, case.options(),
                             R.ExitPolicy(**dict(policy.to_json(), skipped_layer_cache=m)))
            for m in ("propagate", "reference")}
    return enc, ve_logits, ve_layers, gens


def check_exits() -> None:
    """MuE exits in the reference: batched equals one by one; the cache modes; fixed depth."""
    for name in ("test_decomposed_static", "test_joint_calm", "tiny_decomposed_static"):
        case, model, (images, src, prev) = exit_inputs(name)
        policy = case.exit_policy()
        enc, ve_logits, ve_layers, gens = run_exits(model, images, src, prev, case, policy)
        layers = R.exit_layers(enc)
        same, worst = True, 0.0
        for b in range(src.shape[0]):
            n_src, n_tgt = int(src[b].ne(1).sum()), int(prev[b].ne(1).sum())
            one = run_exits(model, images[b:b + 1], src[b:b + 1, :n_src], prev[b:b + 1, :n_tgt],
                            case, policy)
            one_layers = R.exit_layers(one[0])
            same = same and all(int(one_layers[k][0]) == int(layers[k][b]) for k in layers)
            same = same and int(one[2][0]) == int(ve_layers[b])
            p = enc.num_image_tokens
            worst = max(worst, (one[0].hidden[0] - enc.hidden[b, :p + n_src]).abs().max().item(),
                        (one[1][0] - ve_logits[b]).abs().max().item())
            for m in gens:
                a, c = one[3][m][0], gens[m][b]
                same = same and a.hypotheses[0].tokens == c.hypotheses[0].tokens
                same = same and a.decoder_layers == c.decoder_layers
                worst = max(worst, abs(a.hypotheses[0].score - c.hypotheses[0].score))
        check(same and worst < 1e-4,
              f"{name}: batched exits, VE and beam search equal each sample alone, unpadded "
              f"(same exits and tokens, max diff {worst:.1e})")

    # Teacher-forced decoding where layer 1 is skipped at step 1 and runs again at step 2.
    case, model, (images, src, prev) = exit_inputs("tiny_decomposed_static")
    enc = model.encode(images, src)
    tokens = prev[:, :4]
    logits, states = {}, {}
    for mode in ("propagate", "reference"):
        state = model.start_decoding(enc, 4)
        steps = []
        for t in range(4):
            stop_at = 1 if t == 1 else 4
            steps.append(model.decode_step(tokens[:, t], state,
                                           lambda idx, x, y, k=stop_at: idx + 1 >= k, mode))
        logits[mode], states[mode] = torch.stack(steps, 1), state
    diff = (logits["propagate"] - logits["reference"]).abs().amax(dim=(0, 2))
    lengths = {m: [c.length for c in states[m].caches] for m in states}
    check(diff[:2].max().item() == 0.0 and diff[2].min().item() > 1e-3
          and lengths == {"propagate": [4] * 4, "reference": [4, 3, 3, 3]},
          f"propagate and reference caches agree until a skipped layer runs again, then differ "
          f"(max logit diff per step {[round(v, 4) for v in diff.tolist()]}; cache lengths "
          f"{lengths})")
    # The propagated K/V: each skipped layer j gets k_proj_j(self_attn_layer_norm_j(h)) of the
    # exited state h (layer 0's output at step 1).
    state = model.start_decoding(enc, 2)
    model.decode_step(tokens[:, 0], state)
    exited = []
    model.decode_step(tokens[:, 1], state,
                      lambda idx, x, y: exited.append(y) or idx == 0, "propagate")
    layer = model.decoder.layers[2]
    expected = layer.self_attn.project_key_value(layer.self_attn_layer_norm(exited[0]))[0]
    err = (state.caches[2].keys[:, :, 1:2] - expected).abs().max().item()
    check(err < 1e-6, f"propagate: a skipped layer's cache entry is its K of the exited state "
          f"({err:.1e})")

    # Fixed depths: every sample and every step stops after exactly k layers.
    case, model, (images, src, prev) = exit_inputs("tiny_decomposed_fixed")
    for depths in ((1, 3, 2), (2, 1, 3), (4, 4, 1), (7, 2, 9)):
        policy = R.ExitPolicy(fixed_depth_image=depths[0], fixed_depth_text=depths[1],
                              fixed_depth_decoder=depths[2])
        enc, ve_logits, ve_layers, gens = run_exits(model, images, src, prev, case, policy)
        want = [min(k, 4) for k in depths]
        layers = R.exit_layers(enc)
        full = model.encode(images, src)
        p = enc.num_image_tokens
        kept = torch.cat([full.streams["image"].states[want[0]],
                          full.streams["text"].states[want[1]]], dim=1)
        ok = (layers["image"].tolist() == [want[0]] * 3 and layers["text"].tolist() == [want[1]] * 3
              and ve_layers.tolist() == [want[2]] * 3
              and all(g.decoder_layers == [want[2]] * len(g.decoder_layers)
                      for m in gens for g in gens[m])
              and torch.allclose(enc.hidden, model.encoder.layer_norm(kept), atol=1e-6)
              and p == full.num_image_tokens)
        check(ok, f"fixed depths {depths}: exits at exactly {want} (encoder output = layer "
              f"k's state of a full run)")

    # Beam 1 without exits is greedy: argmax with pad banned, min_len, the forced EOS and the
    # no-repeat-ngram rule, step by step.
    case, model, (images, src, prev) = exit_inputs("test_decomposed_fixed_greedy")
    enc = model.encode(images, src)
    options = R.GenerationOptions(beam_size=1, max_len=6, min_len=2, no_repeat_ngram_size=2)
    result = R.beam_search(model, enc, options, R.ExitPolicy())
    greedy_ok = True
    for b in range(src.shape[0]):
        one = R.EncoderOutput(enc.hidden[b:b + 1], enc.padding_mask[b:b + 1],
                              enc.position_embedding, enc.num_image_tokens, {}, {})
        state = model.start_decoding(one, options.max_len + 1)
        seq, score = [0], 0.0
        for step in range(options.max_len + 1):
            logits = model.decode_step(torch.tensor(seq[-1:]), state)[0]
            lprobs = torch.log_softmax(logits.double(), -1)
            lprobs[1] = -math.inf
            if step < options.min_len:
                lprobs[2] = -math.inf
            if step == options.max_len:
                lprobs[torch.arange(lprobs.shape[0]) != 2] = -math.inf
            for i in range(len(seq) - 1):  # bigrams: ban what followed the last token before
                if seq[i] == seq[-1]:
                    lprobs[seq[i + 1]] = -math.inf
            token = int(lprobs.argmax())
            score += float(lprobs[token])
            seq.append(token)
            if token == 2:
                break
        got = result[b].hypotheses[0]
        greedy_ok = (greedy_ok and got.tokens == seq[1:]
                     and abs(got.score - score / len(seq[1:])) < 1e-5)
    check(greedy_ok, "beam 1 without exits equals a plain greedy loop (bans, min_len, forced EOS)")


def check_fixtures(tmp: str) -> None:
    out = os.path.join(tmp, "fixtures")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_fixtures.py"), "--out", out],
                   check=True, stdout=subprocess.DEVNULL)
    names = sorted(os.listdir(out))
    same = names == sorted(d for d in os.listdir(FIXTURES) if os.path.isdir(os.path.join(FIXTURES, d)))
    for name in names:
        match, mismatch, errors = filecmp.cmpfiles(os.path.join(out, name), os.path.join(FIXTURES, name),
                                                   ["config.json", "case.json", "io.safetensors"],
                                                   shallow=False)
        same = same and not mismatch and not errors
    check(same, "make_fixtures.py regenerates the committed fixtures byte for byte")
    out = os.path.join(tmp, "exit_fixtures")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_exit_fixtures.py"), "--out",
                    out], check=True, stdout=subprocess.DEVNULL)
    names = sorted(os.listdir(out))
    same = names == sorted(d for d in os.listdir(EXIT_FIXTURES)
                           if os.path.isdir(os.path.join(EXIT_FIXTURES, d)))
    for name in names:
        match, mismatch, errors = filecmp.cmpfiles(
            os.path.join(out, name), os.path.join(EXIT_FIXTURES, name),
            ["config.json", "case.json", "io.safetensors"], shallow=False)
        same = same and not mismatch and not errors
    check(same, "make_exit_fixtures.py regenerates the committed exit fixtures byte for byte")


OFA_FILES = ("unify_transformer", "unify_transformer_layer", "unify_multihead_attention", "resnet",
             "frozen_bn")

# Just enough of fairseq's API for OFA's model files to import and run in eval mode.
FAIRSEQ_STUB = {
    "__init__.py": "",
    "utils.py": """
        import torch, torch.nn.functional as F
        def new_arange(x, *size):
            size = size or x.size()
            return torch.arange(size[-1], device=x.device).expand(*size).contiguous()
        def softmax(x, dim, onnx_trace=False):
            return F.softmax(x, dim=dim, dtype=torch.float32)
        def get_activation_fn(activation):
            assert activation == "gelu"
            return lambda x: F.gelu(x.float()).type_as(x)
        def fill_with_neg_inf(t):
            return t.float().fill_(float("-inf")).type_as(t)
        def get_available_activation_fns():
            return ["gelu"]
        """,
    "distributed/__init__.py": "def fsdp_wrap(module, **kw):\n    return module\n",
    "models/__init__.py": """
        import torch.nn as nn
        class FairseqEncoder(nn.Module):
            def __init__(self, dictionary):
                super().__init__()
        FairseqIncrementalDecoder = FairseqEncoder
        class FairseqEncoderDecoderModel(nn.Module):
            pass
        def register_model(name, dataclass=None):
            return lambda cls: cls
        def register_model_architecture(model, arch):
            return lambda fn: fn
        """,
    "modules/__init__.py": """
        import torch.nn as nn
        from .fairseq_dropout import FairseqDropout
        def LayerNorm(shape, eps=1e-5, elementwise_affine=True, export=False):
            return nn.LayerNorm(shape, eps, elementwise_affine)
        AdaptiveSoftmax = BaseLayer = SinusoidalPositionalEmbedding = GradMultiply = object
        LayerDropModuleList = nn.ModuleList
        """,
    "modules/fairseq_dropout.py": """
        import torch.nn as nn
        class FairseqDropout(nn.Module):
            def __init__(self, p, module_name=None):
                super().__init__()
                self.p, self.apply_during_inference = p, False
            def forward(self, x, inplace=False):
                return x
        """,
    "modules/checkpoint_activations.py": "def checkpoint_wrapper(m, **kw):\n    return m\n",
    "modules/quant_noise.py": "def quant_noise(module, p, block_size):\n    return module\n",
    "incremental_decoding_utils.py": """
        import uuid
        class FairseqIncrementalState(object):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self._incremental_state_id = str(uuid.uuid4())
            def get_incremental_state(self, state, key):
                return None if state is None else state.get(self._incremental_state_id + "." + key)
            def set_incremental_state(self, state, key, value):
                if state is not None:
                    state[self._incremental_state_id + "." + key] = value
                return state
        def with_incremental_state(cls):
            cls.__bases__ = (FairseqIncrementalState,) + tuple(
                b for b in cls.__bases__ if b != FairseqIncrementalState)
            return cls
        """,
}


def ofa_args(c):
    d, f, h = c["d_model"], c["ffn_dim"], c["attention_heads"]
    return argparse.Namespace(
        encoder_prompt=False, decoder_prompt=False, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, relu_dropout=0.0, encoder_layerdrop=0.0, decoder_layerdrop=0.0,
        max_source_positions=c["max_source_positions"],
        max_target_positions=c["max_target_positions"], encoder_attention_heads=h,
        decoder_attention_heads=h, encoder_embed_dim=d, decoder_embed_dim=d, decoder_output_dim=d,
        decoder_input_dim=d, encoder_ffn_embed_dim=f, decoder_ffn_embed_dim=f,
        encoder_layers=c["encoder_layers"], decoder_layers=c["decoder_layers"],
        no_scale_embedding=True, layernorm_embedding=True, add_type_embedding=True, sync_bn=False,
        freeze_resnet=False, resnet_type="resnet50", resnet_drop_path_rate=0.0,
        resnet_model_path=None, patch_layernorm_embedding=True, code_layernorm_embedding=True,
        image_bucket_size=c["image_bucket_size"], token_bucket_size=c["token_bucket_size"],
        attn_scale_factor=c["attn_scale_factor"], adaptive_input=False, quant_noise_pq=0,
        quant_noise_pq_block_size=8, encoder_drop_path_rate=0.0, decoder_drop_path_rate=0.0,
        encoder_normalize_before=True, decoder_normalize_before=True, patch_image_size=480,
        orig_patch_image_size=256, entangle_position_embedding=False, disable_entangle=True,
        checkpoint_activations=False, scale_attn=True, scale_fc=True, scale_heads=True,
        scale_resids=False, activation_fn="gelu", adapter=False, interpolate_position=False,
        share_decoder_input_output_embed=True, code_image_size=128, cross_self_attention=False,
        tie_adaptive_weights=False, adaptive_softmax_cutoff=None, char_inputs=False)


def ofa_modules(U, config, model, decoder_class: str = "TransformerDecoder"):
    """OFA's encoder (MuE's for `decomposed`) and decoder, in eval mode, holding `model`'s
    weights; and whether the state-dict keys come in OFA's order."""
    args = ofa_args(config)
    embed = torch.nn.Embedding(config["vocab_size"], config["d_model"], config["pad_id"])
    encoder = (U.TransformerEncoder_MuE if config["encoder_mode"] == "decomposed"
               else U.TransformerEncoder)(args, None, embed)
    decoder = getattr(U, decoder_class)(args, None, embed)
    if config["resnet_width"] != 64 or config["resnet_layers"] != [3, 4, 6]:
        # OFA's ResNet is 64 wide; the `test` cases reuse the reference backbone, which the
        # OFA-tiny cases check against OFA's.
        encoder.embed_images = R.resnet.ResNet(config["resnet_layers"], config["resnet_width"])
        encoder.image_proj = torch.nn.Linear(encoder.embed_images.out_channels, config["d_model"])
    state = model.state_dict()
    keys_match = True
    for prefix, module in (("encoder.", encoder), ("decoder.", decoder)):
        own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        module.load_state_dict(own, strict=False)
        theirs = [k for k in module.state_dict()
                  if "rp_bucket" not in k and k not in ("version", "image_position_idx")]
        keys_match = keys_match and list(own) == theirs
    return encoder.eval(), decoder.eval(), keys_match


def check_against_ofa(git_dir: str, ref: str, tmp: str) -> None:
    src = os.path.join(tmp, "ofa_run")
    for path, text in FAIRSEQ_STUB.items():
        os.makedirs(os.path.dirname(os.path.join(src, "fairseq", path)), exist_ok=True)
        with open(os.path.join(src, "fairseq", path), "w") as f:
            f.write(textwrap.dedent(text))
    os.makedirs(os.path.join(src, "ofa_models"))
    open(os.path.join(src, "ofa_models", "__init__.py"), "w").close()
    for name in OFA_FILES:
        text = subprocess.run(["git", "-C", git_dir, "show", f"{ref}:models/ofa/{name}.py"],
                              check=True, capture_output=True, text=True).stdout
        with open(os.path.join(src, "ofa_models", name + ".py"), "w") as f:
            f.write(text)
    sys.path.insert(0, src)
    import warnings
    warnings.filterwarnings("ignore", message="torch.meshgrid")
    from ofa_models import unify_transformer as U

    for case in sorted(os.listdir(FIXTURES)):
        directory = os.path.join(FIXTURES, case)
        if not os.path.isdir(directory):
            continue
        config = R.read_config(directory)
        info = json.load(open(os.path.join(directory, "case.json")))
        io = {k: torch.from_numpy(np.array(v))
              for k, v in safetensors_np.load_file(os.path.join(directory, "io.safetensors")).items()}
        model = R.synthetic_model(config, info["seed"])
        encoder, decoder, keys_match = ofa_modules(U, config, model)
        src_tokens, prev = io["src_tokens"], io["prev_output_tokens"]
        batch = src_tokens.shape[0]
        kwargs = dict(patch_images=io["patch_images"],
                      patch_masks=torch.ones(batch, dtype=torch.bool))
        lengths = src_tokens.ne(config["pad_id"]).sum(1)
        with torch.no_grad():
            if config["encoder_mode"] == "decomposed":
                out = encoder.forward_scriptable(src_tokens, lengths, is_train=True, **kwargs)
            else:
                out = encoder.forward_scriptable(src_tokens, lengths, **kwargs)
            full, _ = decoder(prev, encoder_out=out)
            incremental, steps = {}, []
            for t in range(prev.shape[1]):
                steps.append(decoder(prev[:, :t + 1], encoder_out=out,
                                     incremental_state=incremental)[0][:, -1])
        inc = torch.stack(steps, 1)
        ids = io["decoder_logits_ids"]
        valid_t = prev.ne(config["pad_id"])
        valid_s = torch.cat([torch.ones(batch, io["encoder_out"].shape[1] - src_tokens.shape[1],
                                        dtype=torch.bool), src_tokens.ne(config["pad_id"])], 1)
        errors = {
            "encoder": (out["encoder_out"][0].transpose(0, 1) - io["encoder_out"])[valid_s],
            "logits": (full[..., ids] - io["decoder_logits"])[valid_t],
            "logsumexp": (torch.logsumexp(full, -1) - io["decoder_logsumexp"])[valid_t],
            "incremental": (inc[..., ids] - io["incremental_logits"])[valid_t],
            "incr. logsumexp": (torch.logsumexp(inc, -1) - io["incremental_logsumexp"])[valid_t],
        }
        worst = {k: v.abs().max().item() for k, v in errors.items()}
        check(keys_match and max(worst.values()) < 1e-4,
              f"OFA {ref} agrees on {case}: same keys in the same order, max diffs " +
              ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    check_exits_against_ofa(U, ref)


def check_exits_against_ofa(U, ref: str) -> None:
    """The released MuE code (TransformerEncoder_MuE / TransformerDecoder_MuE, is_train=False)
    on each sample of each exit fixture alone (its exit decision covers the whole batch): encoder
    exits (decomposed), the VE pass, and for greedy cases the generated tokens fed step by step
    with the schedule's threshold, which is the `reference` cache mode."""
    for case in sorted(os.listdir(EXIT_FIXTURES)):
        directory = os.path.join(EXIT_FIXTURES, case)
        if not os.path.isdir(directory):
            continue
        config = R.read_config(directory)
        info = json.load(open(os.path.join(directory, "case.json")))
        policy = R.ExitPolicy.from_json(info["policy"])
        if policy.fixed_depth_image or policy.fixed_depth_text or policy.fixed_depth_decoder:
            continue  # the released code has no fixed depths
        arrays = safetensors_np.load_file(os.path.join(directory, "io.safetensors"))
        io = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
        model = R.synthetic_model(config, info["seed"])
        encoder, decoder, _ = ofa_modules(U, config, model, "TransformerDecoder_MuE")
        pad, eos, ids = config["pad_id"], config["eos_id"], io["ve_logits_ids"]
        gen = info["generation"]
        same, worst, steps_checked = True, 0.0, 0
        for b in range(io["src_tokens"].shape[0]):
            n_src = int(io["src_tokens"][b].ne(pad).sum())
            n_tgt = int(io["prev_output_tokens"][b].ne(pad).sum())
            src = io["src_tokens"][b:b + 1, :n_src]
            kwargs = dict(patch_images=io["patch_images"][b:b + 1],
                          patch_masks=torch.ones(1, dtype=torch.bool))
            p = io["encoder_out"].shape[1] - io["src_tokens"].shape[1]
            with torch.no_grad():
                if config["encoder_mode"] == "decomposed":
                    out = encoder.forward_scriptable(
                        src, torch.tensor([n_src]), is_train=False,
                        img_thres=policy.exit_threshold_image,
                        txt_thres=policy.exit_threshold_text, **kwargs)
                    same = same and out["exit_layer"] == [int(io["image_layers"][b]),
                                                          int(io["text_layers"][b])]
                    worst = max(worst, (out["encoder_out"][0][:, 0]
                                        - io["encoder_out"][b, :p + n_src]).abs().max().item())
                else:  # stock OFA has no joint exits: its decoder reads our joint encoder output
                    out = encoder.forward_scriptable(src, torch.tensor([n_src]), **kwargs)
                    out["encoder_out"] = [io["encoder_out"][b:b + 1, :p + n_src].transpose(0, 1)]
                logits, extra = decoder(io["prev_output_tokens"][b:b + 1, :n_tgt],
                                        encoder_out=out, is_train=False,
                                        decoder_thres=policy.exit_threshold_decoder)
                same = same and extra["exit_layer"] == int(io["ve_decoder_layers"][b])
                worst = max(worst, (logits[0, -1, ids] - io["ve_logits"][b]).abs().max().item())
                if gen["beam_size"] != 1:
                    continue
                tokens = io["gen_tokens_reference"][b]
                tokens = tokens[:int((tokens == eos).nonzero()[0]) + 1]
                prev = torch.cat([torch.tensor([config["bos_id"]]), tokens[:-1]])[None]
                incremental, total = {}, 0.0
                for t in range(prev.shape[1]):
                    step_logits, extra = decoder(
                        prev[:, :t + 1], encoder_out=out, incremental_state=incremental,
                        is_train=False,
                        decoder_thres=policy.threshold("decoder", t, gen["max_len"]))
                    total += torch.log_softmax(step_logits[0, -1].double(), -1)[tokens[t]].item()
                    used = int(io["gen_decoder_layers_reference"][b, t])
                    same = same and extra["exit_layer"] == used
                    steps_checked += 1
                score = total / len(tokens) ** gen["length_penalty"]
                worst = max(worst, abs(score - info["gen_scores_float64"]["reference"][b]))
        check(same and worst < 1e-4,
              f"OFA {ref} MuE code agrees on exits/{case}, sample by sample: same exit layers"
              f"{f' (and {steps_checked} greedy steps)' if steps_checked else ''}, max diff "
              f"{worst:.1e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", action="store_true",
                        help="also regenerate the fixtures and compare with the committed ones")
    parser.add_argument("--ofa", metavar="GITDIR", help="an OFA git clone (bare or not) to run")
    parser.add_argument("--ofa-ref", default="feature/MuE")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        check_synthetic_weights()
        check_safetensors(tmp)
        check_buckets()
        check_model(tmp)
        check_exit_policy()
        check_exits()
        if args.fixtures:
            check_fixtures(tmp)
        if args.ofa:
            check_against_ofa(args.ofa, args.ofa_ref, tmp)
    print(f"{len(failures)} failure(s)" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
