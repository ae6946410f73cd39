# The Python bindings (src/python): results equal the C++ engine's (through the mue CLI of the
# same build), every image form gives the same result, batches and per-call options, the exit
# policy's dict and file forms, clear errors for bad inputs, and threads sharing one Engine.
import json
import os
import pathlib
import subprocess
import threading

import pytest

import mue
from conftest import MODEL_DIR, SCENE, comparable

HYPOTHESIS = "the boot is green"
PREMISE = "a blue shirt is in the top right"
CAPTION_POLICY = MODEL_DIR / "exit_policy.caption.json"
ENTAIL_POLICY = MODEL_DIR / "exit_policy.entail.json"


def run_cli(cli, *args):
    out = subprocess.run([cli, *map(str, args), "--json"], check=True, capture_output=True,
                         text=True, env={k: v for k, v in os.environ.items() if k != "MUE_MODEL"})
    d = json.loads(out.stdout)
    for key in ("policy", "policy_file"):
        d.pop(key)
    return d


@pytest.fixture(scope="module")
def full_depth_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("policy") / "full_depth.json"
    path.write_text("{}")
    return path


# ---- Equal to the C++ engine --------------------------------------------------------------


def test_default_model_is_the_source_trees(engine):
    assert mue.default_model_dir() == str(MODEL_DIR)
    assert engine.model_dir == str(MODEL_DIR)
    assert engine.config["name"] == MODEL_DIR.name
    assert engine.default_exit_policy == mue.ExitPolicy.full_depth()


@pytest.mark.parametrize("policy", ["full_depth", "calibrated"])
def test_caption_equals_cli(engine, cli, full_depth_file, policy):
    file = full_depth_file if policy == "full_depth" else CAPTION_POLICY
    expected = run_cli(cli, "caption", SCENE, "--policy", file)
    result = engine.caption(SCENE, exit_policy=mue.ExitPolicy.load(file))
    assert comparable(result) == comparable(expected)
    assert result.caption and result.tokens[-1] == 2


@pytest.mark.parametrize("policy", ["full_depth", "calibrated"])
def test_entail_equals_cli(engine, cli, full_depth_file, policy):
    file = full_depth_file if policy == "full_depth" else ENTAIL_POLICY
    expected = run_cli(cli, "entail", SCENE, "--hypothesis", HYPOTHESIS, "--premise", PREMISE,
                       "--policy", file)
    result = engine.entail(SCENE, HYPOTHESIS, premise=PREMISE, exit_policy=str(file))
    assert comparable(result) == comparable(expected)
    assert result.label in ("entailment", "neutral", "contradiction")
    assert result.probabilities == pytest.approx(
        {"entailment": result.p_entailment, "neutral": result.p_neutral,
         "contradiction": result.p_contradiction})


def test_engine_default_policy_equals_per_call_policy(cli):
    engine = mue.Engine.load(exit_policy=CAPTION_POLICY)
    assert engine.default_exit_policy == mue.ExitPolicy.load(CAPTION_POLICY)
    assert comparable(engine.caption(SCENE)) == comparable(run_cli(cli, "caption", SCENE))


# ---- Every image form ----------------------------------------------------------------------


def image_forms(path):
    np = pytest.importorskip("numpy")
    Image = pytest.importorskip("PIL.Image")
    pixels = np.asarray(Image.open(path).convert("RGB"))
    strided = np.zeros((pixels.shape[0], 2 * pixels.shape[1], 3), np.uint8)
    strided[:, ::2] = pixels
    return {
        "str": str(path),
        "pathlib": pathlib.Path(path),
        "bytes": path.read_bytes(),
        "bytearray": bytearray(path.read_bytes()),
        "numpy": pixels,
        "numpy_fortran_order": np.asfortranarray(pixels),
        "numpy_strided_view": strided[:, ::2],
        "pil": Image.open(path),
        "pil_palette": Image.open(path).convert("P", palette=Image.ADAPTIVE).convert("RGB"),
    }


def test_every_image_form_gives_the_same_caption(engine):
    expected = comparable(engine.caption(SCENE))
    forms = image_forms(SCENE)
    forms.pop("pil_palette")  # other pixels: checked against its own PNG below
    forms["prepared"] = engine.prepare_image(SCENE)
    for name, image in forms.items():
        assert comparable(engine.caption(image)) == expected, name


def test_every_image_form_gives_the_same_entailment(engine, tmp_path):
    # A JPEG too: the engine decodes it as Pillow does, so PIL's pixels give the same answer.
    Image = pytest.importorskip("PIL.Image")
    jpeg = tmp_path / "scene.jpg"
    Image.open(SCENE).convert("RGB").save(jpeg, quality=90)
    for path in (SCENE, jpeg):
        expected = comparable(engine.entail(path, HYPOTHESIS, PREMISE))
        forms = image_forms(path)
        forms.pop("pil_palette")
        for name, image in forms.items():
            assert comparable(engine.entail(image, HYPOTHESIS, PREMISE)) == expected, (path, name)


