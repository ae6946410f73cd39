# Fixtures of the bindings' tests (ctest Python.bindings runs them with PYTHONPATH at the
# module built in <build>/python, src/python/CMakeLists.txt).
import os
import pathlib

import pytest

# The tests use the default model, whatever the caller's environment says.
os.environ.pop("MUE_MODEL", None)

import mue  # noqa: E402

SOURCE_DIR = pathlib.Path(
    os.environ.get("MUE_TEST_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
MODEL_DIR = SOURCE_DIR / "models" / os.environ.get("MUE_TEST_MODEL_NAME", "mue-scenes-small")
SCENE = MODEL_DIR / "example.png"


@pytest.fixture(scope="session")
def engine():
    if not (MODEL_DIR / "model.safetensors").exists():
        pytest.skip(f"no default model in {MODEL_DIR}")
    return mue.Engine.load()


@pytest.fixture(scope="session")
def cli():
    """The mue CLI of the same build (ctest sets MUE_TEST_CLI)."""
    path = os.environ.get("MUE_TEST_CLI")
    if not path or not os.path.exists(path):
        pytest.skip("MUE_TEST_CLI does not name the mue CLI")
    return path


def comparable(result):
    """A result's dict without what differs between equal calls: times, and whether the image
    stream came from the engine's cache."""
    d = dict(result if isinstance(result, dict) else result.to_dict())
    d.pop("seconds", None)
    d["exits"] = {k: v for k, v in d["exits"].items() if k != "image_reused"}
    return d
