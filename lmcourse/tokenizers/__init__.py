"""Tokenizers: text <-> lists of integer ids.

Every tokenizer has the same interface: ``train(text, vocab_size)``, ``encode(text) -> list[int]``,
``decode(ids) -> str``, ``save(path)`` and ``load(path)``. The character tokenizer is chapter 0's; the word,
byte-level BPE, WordPiece and Unigram tokenizers are chapter 8's. Nothing is imported until it is used:
``from lmcourse.tokenizers import CharTokenizer`` loads the character tokenizer only.
"""

from lmcourse.core import lazy_exports

_EXPORTS = {
    "CharTokenizer": "lmcourse.tokenizers.char",
    "WordTokenizer": "lmcourse.tokenizers.word",
    "BPETokenizer": "lmcourse.tokenizers.bpe",
    "GPT2_PATTERN": "lmcourse.tokenizers.bpe",
    "WordPieceTokenizer": "lmcourse.tokenizers.wordpiece",
    "UnigramTokenizer": "lmcourse.tokenizers.unigram",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
