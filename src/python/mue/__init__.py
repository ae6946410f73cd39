"""mue: OFA vision-language inference with MuE multi-exit early exiting.

    import mue
    engine = mue.Engine.load()                       # the default model
    r = engine.caption("scene.png")
    print(r.caption, r.exits.expected_time_reduction)
    e = engine.entail("scene.png", "the boot is green", premise="a blue shirt is in the top right")
    print(e.label, e.probabilities)

An image is a path, bytes of an encoded JPEG or PNG, a NumPy uint8 array (height, width, 3), a
PIL image, or a PreparedImage (engine.prepare_image). Errors from the engine raise mue.Error
(a ValueError) with its message. Calls release the GIL: Python threads may share one Engine.
"""

import os as _os

# libgomp reads its waiting policy once, when it is loaded (with the extension below). mue's
# binaries set GOMP_SPINCOUNT=1000 when neither variable is set, because libgomp's default spins
# away most of a call's time when another process competes for the cores (mue/runtime.h,
# bench/README.md "Under load"); the module does the same. Set either variable to choose.
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = "1000"

from . import _paths
from ._mue import (  # noqa: E402
    CaptionResult,
    Engine,
    EntailmentResult,
    Error,
    ExitPolicy,
    ExitStatistics,
    GenerationSettings,
    PreparedImage,
    StageSeconds,
    __version__,
    machine_info,
)

__all__ = [
    "__version__",
    "CaptionResult",
    "Engine",
    "EntailmentResult",
    "Error",
    "ExitPolicy",
    "ExitStatistics",
    "GenerationSettings",
    "PreparedImage",
    "StageSeconds",
    "default_model_dir",
    "machine_info",
]


# The classes are mue's to users (reprs, help, pickles): mue.Engine, not mue._mue.Engine.
for _cls in (CaptionResult, Engine, EntailmentResult, Error, ExitPolicy, ExitStatistics,
             GenerationSettings, PreparedImage, StageSeconds):
    _cls.__module__ = "mue"
del _cls


def _default_model():
    """(directory, where it came from): what Engine.load() loads without model_dir."""
    env = _os.environ.get("MUE_MODEL")
    if env:
        return env, "$MUE_MODEL"
    here = _os.path.dirname(_os.path.abspath(__file__))
    # _paths.DEFAULT_MODEL: relative to this package when installed, absolute (the source
    # tree's models/) in the build tree.
    model = _os.path.normpath(_os.path.join(here, _paths.DEFAULT_MODEL))
    if _os.path.isabs(_paths.DEFAULT_MODEL):
        return model, "the embedded default model"
    return model, "the installed default model"


def default_model_dir():
    """The model directory Engine.load() uses without model_dir: $MUE_MODEL if set, else the
    default model installed with this package (<prefix>/share/mue/models/NAME), or the source
    tree's models/NAME when the package runs from the build tree."""
    return _default_model()[0]
