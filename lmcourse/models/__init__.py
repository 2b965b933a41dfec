"""Neural language models, one module per chapter: the MLP LM (chapter 3), then recurrent and Transformer models."""

from lmcourse.models.encdec import EncoderDecoder
from lmcourse.models.gpt import GPT, GPTConfig
from lmcourse.models.mlp import MLPLM, make_windows

__all__ = ["EncoderDecoder", "GPT", "GPTConfig", "MLPLM", "make_windows"]
