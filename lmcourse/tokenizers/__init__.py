"""Tokenizers: text <-> lists of integer ids.

Every tokenizer has the same interface: ``train(text, vocab_size)``, ``encode(text) -> list[int]``,
``decode(ids) -> str``, ``save(path)`` and ``load(path)``.
"""

from lmcourse.tokenizers.char import CharTokenizer

__all__ = ["CharTokenizer"]