def test_pixels_equal_their_png(engine, tmp_path):
    # Pixels that are not a file's: the array and the PNG written from it agree.
    image = image_forms(SCENE)["pil_palette"]
    png = tmp_path / "palette.png"
    image.save(png)
    assert comparable(engine.caption(image)) == comparable(engine.caption(png))


def test_prepared_image_is_reused(engine):
    prepared = engine.prepare_image(SCENE)
    h, w = engine.config["image_size"]
    assert prepared.shape == (h, w, 3)
    assert prepared.name == str(SCENE)
    engine.entail(prepared, HYPOTHESIS)
    assert engine.entail(prepared, "there is a red trouser").exits.image_reused


# ---- Batches and per-call options ------------------------------------------------------------


def test_caption_batch_equals_single_calls(engine):
    np = pytest.importorskip("numpy")
    flipped = np.ascontiguousarray(image_forms(SCENE)["numpy"][:, ::-1])
    batch = engine.caption([SCENE, flipped])
    assert isinstance(batch, list) and len(batch) == 2
    for result, image in zip(batch, [SCENE, flipped]):
        single = engine.caption(image)
        assert result.caption == single.caption
        assert result.tokens == single.tokens
        assert result.score == pytest.approx(single.score, abs=1e-5)


def test_entail_batch_equals_single_calls(engine):
    hypotheses = [HYPOTHESIS, "there is a red trouser", "the picture is empty"]
    batch = engine.entail(SCENE, hypotheses, premise=PREMISE)
    assert len(batch) == 3
    for result, hypothesis in zip(batch, hypotheses):
        single = engine.entail(SCENE, hypothesis, PREMISE)
        assert result.label == single.label
        assert result.p_entailment == pytest.approx(single.p_entailment, abs=1e-5)
    # Lists of images and premises, one query each.
    pairs = engine.entail([SCENE, str(SCENE)], [HYPOTHESIS, HYPOTHESIS], premise=[PREMISE, ""])
    assert pairs[0].label == engine.entail(SCENE, HYPOTHESIS, PREMISE).label
    assert pairs[1].label == engine.entail(SCENE, HYPOTHESIS).label
    with pytest.raises(mue.Error, match="differ in length: image 2, hypothesis 3"):
        engine.entail([SCENE, SCENE], hypotheses)


def test_per_call_options(engine):
    short = engine.caption(SCENE, generation={"beam_size": 1, "max_len": 3})
    assert len(short.tokens) <= 4
    fixed = engine.caption(SCENE, exit_policy={"fixed_depth_image": 2, "fixed_depth_text": 3})
    assert (fixed.exits.image_layers, fixed.exits.text_layers) == (2, 3)
    settings = engine.default_generation  # a copy: changing it leaves the engine's as it was
    default_max_len = settings.max_len
    settings.max_len = 3
    assert engine.caption(SCENE, generation=settings).tokens == engine.caption(
        SCENE, generation={"max_len": 3}).tokens
    assert engine.default_generation.max_len == default_max_len != 3
    assert engine.caption(SCENE).exits.image_layers == engine.config["encoder_layers"]


# ---- Results ----------------------------------------------------------------------------------


def test_results_are_typed_with_dicts_and_reprs(engine):
    r = engine.caption(SCENE)
    assert set(r.to_dict()) == {"caption", "tokens", "score", "exits", "seconds"}
    assert r.to_dict()["exits"]["expected_time_reduction"] == r.exits.expected_time_reduction
    assert r.exits.decoder_layers == r.to_dict()["exits"]["decoder_layers"]
    assert r.seconds.total >= r.seconds.decoder > 0
    assert repr(r).startswith("CaptionResult(caption='" + r.caption + "'")
    assert engine.decode_tokens(r.tokens).strip() == r.caption.strip()
    e = engine.entail(SCENE, HYPOTHESIS)
    assert set(e.to_dict()) == {"label", "probabilities", "exits", "seconds"}
    assert f"label='{e.label}'" in repr(e)
    assert sum(e.probabilities.values()) == pytest.approx(1.0, abs=1e-4)


# ---- The exit policy --------------------------------------------------------------------------


def test_exit_policy_dict_and_file(tmp_path):
    p = mue.ExitPolicy(exit_threshold_text=0.95, decoder_schedule="calm")
    assert p.exit_threshold_text == 0.95 and p.decoder_schedule == "calm"
    assert p.to_dict()["exit_threshold_text"] == 0.95
    assert mue.ExitPolicy.from_dict(p.to_dict()) == p
    assert mue.ExitPolicy(p.to_dict()) == p
    p.exit_threshold_image = 0.9
    assert p.to_dict()["exit_threshold_image"] == 0.9
    p.save(tmp_path / "p.json")
    assert mue.ExitPolicy.load(tmp_path / "p.json") == p
    assert set(mue.ExitPolicy.fields) == set(p.to_dict())
    assert "exit_threshold_decoder" in dir(p)
    import copy
    import pickle
    assert pickle.loads(pickle.dumps(p)) == p and copy.deepcopy(p) == p
    # A model's calibrated policy file: its fields, the rest at their defaults.
    fields = json.loads(CAPTION_POLICY.read_text())
    loaded = mue.ExitPolicy.load(CAPTION_POLICY).to_dict()
    for key, value in fields.items():
        if key in loaded:
            assert loaded[key] == value, key


