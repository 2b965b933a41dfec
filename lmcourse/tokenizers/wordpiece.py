"""WordPiece (BERT's tokenizer): a word is its first piece, then ``##`` continuation pieces.

Encoding is greedy longest-match-first, word by word: take the longest vocabulary piece that starts the
word, then the longest ``##`` piece that continues it, and so on; a word that cannot be covered this way
becomes ``[UNK]`` as a whole (Hugging Face ``tokenizers``' ``WordPiece`` model does the same).

Training (as in Hugging Face's course description of WordPiece): start from the characters (the first of
each word as is, the others with ``##``) and repeatedly merge the pair a b with the highest score
c(a b) / (c(a) c(b)), which prefers pairs whose parts rarely occur apart, rather than the most frequent pair
as BPE does. Ties go to the pair of older pieces (smaller ids: the characters are numbered alphabetically).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable

import regex

from lmcourse.core import check_int_at_least, decode_ids
from lmcourse.tokenizers._io import load_state, save_state
from lmcourse.tokenizers.bpe_train import PairIndex

__all__ = ["WordPieceTokenizer", "WORDPIECE_PATTERN"]

#: Pre-tokenisation: runs of word characters, and runs of other non-space characters (HF's ``Whitespace``).
WORDPIECE_PATTERN = r"\w+|[^\w\s]+"
_WORDS = regex.compile(WORDPIECE_PATTERN)


class WordPieceTokenizer:
    """A WordPiece vocabulary ``itos`` (``[UNK]`` first) with greedy longest-match-first encoding.

    >>> tok = WordPieceTokenizer(["[UNK]", "un", "##aff", "##able", "a"])
    >>> [tok.itos[i] for i in tok.encode("unaffable a b")]
    ['un', '##aff', '##able', 'a', '[UNK]']
    """

    def __init__(self, vocab: Iterable[str] = (), unk_token: str = "[UNK]", prefix: str = "##",
                 max_input_chars_per_word: int = 100) -> None:
        if not prefix or not unk_token:
            raise ValueError("the unknown token and the continuation prefix must be non-empty strings")
        self.unk_token, self.prefix, self.max_input_chars_per_word = unk_token, prefix, max_input_chars_per_word
        self.itos: list[str] = [unk_token, *(p for p in vocab if p != unk_token)]
        self.stoi: dict[str, int] = {p: i for i, p in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("the vocabulary has a piece twice")
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def train(self, text: str, vocab_size: int) -> WordPieceTokenizer:
        """Learn a vocabulary of ``vocab_size`` pieces ([UNK], the characters, then merged pieces)."""
        word_counts = Counter(_WORDS.findall(text))
        if not word_counts:
            raise ValueError("cannot train a WordPieceTokenizer on a text without words")
        alphabet = sorted({w[0] for w in word_counts} | {self.prefix + c for w in word_counts for c in w[1:]})
        check_int_at_least(vocab_size, len(alphabet) + 1, "vocab_size", f" ([UNK] and the {len(alphabet)} "
                           f"characters of the text, with and without {self.prefix})")
        itos = [self.unk_token, *alphabet]
        stoi = {p: i for i, p in enumerate(itos)}
        words = [[stoi[w[0]], *(stoi[self.prefix + c] for c in w[1:])] for w in word_counts]
        counts = list(word_counts.values())
        piece_counts = Counter()
        for word, c in zip(words, counts, strict=True):
            for i in word:
                piece_counts[i] += c
        index = PairIndex(words, counts)
        while len(itos) < vocab_size and index.pair_counts:
            score = lambda p: (index.pair_counts[p] / (piece_counts[p[0]] * piece_counts[p[1]]), -p[0], -p[1])
            a, b = max(index.pair_counts, key=score)
            piece = itos[a] + itos[b].removeprefix(self.prefix)
            if piece not in stoi:
                stoi[piece] = len(itos)
                itos.append(piece)
            index.merge((a, b), stoi[piece])
            piece_counts[a] -= index.merged
            piece_counts[b] -= index.merged
            piece_counts[stoi[piece]] += index.merged
        self.__init__(itos, self.unk_token, self.prefix, self.max_input_chars_per_word)
        return self

    def encode_word(self, word: str) -> list[int]:
        """Greedy longest-match-first ids of one word; ``[UNK]`` alone if it cannot be covered."""
        if len(word) > self.max_input_chars_per_word:
            return [0]
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.stoi:
                    ids.append(self.stoi[piece])
                    start = end
                    break
            else:
                return [0]
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``: its words (``WORDPIECE_PATTERN``) encoded one by one."""
        if len(self.itos) < 2:
            raise ValueError("this WordPieceTokenizer has no vocabulary: call train(text, vocab_size) first")
        ids: list[int] = []
        for word in _WORDS.findall(text):
            if word not in self._cache:
                self._cache[word] = self.encode_word(word)
            ids.extend(self._cache[word])
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The words of these ids, separated by spaces (``##`` pieces are glued to the piece before them)."""
        out = []
        for i in decode_ids(ids, self.vocab_size):
            piece = self.itos[i]
            out.append(piece[len(self.prefix):] if piece.startswith(self.prefix) and out else " " + piece)
        return "".join(out).removeprefix(" ")

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary and settings as JSON, atomically."""
        save_state(path, "wordpiece", {"itos": self.itos, "unk_token": self.unk_token, "prefix": self.prefix,
                                       "max_input_chars_per_word": self.max_input_chars_per_word})

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordPieceTokenizer:
        """Read a tokenizer written by :meth:`save`."""
        state = load_state(path, "wordpiece", ("itos", "unk_token", "prefix", "max_input_chars_per_word"))
        if not isinstance(state["itos"], list) or state["itos"][:1] != [state["unk_token"]]:
            raise ValueError(f"{path} is a corrupt wordpiece tokenizer file: itos must start with the unknown token")
        return cls(state["itos"], state["unk_token"], state["prefix"], state["max_input_chars_per_word"])
