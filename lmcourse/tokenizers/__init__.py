"""Tokenizers: text <-> lists of integer ids.

Every tokenizer has the same interface: ``train(text, vocab_size)``, ``encode(text) -> list[int]``,
``decode(ids) -> str``, ``save(path)`` and ``load(path)``.
"""

from lmcourse.tokenizers._checks import check_id_stream, check_ids, check_positive_int, is_number
from lmcourse.tokenizers.bpe import GPT2_PATTERN, BPETokenizer
from lmcourse.tokenizers.char import CharTokenizer
from lmcourse.tokenizers.unigram import UnigramTokenizer
from lmcourse.tokenizers.word import WordTokenizer
from lmcourse.tokenizers.wordpiece import WordPieceTokenizer

__all__ = ["CharTokenizer", "WordTokenizer", "BPETokenizer", "WordPieceTokenizer", "UnigramTokenizer",
           "GPT2_PATTERN", "check_ids", "check_id_stream", "check_positive_int", "is_number"]