# ---- Bad inputs -------------------------------------------------------------------------------


def test_bad_images_raise_clear_errors(engine, tmp_path):
    np = pytest.importorskip("numpy")
    missing = tmp_path / "missing.png"
    with pytest.raises(mue.Error, match=f"{missing}.*cannot open"):
        engine.caption(missing)
    with pytest.raises(mue.Error, match="<bytes>"):
        engine.caption(b"this is not an image")
    with pytest.raises(mue.Error, match="empty"):
        engine.caption(b"")
    truncated = SCENE.read_bytes()[:200]
    with pytest.raises(mue.Error, match="PNG"):
        engine.entail(truncated, HYPOTHESIS)
    for bad, what in [(np.zeros((8, 8), np.uint8), r"uint8 of shape \(8, 8\)"),
                      (np.zeros((8, 8, 4), np.uint8), r"uint8 of shape \(8, 8, 4\)"),
                      (np.zeros((8, 8, 3), np.float32), r"float32 of shape \(8, 8, 3\)"),
                      (np.zeros((0, 8, 3), np.uint8), "empty")]:
        with pytest.raises(mue.Error, match=what):
            engine.caption(bad)
    with pytest.raises(TypeError, match="image must be a path"):
        engine.caption(42)
    with pytest.raises(mue.Error, match="missing.png"):  # a batch names the bad image too
        engine.caption([SCENE, missing])


def test_bad_policies_and_options_raise_clear_errors(engine):
    with pytest.raises(mue.Error, match=r"exit_threshold_text = 1.5.* outside \(0, 1\]"):
        mue.ExitPolicy(exit_threshold_text=1.5)
    p = mue.ExitPolicy()
    with pytest.raises(mue.Error, match="exit_threshold_image"):
        p.exit_threshold_image = 0.0
    assert p == mue.ExitPolicy()  # a refused change leaves the policy as it was
    with pytest.raises(mue.Error, match='unknown field "exit_treshold_text"'):
        mue.ExitPolicy(exit_treshold_text=0.9)
    with pytest.raises(AttributeError, match="no field"):
        p.exit_treshold_text = 0.9
    with pytest.raises(mue.Error, match="decoder_schedule"):
        mue.ExitPolicy(decoder_schedule="sometimes")
    with pytest.raises(mue.Error, match="fixed_depth_image"):
        engine.caption(SCENE, exit_policy={"fixed_depth_image": 99})
    with pytest.raises(mue.Error, match="exit policy file .*nope.json: cannot open"):
        mue.ExitPolicy.load("/nope.json")
    with pytest.raises(mue.Error, match='unknown field "beams"'):
        engine.caption(SCENE, generation={"beams": 2})
    with pytest.raises(mue.Error, match="hypothesis is empty"):
        engine.entail(SCENE, "  ")
    with pytest.raises(TypeError, match="hypothesis must be a str"):
        engine.entail(SCENE, 3)
    with pytest.raises(mue.Error, match="model directory /nonexistent"):
        mue.Engine.load("/nonexistent")
    with pytest.raises(mue.Error, match="bf17"):
        mue.Engine.load(compute_type="bf17")
    with pytest.raises(mue.Error, match="threads"):
        mue.Engine.load(threads=-1)
    assert issubclass(mue.Error, ValueError)


def test_mue_model_environment_wins(monkeypatch):
    monkeypatch.setenv("MUE_MODEL", "/nonexistent-model")
    assert mue.default_model_dir() == "/nonexistent-model"
    with pytest.raises(mue.Error, match=r"/nonexistent-model \(from \$MUE_MODEL\) does not exist"):
        mue.Engine.load()


# ---- Threads ---------------------------------------------------------------------------------


def test_threads_sharing_one_engine_give_the_serial_results(engine):
    np = pytest.importorskip("numpy")
    flipped = np.ascontiguousarray(image_forms(SCENE)["numpy"][::-1])
    calls = [
        lambda: engine.caption(SCENE),
        lambda: engine.entail(SCENE, HYPOTHESIS, PREMISE),
        lambda: engine.caption(flipped, exit_policy=CAPTION_POLICY),
        lambda: engine.entail(flipped, "there is a red trouser", exit_policy=ENTAIL_POLICY),
    ]
    serial = [comparable(call()) for call in calls]
    threads, barrier = 4, threading.Barrier(4)
    results = [[None] * (3 * len(calls)) for _ in range(threads)]
    errors = []

    def work(t):
        try:
            barrier.wait()
            for i in range(3 * len(calls)):
                results[t][i] = comparable(calls[(i + t) % len(calls)]())
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    for t in range(threads):
        for i in range(3 * len(calls)):
            assert results[t][i] == serial[(i + t) % len(calls)], (t, i)
