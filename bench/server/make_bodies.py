"""Request bodies for mue-server's load benchmark: one JSON file per held-out scene of
tests/fixtures/default_model, with its entailment question (entail) or alone (caption)."""
import base64
import json
import pathlib
import sys

task, out = sys.argv[1], pathlib.Path(sys.argv[2])
scenes = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "default_model"
expected = json.loads((scenes / "expected.json").read_text())
out.mkdir(parents=True, exist_ok=True)
items = expected["ve"] if task == "entail" else expected["caption"]
for i, item in enumerate(items):
    body = {"image": base64.b64encode((scenes / item["image"]).read_bytes()).decode()}
    if task == "entail":
        body.update(premise=item["premise"], hypothesis=item["hypothesis"])
    (out / f"{task}_{i:02d}.json").write_text(json.dumps(body))
