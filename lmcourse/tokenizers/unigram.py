"""The Unigram language-model tokenizer (Kudo, 2018), the model behind SentencePiece.

Each piece x of the vocabulary V has a probability p(x); a segmentation x_1..x_k of a word has probability
p(x_1) ... p(x_k). Encoding picks the most probable segmentation (Viterbi, dynamic programming over the end
positions of the word). Training alternates:

- EM: the E-step computes, with the forward-backward algorithm over all segmentations of each word, the
  expected number of times each piece is used; the M-step sets p(x) to its share of those counts. Each EM
  step never decreases the likelihood of the corpus, sum_w c(w) log sum_{segmentations s of w} p(s).
- pruning: the loss of a piece is how much the likelihood drops if its uses are re-segmented with the rest
  of V, approximated as count(x) * (log p(x) - log p(best segmentation of x without x)); the pieces with the
  smallest loss are dropped (``shrink`` keeps 75% per round). count(x) is the number of times x is used in
  the Viterbi segmentations of the corpus. Single characters are never dropped.

The seed vocabulary is every character plus the most frequent substrings of the pre-tokens (GPT-2's regex,
so a word keeps its leading space, as SentencePiece keeps "▁"). A character never seen in training is
encoded as ``<unk>`` (id 0); decoding concatenates the pieces, so ``decode(encode(s)) == s`` when every
character of ``s`` was seen.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable

import regex

from lmcourse.core import check_int_at_least, check_positive_int, decode_ids, is_number
from lmcourse.tokenizers._io import load_state, save_state
from lmcourse.tokenizers.bpe import GPT2_PATTERN

__all__ = ["UnigramTokenizer", "viterbi", "em_step", "UNK"]

UNK = "<unk>"
_PRE = regex.compile(GPT2_PATTERN)


def viterbi(word: str, logp: dict[str, float], max_len: int, unk_logp: float = -1e9,
            whole: bool = True) -> tuple[list[str], float]:
    """The most probable segmentation of ``word`` and its log-probability (without ``word`` itself as one
    piece if ``whole`` is False).

    best[j] = max over i < j of best[i] + log p(word[i:j]); a character outside V costs ``unk_logp``.
    """
    n = len(word)
    best, back = [0.0] + [-math.inf] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(max(0, j - max_len), j):
            lp = logp.get(word[i:j], unk_logp if j == i + 1 else None) if whole or (i, j) != (0, n) else None
            if lp is not None and best[i] + lp > best[j]:
                best[j], back[j] = best[i] + lp, i
    pieces, j = [], n
    while j > 0:
        pieces.append(word[back[j]:j])
        j = back[j]
    return pieces[::-1], best[n]


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def em_step(word_counts: dict[str, int], logp: dict[str, float], max_len: int) -> tuple[dict[str, float], float]:
    """One EM step: new log p(x) from the expected piece counts, and the log-likelihood under the old ``logp``.

    Every word must be segmentable with ``logp`` (all its characters in V).
    """
    expected: Counter[str] = Counter()
    loglik = 0.0
    for word, c in word_counts.items():
        n = len(word)
        edges = [(i, j, word[i:j]) for j in range(1, n + 1) for i in range(max(0, j - max_len), j)
                 if word[i:j] in logp]
        alpha, beta = [0.0] + [-math.inf] * n, [-math.inf] * n + [0.0]
        for i, j, x in edges:  # sorted by j: alpha[i] is final when it is used
            alpha[j] = _logaddexp(alpha[j], alpha[i] + logp[x])
        for i, j, x in reversed(edges):  # sorted by decreasing j, so beta[j] is final when used (i < j)
            beta[i] = _logaddexp(beta[i], logp[x] + beta[j])
        if alpha[n] == -math.inf:
            raise ValueError(f"the word {word!r} cannot be segmented with this vocabulary")
        loglik += c * alpha[n]
        for i, j, x in edges:
            expected[x] += c * math.exp(alpha[i] + logp[x] + beta[j] - alpha[n])
    total = sum(expected.values())
    return {x: math.log(e / total) for x, e in expected.items() if e > 0}, loglik


class UnigramTokenizer:
    """A Unigram tokenizer: ``logp`` maps each piece to its log-probability; ids: ``<unk>`` then ``pieces``.

    >>> tok = UnigramTokenizer({"h": -3.0, "e": -3.0, "l": -3.0, "o": -3.0, "hell": -2.0, "lo": -2.5})
    >>> [tok.pieces[i] for i in tok.encode("hello")]
    ['hell', 'o']
    """

    def __init__(self, logp: dict[str, float] | None = None, max_len: int = 16) -> None:
        self.logp = dict(logp or {})
        self.max_len = max(max_len, *map(len, self.logp)) if self.logp else max_len
        self.pieces: list[str] = [UNK, *sorted(self.logp, key=lambda x: (-self.logp[x], x))]
        self.stoi = {x: i for i, x in enumerate(self.pieces)}
        self._cache: dict[str, list[int]] = {}
        self.history: list[float] = []  # the log-likelihood before each EM step of train()

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def train(self, text: str, vocab_size: int, seed_factor: int = 4, shrink: float = 0.75,
              em_steps: int = 2) -> UnigramTokenizer:
        """Learn ``vocab_size`` - 1 pieces (plus ``<unk>``) from ``text``; ``self.history`` gets the log-likelihoods."""
        word_counts = Counter(_PRE.findall(text))
        chars = sorted({ch for w in word_counts for ch in w})
        if not chars:
            raise ValueError("cannot train a UnigramTokenizer on an empty text")
        check_int_at_least(vocab_size, len(chars) + 1, "vocab_size",
                           f" (<unk> and the {len(chars)} characters of the text)")
        if not (is_number(shrink) and 0 < shrink < 1):
            raise ValueError(f"shrink must be in (0, 1), the share of pieces each round keeps, got {shrink!r}")
        check_positive_int(seed_factor, "seed_factor")
        check_positive_int(em_steps, "em_steps")
        subs: Counter[str] = Counter()
        for w, c in word_counts.items():
            for i in range(len(w)):
                for j in range(i + 1, min(len(w), i + self.max_len) + 1):
                    subs[w[i:j]] += c
        seed = set(chars) | {x for x, _ in subs.most_common(seed_factor * vocab_size)}
        total = sum(subs[x] for x in seed)
        logp = {x: math.log(subs[x] / total) for x in seed}
        self.history = []
        while True:
            for _ in range(em_steps):
                logp, loglik = em_step(word_counts, logp, self.max_len)
                self.history.append(loglik)
            if len(logp) <= vocab_size - 1:
                break
            logp = self._prune(logp, word_counts, max(vocab_size - 1, int(shrink * len(logp))), set(chars))
        history = self.history
        self.__init__(logp, self.max_len)
        self.history = history
        return self

    def _prune(self, logp: dict[str, float], word_counts: dict[str, int], keep: int,
               chars: set[str]) -> dict[str, float]:
        """Keep the ``keep`` pieces whose removal would lose the most likelihood (and every character)."""
        uses: Counter[str] = Counter()
        for w, c in word_counts.items():
            for x in viterbi(w, logp, self.max_len)[0]:
                uses[x] += c
        loss = {}
        for x, lp in logp.items():
            if x not in chars:
                alt = viterbi(x, logp, self.max_len, whole=False)[1]
                loss[x] = uses[x] * (lp - alt)
        kept = sorted(loss, key=lambda x: (-loss[x], x))[:keep - len(chars)]
        return {x: logp[x] for x in [*chars, *kept] if x in logp}

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``: the Viterbi segmentation of each pre-token (unseen characters -> 0)."""
        if not self.logp:
            raise ValueError("this UnigramTokenizer has no vocabulary: call train(text, vocab_size) first")
        ids: list[int] = []
        for word in _PRE.findall(text):
            if word not in self._cache:
                pieces = viterbi(word, self.logp, self.max_len, unk_logp=min(self.logp.values()) - 10)[0]
                self._cache[word] = [self.stoi.get(x, 0) for x in pieces]
            ids.extend(self._cache[word])
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The concatenated pieces (``<unk>`` for id 0)."""
        return "".join(self.pieces[i] for i in decode_ids(ids, self.vocab_size))

    def save(self, path: str | os.PathLike) -> None:
        """Write the pieces and their log-probabilities as JSON, atomically."""
        save_state(path, "unigram", {"logp": self.logp, "max_len": self.max_len})

    @classmethod
    def load(cls, path: str | os.PathLike) -> UnigramTokenizer:
        """Read a tokenizer written by :meth:`save`."""
        state = load_state(path, "unigram", ("logp", "max_len"))
        if not isinstance(state["logp"], dict) or not all(isinstance(v, float) for v in state["logp"].values()):
            raise ValueError(f"{path} is a corrupt unigram tokenizer file: logp must map pieces to floats")
        return cls(state["logp"], state["max_len"])
