"""Byte-level Byte-Pair Encoding (BPE) as in GPT-2 (Sennrich et al., 2016; Radford et al., 2019).

The tokens are byte strings. Ids 0..255 of a trained tokenizer are the single bytes (id = byte value),
ids 256.. the merged tokens in the order they were learned, then the special tokens. Encoding:

1. split the text into pre-tokens with the regex ``pattern`` (GPT-2's by default), so that merges never
   cross a word and its leading space, digits and letters, ...;
2. encode each pre-token as UTF-8 bytes and, while two adjacent parts x y have x + y in the vocabulary,
   merge the adjacent pair whose concatenation has the lowest rank (id), leftmost first: tokens learned
   earlier are merged first. This is tiktoken's rule: given the same ranks and pattern, the ids are
   tiktoken's (including its shortcut: a pre-token that is itself a token is encoded as that token).

Decoding concatenates the bytes of the tokens and decodes them as UTF-8, so ``decode(encode(s)) == s``
for every string ``s``. Encodings of pre-tokens are cached: text repeats its words.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import regex

from lmcourse.core import check_int_at_least, decode_ids
from lmcourse.tokenizers._io import load_state, save_state
from lmcourse.tokenizers.bpe_train import bytes_to_unicode, train_fast, train_naive

__all__ = ["BPETokenizer", "GPT2_PATTERN"]

#: GPT-2's pre-tokenisation regex: contractions, words, numbers, other symbols (each with one leading space).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_CACHE_SIZE = 200_000
_NONE = math.inf  # the rank of a pair that is not a token


class BPETokenizer:
    """A byte-level BPE tokenizer: ``ranks`` maps each token's bytes to its id; ``special_tokens`` str -> id.

    >>> tok = BPETokenizer().train("low lower lowest " * 10, vocab_size=262)
    >>> tok.merges[:3], [tok.decode([i]) for i in tok.encode(" lowest")]
    ([(b'l', b'o'), (b'lo', b'w'), (b' ', b'low')], [' lowe', 'st'])
    """

    def __init__(self, pattern: str = GPT2_PATTERN, special_tokens: Iterable[str] = ()) -> None:
        try:
            self._regex = regex.compile(pattern)
        except (regex.error, TypeError) as err:
            raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {err}") from None
        self.pattern = pattern
        specials = list(special_tokens)
        if any(not isinstance(s, str) or not s for s in specials) or len(set(specials)) != len(specials):
            raise ValueError(f"special tokens must be distinct non-empty strings, got {specials!r}")
        self._set({bytes([i]): i for i in range(256)}, {s: 256 + k for k, s in enumerate(specials)}, [])

    def _set(self, ranks: dict[bytes, int], special_tokens: dict[str, int], merges: list[tuple[bytes, bytes]]) -> None:
        self.ranks, self.special_tokens, self.merges = ranks, special_tokens, merges
        self._decoder = {i: t for t, i in ranks.items()} | {i: s.encode() for s, i in special_tokens.items()}
        if len(self._decoder) != len(ranks) + len(special_tokens):
            raise ValueError("two tokens share an id: every token and special token needs its own id")
        self._cache: dict[str, list[int]] = {}
        self._special_re: dict[tuple[str, ...], regex.Pattern] = {}

    @property
    def vocab_size(self) -> int:
        return max(self._decoder) + 1

    def mergeable_ranks(self) -> dict[bytes, int]:
        """Token bytes -> id for every ordinary token (what ``tiktoken.Encoding`` calls mergeable ranks)."""
        return dict(self.ranks)

    def train(self, text: str, vocab_size: int, trainer: str = "fast") -> BPETokenizer:
        """Learn merges from ``text`` until there are ``vocab_size`` tokens (bytes, merged tokens, special tokens).

        ``trainer`` is ``"fast"`` (incremental pair counts) or ``"naive"`` (recount after every merge); both
        learn the same merges (see :mod:`lmcourse.tokenizers.bpe_train`). Special tokens in ``text`` are cut
        out before counting. Stops early, with a smaller vocabulary, when no pair is left to merge.
        """
        specials = sorted(self.special_tokens, key=self.special_tokens.get)
        check_int_at_least(vocab_size, 256 + len(specials), "vocab_size",
                           f" (256 bytes + {len(specials)} special tokens)")
        if trainer not in ("fast", "naive"):
            raise ValueError(f"unknown trainer {trainer!r}: choose 'fast' or 'naive'")
        if not text:
            raise ValueError("cannot train a BPETokenizer on an empty text")
        counts = Counter(p.encode() for part in self._split_specials(text, specials)[::2]
                         for p in self._regex.findall(part))
        merges = (train_fast if trainer == "fast" else train_naive)(counts, vocab_size - len(specials))
        vocab = {i: bytes([i]) for i in range(256)}
        for a, b, new in merges:
            vocab[new] = vocab[a] + vocab[b]
        ranks = {t: i for i, t in vocab.items()}
        special_ids = {s: len(ranks) + k for k, s in enumerate(specials)}
        self._set(ranks, special_ids, [(vocab[a], vocab[b]) for a, b, _ in merges])
        return self

    def _split_specials(self, text: str, specials: Iterable[str]) -> list[str]:
        """[text, special, text, special, ..., text]: ``text`` cut at every occurrence of the ``specials``."""
        key = tuple(sorted(specials, key=lambda s: (-len(s), s)))
        if not key:
            return [text]
        if key not in self._special_re:
            self._special_re[key] = regex.compile("(" + "|".join(regex.escape(s) for s in key) + ")")
        return self._special_re[key].split(text)

    def encode(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        """Token ids w_1..w_T of ``text``.

        A special token in ``text`` becomes its id only if it is in ``allowed_special`` (or that is ``"all"``);
        otherwise it is ordinary text, encoded byte by byte like any other.
        """
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise ValueError(f"unknown special tokens {sorted(unknown)}: this tokenizer has "
                             f"{sorted(self.special_tokens) or 'none'}")
        parts = self._split_specials(text, allowed)
        ids = self.encode_ordinary(parts[0])
        for k in range(1, len(parts), 2):
            ids.append(self.special_tokens[parts[k]])
            ids.extend(self.encode_ordinary(parts[k + 1]))
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of ``text``, treating special tokens as ordinary text."""
        ids: list[int] = []
        cache = self._cache
        for piece in self._regex.findall(text):
            tokens = cache.get(piece)
            if tokens is None:
                if len(cache) >= _CACHE_SIZE:
                    cache.clear()
                try:
                    tokens = cache[piece] = self._encode_piece(piece.encode())
                except UnicodeEncodeError:
                    raise ValueError(f"text {piece!r} has a lone surrogate, which UTF-8 cannot encode") from None
            ids.extend(tokens)
        return ids

    def _encode_piece(self, piece: bytes) -> list[int]:
        """Merge the bytes of one pre-token by rank (lowest rank first, leftmost on ties)."""
        ranks = self.ranks
        if piece in ranks:
            return [ranks[piece]]
        parts = [piece[i:i + 1] for i in range(len(piece))]
        pair_ranks = [ranks.get(a + b, _NONE) for a, b in zip(parts, parts[1:], strict=False)]  # rank of parts i, i+1
        while pair_ranks:
            rank = min(pair_ranks)
            if rank == _NONE:
                break
            i = pair_ranks.index(rank)  # the leftmost pair with the lowest rank
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
            del pair_ranks[i]
            if i > 0:
                pair_ranks[i - 1] = ranks.get(parts[i - 1] + parts[i], _NONE)
            if i < len(pair_ranks):
                pair_ranks[i] = ranks.get(parts[i] + parts[i + 1], _NONE)
        return [ranks[p] for p in parts]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of the tokens ``ids``, concatenated."""
        try:
            return b"".join(self._decoder[i] for i in decode_ids(ids, self.vocab_size))
        except KeyError as err:  # an unused id below the largest one
            raise ValueError(f"id {err.args[0]} is not in the vocabulary") from None

    def decode(self, ids: Iterable[int]) -> str:
        """The text of the tokens ``ids`` (invalid UTF-8, from a partial sequence, becomes U+FFFD)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def save(self, path: str | os.PathLike) -> None:
        """Write pattern, ranks, special tokens and merges as JSON (bytes in hex), atomically."""
        save_state(path, "bpe", {"pattern": self.pattern, "special_tokens": self.special_tokens,
                                 "ranks": [[t.hex(), i] for t, i in self.ranks.items()],
                                 "merges": [[a.hex(), b.hex()] for a, b in self.merges]})

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        """Read a tokenizer written by :meth:`save`."""
        state = load_state(path, "bpe", ("pattern", "special_tokens", "ranks", "merges"))
        tok = cls(state["pattern"])
        try:
            ranks = {bytes.fromhex(t): int(i) for t, i in state["ranks"]}
            merges = [(bytes.fromhex(a), bytes.fromhex(b)) for a, b in state["merges"]]
            specials = {str(s): int(i) for s, i in state["special_tokens"].items()}
        except (TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"{path} is a corrupt bpe tokenizer file: {err}") from None
        tok._set(ranks, specials, merges)
        return tok

    @classmethod
    def from_gpt2(cls, vocab_json: str | os.PathLike, merges_txt: str | os.PathLike) -> BPETokenizer:
        """GPT-2's tokenizer from its ``vocab.json`` and ``merges.txt``, keeping GPT-2's ids.

        The files spell bytes through GPT-2's byte-to-unicode table. Ranks: the 256 bytes in that table's
        order, then one per merge in file order (as tiktoken builds them); each must equal the id in
        ``vocab.json``. A vocab.json entry that is no merge (``<|endoftext|>``) becomes a special token.
        """
        decoder = {c: b for b, c in bytes_to_unicode().items()}
        spelled = lambda s: bytes(decoder[c] for c in s)
        ranks = {bytes([b]): i for i, b in enumerate(decoder.values())}
        merges, line = [], ""
        try:
            vocab = json.loads(Path(vocab_json).read_text(encoding="utf-8"))
            for line in Path(merges_txt).read_text(encoding="utf-8").splitlines():
                if line.startswith("#version") or not line.strip():
                    continue
                a, b = map(spelled, line.split(" "))
                merges.append((a, b))
                ranks.setdefault(a + b, len(ranks))
        except (ValueError, KeyError, UnicodeDecodeError) as err:
            raise ValueError(f"{vocab_json} and {merges_txt} are not GPT-2 tokenizer files ({err!r}; "
                             f"merge line {line!r})") from None
        if not isinstance(vocab, dict):
            raise ValueError(f"{vocab_json} must map token strings to ids")
        specials = {}
        for token, i in vocab.items():
            b = spelled(token) if all(c in decoder for c in token) else None
            if b in ranks and ranks[b] != i:
                raise ValueError(f"{vocab_json} gives {token!r} id {i} but merges.txt gives rank {ranks[b]}")
            if b not in ranks:
                specials[token] = i
        if len(ranks) + len(specials) != len(vocab):
            raise ValueError(f"{merges_txt} has merges that are not in {vocab_json}: these files do not match")
        tok = cls()
        tok._set(ranks, specials, merges)
        return tok
