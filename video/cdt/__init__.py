"""CDT: Conditioned Diffusion-based video Tokenizer (ali-vilab/CDT, arXiv 2503.03708).

Causal 3D encoder to a continuous 16-channel latent (4x in time, 8x8 in space) and a conditional causal diffusion
decoder sampled in one DDIM step by default. See docs/models/cdt.md.
"""

from zoo.registry import register_family

from .config import CDTConfig
from .convert import convert_state_dict, infer_config, read_checkpoint
from .model import CDTModel, CDTTokenizer, DDIMSchedule, StreamCache

register_family("cdt")(CDTTokenizer)

__all__ = ["CDTConfig", "CDTModel", "CDTTokenizer", "DDIMSchedule", "StreamCache", "convert_state_dict",
           "infer_config", "read_checkpoint"]

from .fsq import CDTFSQConfig, CDTFSQTokenizer  # noqa: E402

register_family("cdt-fsq")(CDTFSQTokenizer)
__all__ += ["CDTFSQConfig", "CDTFSQTokenizer"]
