"""The word tokenizer: one id per frequent word; every other word becomes ``<unk>``."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable

import regex

from lmcourse.core import check_int_at_least, decode_ids
from lmcourse.tokenizers._io import load_state, save_state

__all__ = ["WordTokenizer", "WORD_PATTERN", "UNK"]

#: A word is a run of letters, digits and underscores; every other non-space character is a word by itself.
WORD_PATTERN = r"\w+|[^\w\s]"
UNK = "<unk>"
_WORD = regex.compile(WORD_PATTERN)


class WordTokenizer:
    """Id 0 is ``<unk>``; ids 1.. are the training words, most frequent first (ties in alphabetical order).

    Spaces are not tokens, so ``decode`` puts one space between words: it gives the words back, not the text.

    >>> tok = WordTokenizer().train("the cat saw the dog", vocab_size=3)
    >>> tok.itos, tok.encode("the cat saw a cat")
    (['<unk>', 'the', 'cat'], [1, 2, 0, 0, 2])
    """

    def __init__(self, words: Iterable[str] = ()) -> None:
        self.itos: list[str] = [UNK, *(w for w in words if w != UNK)]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("the vocabulary has a word twice")

    @staticmethod
    def words(text: str) -> list[str]:
        """The words of ``text`` (``WORD_PATTERN``)."""
        return _WORD.findall(text)

    def train(self, text: str, vocab_size: int | None = None, min_count: int = 1) -> WordTokenizer:
        """Keep the ``vocab_size`` - 1 most frequent words seen at least ``min_count`` times (all if None)."""
        if vocab_size is not None:
            check_int_at_least(vocab_size, 2, "vocab_size", " (<unk> and one word) or None")
        counts = Counter(self.words(text))
        if not counts:
            raise ValueError("cannot train a WordTokenizer on a text without words")
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if not ranked:
            raise ValueError(f"no word occurs min_count={min_count!r} or more times in the text (the largest count "
                             f"is {max(counts.values())}): lower min_count")
        self.__init__(ranked[:None if vocab_size is None else vocab_size - 1])
        return self

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        """The id of each word of ``text``; 0 (``<unk>``) for a word outside the vocabulary."""
        if self.vocab_size == 1:
            raise ValueError("this WordTokenizer has no words, every word would be <unk>: call train(text) first")
        return [self.stoi.get(w, 0) for w in self.words(text)]

    def oov_rate(self, text: str) -> float:
        """The fraction of the words of ``text`` that are outside the vocabulary."""
        words = self.words(text)
        if not words:
            raise ValueError("the text has no words")
        return sum(w not in self.stoi for w in words) / len(words)

    def decode(self, ids: Iterable[int]) -> str:
        """The words with these ids, separated by single spaces."""
        return " ".join(self.itos[i] for i in decode_ids(ids, self.vocab_size))

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON, atomically."""
        save_state(path, "word", {"itos": self.itos})

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordTokenizer:
        """Read a vocabulary written by :meth:`save`."""
        itos = load_state(path, "word", ("itos",))["itos"]
        if not isinstance(itos, list) or not itos or itos[0] != UNK or not all(isinstance(w, str) for w in itos):
            raise ValueError(f"{path} is a corrupt word tokenizer file: itos must be a list of words after {UNK!r}")
        return cls(itos)
