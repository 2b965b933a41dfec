"""The character tokenizer: one id per distinct character of the training text."""

from __future__ import annotations

import os
from collections.abc import Iterable

from lmcourse.core import decode_ids
from lmcourse.tokenizers._io import load_state, save_state

__all__ = ["CharTokenizer"]


class CharTokenizer:
    """Maps each character of the training text to an id, in sorted order of the characters.

    >>> tok = CharTokenizer().train("hello")
    >>> tok.encode("hole"), tok.decode([1, 2])
    ([1, 3, 2, 0], 'hl')
    """

    def __init__(self, chars: Iterable[str] = ()) -> None:
        self.itos: list[str] = sorted(set(chars))
        self.stoi: dict[str, int] = {ch: i for i, ch in enumerate(self.itos)}

    def train(self, text: str, vocab_size: int | None = None) -> CharTokenizer:
        """Take the vocabulary from ``text``; ``vocab_size``, if given, must equal its number of characters."""
        if not text:
            raise ValueError("cannot train a CharTokenizer on an empty text")
        self.__init__(text)
        if vocab_size is not None and vocab_size != len(self.itos):
            raise ValueError(f"the text has {len(self.itos)} distinct characters, not vocab_size={vocab_size}")
        return self

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        """The id of each character of ``text``."""
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError as err:
            if not self.itos:
                raise ValueError("this CharTokenizer has no vocabulary: call train(text) first") from None
            missing, size = err.args[0], self.vocab_size
            raise ValueError(f"character {missing!r} is not in the vocabulary of {size} characters") from None

    def decode(self, ids: Iterable[int]) -> str:
        """The text whose characters have these ids."""
        return "".join(self.itos[i] for i in decode_ids(ids, self.vocab_size))

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON (atomically: a temporary file renamed into place)."""
        save_state(path, "char", {"itos": self.itos})

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharTokenizer:
        """Read a vocabulary written by :meth:`save`."""
        itos = load_state(path, "char", ("itos",))["itos"]
        if not isinstance(itos, list) or not all(isinstance(ch, str) and len(ch) == 1 for ch in itos):
            raise ValueError(f"{path} is a corrupt char tokenizer file: itos must be a list of single characters")
        return cls(itos)
