"""Neural language models, one module per chapter: the MLP LM (chapter 3), then recurrent and Transformer models."""

from lmcourse.models.mlp import MLPLM, make_windows

__all__ = ["MLPLM", "make_windows"]
