"""Neural language models, one module per chapter: the MLP LM (chapter 3), then the GPT and its variants (chapter 7).

Nothing is imported until it is used: ``from lmcourse.models import MLPLM`` loads chapter 3's module only.
"""

from lmcourse.core import lazy_exports

_EXPORTS = {
    "MLPLM": "lmcourse.models.mlp",
    "make_windows": "lmcourse.models.mlp",
    "GPT": "lmcourse.models.gpt",
    "GPTConfig": "lmcourse.models.gpt",
    "EncoderDecoder": "lmcourse.models.encdec",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
