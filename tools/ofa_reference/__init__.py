"""PyTorch reference implementation of OFA and MuE (spec sections 1 and 3).

Import with tools/ on sys.path (the tools' scripts live there): `import ofa_reference`.
"""

from .buckets import image_bucket_matrix, image_position_ids, token_bucket, token_bucket_matrix
from .checkpoint import (load_model, load_weights, parameter_specs, read_config, save_model,
                         stored_tensors, synthetic_model, write_config, write_synthetic_model_dir)
from .config import SIZES, Config, image_hw, make_config, normalize_config
from .decoder import Decoder, DecoderState
from .encoder import Encoder, EncoderOutput
from .model import OFAModel
from .mue import (ExitPolicy, Generation, GenerationOptions, Hypothesis, Margins, beam_search,
                  exit_layers, flat_cosine, score_ve)
from . import mue
