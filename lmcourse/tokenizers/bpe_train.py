"""Training byte-level BPE: a naive trainer and an efficient one that learn the same merges.

Both start from the pre-token counts of the corpus (each distinct pre-token w, as a list of byte ids, with
its count c(w)) and repeat: count every adjacent pair of ids, weighted by c(w); merge the most frequent
pair (a, b) into a new token whose bytes are bytes(a) + bytes(b), left to right in every pre-token.

- ``train_naive`` recounts all pairs after every merge: O(corpus) per merge.
- ``train_fast`` keeps pair -> count and pair -> pre-tokens that contain it, updates both only for the
  pre-tokens a merge touches, and finds the most frequent pair with a heap of (possibly stale) counts.

Tie-break (both trainers, deterministic): among pairs of equal count, take the smallest pair (order(a),
order(b)), where order(id) is the id itself for merged tokens (older tokens first) and, for the 256 single
bytes, their position in GPT-2's byte alphabet (``BYTE_ORDER``: printable bytes first). That is the order
in which Hugging Face ``tokenizers`` numbers the bytes of its ByteLevel BPE, so its trainer breaks ties
the same way. A merge whose bytes are already a token (formed earlier by another pair) gets that token's
id and does not grow the vocabulary, as in Hugging Face ``tokenizers``.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Mapping
from itertools import pairwise

__all__ = ["BYTE_ORDER", "bytes_to_unicode", "merge_word", "train_naive", "train_fast", "PairIndex"]

Pair = tuple[int, int]
Merge = tuple[int, int, int]  # (a, b, id of the merged token)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (how vocab.json and merges.txt spell bytes)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + len(chars) - 188)
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


#: BYTE_ORDER[b] = position of byte b in GPT-2's byte alphabet (= GPT-2's id of that byte).
BYTE_ORDER: list[int] = [0] * 256
for _pos, _b in enumerate(bytes_to_unicode()):
    BYTE_ORDER[_b] = _pos


def _order(i: int) -> int:
    return BYTE_ORDER[i] if i < 256 else i


def merge_word(word: list[int], pair: Pair, new: int) -> list[int]:
    """Replace each occurrence of ``pair`` in ``word``, left to right and without overlaps, by ``new``."""
    a, b = pair
    out, i, n = [], 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _new_token(pair: Pair, vocab: dict[int, bytes], ids: dict[bytes, int]) -> int:
    """The id of the token bytes(a) + bytes(b): the existing one, else the next free id."""
    token = vocab[pair[0]] + vocab[pair[1]]
    if token not in ids:
        ids[token] = len(vocab)
        vocab[len(vocab)] = token
    return ids[token]


def _start(word_counts: Mapping[bytes, int], vocab_size: int):
    if vocab_size < 256:
        raise ValueError(f"a byte-level BPE needs vocab_size >= 256 (the single bytes), got {vocab_size}")
    vocab = {i: bytes([i]) for i in range(256)}
    return [list(w) for w in word_counts], list(word_counts.values()), vocab, {t: i for i, t in vocab.items()}


def train_naive(word_counts: Mapping[bytes, int], vocab_size: int) -> list[Merge]:
    """Merges (a, b, new id) in order, until the vocabulary has ``vocab_size`` tokens or no pair is left."""
    words, counts, vocab, ids = _start(word_counts, vocab_size)
    merges: list[Merge] = []
    while len(vocab) < vocab_size:
        stats: Counter[Pair] = Counter()
        for word, c in zip(words, counts, strict=True):
            for pair in pairwise(word):
                stats[pair] += c
        if not stats:
            break
        pair = max(stats, key=lambda p: (stats[p], -_order(p[0]), -_order(p[1])))
        new = _new_token(pair, vocab, ids)
        merges.append((*pair, new))
        words = [merge_word(word, pair, new) for word in words]
    return merges


class PairIndex:
    """Pair counts of a set of words (lists of ids) with counts, kept up to date as pairs are merged.

    ``pair_counts[(a, b)]`` = sum of c(w) * (occurrences of a b in w); ``where[(a, b)]`` holds the indices of
    the words that contain a b (it may also hold words that no longer do: they are skipped). After
    :meth:`merge`, ``merged`` is the number of occurrences it replaced (weighted by the word counts).
    """

    def __init__(self, words: list[list[int]], counts: list[int]) -> None:
        self.words, self.counts, self.merged = words, counts, 0
        self.pair_counts: defaultdict[Pair, int] = defaultdict(int)
        self.where: defaultdict[Pair, set[int]] = defaultdict(set)
        for i, (word, c) in enumerate(zip(words, counts, strict=True)):
            for pair in pairwise(word):
                self.pair_counts[pair] += c
                self.where[pair].add(i)

    def merge(self, pair: Pair, new: int) -> dict[Pair, int]:
        """Merge ``pair`` into ``new`` in every word that contains it; returns the change of each pair count."""
        delta: defaultdict[Pair, int] = defaultdict(int)
        self.merged = 0
        for i in self.where.pop(pair, ()):
            word = self.words[i]
            merged = merge_word(word, pair, new)
            if len(merged) == len(word):
                continue
            c = self.counts[i]
            self.merged += c * (len(word) - len(merged))
            for p in pairwise(word):
                delta[p] -= c
            for p in pairwise(merged):
                delta[p] += c
                self.where[p].add(i)
            self.words[i] = merged
        for p, d in delta.items():
            if d:
                self.pair_counts[p] += d
                if not self.pair_counts[p]:
                    del self.pair_counts[p]
        return delta


def train_fast(word_counts: Mapping[bytes, int], vocab_size: int) -> list[Merge]:
    """The same merges as :func:`train_naive`, with incremental pair counts and a heap."""
    words, counts, vocab, ids = _start(word_counts, vocab_size)
    index = PairIndex(words, counts)
    entry = lambda p, c: (-c, _order(p[0]), _order(p[1]), p)  # smallest = most frequent, then tie-break
    heap = [entry(p, c) for p, c in index.pair_counts.items()]
    heapq.heapify(heap)
    merges: list[Merge] = []
    while len(vocab) < vocab_size and heap:
        neg_count, _, _, pair = heapq.heappop(heap)
        count = index.pair_counts.get(pair, 0)
        if count != -neg_count:  # stale entry: put it back with its current count
            if count:
                heapq.heappush(heap, entry(pair, count))
            continue
        new = _new_token(pair, vocab, ids)
        merges.append((*pair, new))
        for p, d in index.merge(pair, new).items():
            if d > 0:
                heapq.heappush(heap, entry(p, index.pair_counts[p]))
    return merges
