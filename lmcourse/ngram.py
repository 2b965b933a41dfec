"""n-gram language models: counting, smoothing, perplexity and sampling (chapter 1).

An n-gram model makes the Markov assumption p(w_t | w_<t) = p(w_t | w_{t-n+1}, ..., w_{t-1}): the next
token depends only on the n-1 tokens before it. Training is counting; every estimate below is built from
the counts c(h, w) of a context h followed by a token w.

Sentences are padded as NLTK's ``padded_everygram_pipeline`` pads their start: n-1 ``<s>`` before each
sentence, so that its first token also has a full context; and with one ``</s>`` after it (NLTK appends
n-1), so that the model learns where sentences end. The model predicts every real token and the ``</s>``;
it never predicts ``<s>``. The n-grams it counts are exactly those predictions: at every order k = 1..n,
the k-gram that ends at a predicted token (NLTK's ``everygrams`` would also count k-grams made only of
``<s>``, which are never predicted).

Vocabulary: ``vocab`` is ``["<s>", "</s>", "<unk>"]`` followed by the sorted training tokens seen at least
``min_count`` times. Rarer training tokens, and at evaluation every token outside ``vocab``, are replaced
by ``<unk>``. The model predicts over V = ``vocab`` without ``<s>``. With ``min_count=1`` (the default)
``<unk>`` does not occur in training (unless the text contains it, as WikiText-2 does), so only add-k
smoothing gives it probability; ``min_count=2`` lets the rare training tokens teach every estimator how
often an unknown token occurs.

Smoothing (D = ``discount``, k = ``k``, h = the context, N1+(h .) = number of distinct tokens after h):

- ``"mle"``: c(h, w) / c(h); 0 for a context never seen in training.
- ``"laplace"`` / ``"add-k"``: (c(h, w) + k) / (c(h) + k |V|), with k = 1 for Laplace.
- ``"interpolated"`` (Jelinek-Mercer): sum_j lambda_j p_MLE(w | last j-1 tokens of h), over the orders
  j = 1..n whose context was seen in training, renormalised by the sum of their lambdas.
  ``lambdas`` (one weight per order 1..n) defaults to 1/n each.
- ``"kneser-ney"``: interpolated Kneser-Ney, recursive as NLTK's ``KneserNeyInterpolated``:
  p_j(w | h) = max(c_j(h, w) - D, 0) / c_j(h) + D N1+(h .) / c_j(h) * p_{j-1}(w | h[1:]), where c_n are
  the raw counts and, below the top order, c_j(h, w) = N1+(. h w) is the number of distinct tokens seen
  before "h w" (the continuation count). A context never seen falls through to the order below. The
  recursion ends at the undiscounted unigram level: p_1(w) = N1+(. w) / N1+(. .) (for n = 1, c(w) / N).
"""

from __future__ import annotations

import gc
import math
import random
from bisect import bisect
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import accumulate, chain, islice

import torch

from lmcourse.core import check_positive_int
from lmcourse.metrics import perplexity as _perplexity

__all__ = ["NGramLM", "BOS", "EOS", "UNK", "SMOOTHINGS"]

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
SMOOTHINGS = ("mle", "laplace", "add-k", "interpolated", "kneser-ney")

Ngram = tuple[str, ...]


class NGramLM:
    """An n-gram language model p(w_t | w_{t-n+1..t-1}) over the vocabulary V of its training text.

    >>> lm = NGramLM(2).fit([["cows", "eat", "grass"], ["cows", "eat", "corn"]])
    >>> lm.prob("grass", ["eat"]), lm.prob("cows", ["<s>"])
    (0.5, 1.0)
    """

    def __init__(self, n: int, smoothing: str = "mle", k: float = 1.0, discount: float = 0.75,
                 lambdas: Sequence[float] | None = None, min_count: int = 1) -> None:
        check_positive_int(n, "n", " (1 = unigram, 2 = bigram, ...)")
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"unknown smoothing {smoothing!r}: choose one of {', '.join(SMOOTHINGS)}")
        if smoothing == "add-k" and not k > 0:
            raise ValueError(f"add-k smoothing needs k > 0 (k = 1 is Laplace), got k={k!r}")
        if smoothing == "laplace" and k != 1:
            raise ValueError(f"smoothing='laplace' is add-one; for k={k!r} use smoothing='add-k'")
        if smoothing == "kneser-ney" and not 0 < discount < 1:
            raise ValueError(f"the Kneser-Ney discount must be strictly between 0 and 1, got discount={discount!r}")
        if lambdas is None:
            lambdas = [1 / n] * n
        if smoothing == "interpolated" and (len(lambdas) != n or min(lambdas) <= 0
                                            or abs(math.fsum(lambdas) - 1) > 1e-9):
            raise ValueError(f"lambdas must be n = {n} positive weights (orders 1..{n}) that sum to 1, "
                             f"got {list(lambdas)}")
        check_positive_int(min_count, "min_count")
        self.n, self.smoothing, self.min_count = n, smoothing, min_count
        self.k = float(k)
        self.discount = float(discount)
        self.lambdas = [float(x) for x in lambdas]
        self.vocab: list[str] = []  # ["<s>", "</s>", "<unk>", sorted training tokens]; filled by fit
        self._known: set[str] = set()
        # Per order j = 1..n (index j-1), the counts c_j the estimator uses, by context:
        # h -> (sum of c_j(h, w) over w, number of distinct w after h, {w: c_j(h, w)}).
        self._tables: list[dict[Ngram, tuple[int, int, dict[str, int]]]] = []
        self._prob: Callable[[str, Ngram], float] = {
            "mle": self._p_mle, "laplace": self._p_add_k, "add-k": self._p_add_k,
            "interpolated": self._p_interpolated, "kneser-ney": self._p_kneser_ney}[smoothing]

    def __repr__(self) -> str:
        return f"NGramLM(n={self.n}, smoothing={self.smoothing!r}, |vocab|={len(self.vocab)})"

    # ------------------------------------------------------------------ training: counting
    def fit(self, sentences: Iterable[Sequence[str]]) -> NGramLM:
        """Count the n-grams of ``sentences`` (each a sequence of tokens; a string is a sequence of characters)."""
        sentences = _checked(sentences)
        if not sentences:
            raise ValueError("cannot fit on an empty corpus: pass at least one sentence (a sequence of tokens)")
        freq = Counter(chain.from_iterable(sentences))
        known = {w for w, c in freq.items() if c >= self.min_count} - {UNK}
        self.vocab = [BOS, EOS, UNK, *sorted(known)]
        self._known = set(self.vocab)
        self._tables = [{} for _ in range(self.n)]
        with _no_gc():
            counts: dict[Ngram, int] = _count(self._pad(sentences), self.n)
            self._tables[-1] = _by_context(counts)
            for j in range(self.n - 1, 0, -1) if self.smoothing in ("interpolated", "kneser-ney") else ():
                if self.smoothing == "kneser-ney":  # continuation counts N1+(. h w): distinct (j+1)-grams ending in h w
                    counts = Counter(g[1:] for g in counts)
                else:  # raw counts c(h, w) = sum over x of c(x h, w): each prediction once per order
                    lower: dict[Ngram, int] = {}
                    for g, c in counts.items():
                        lower[g[1:]] = lower.get(g[1:], 0) + c
                    counts = lower
                self._tables[j - 1] = _by_context(counts)
        return self

    def _pad(self, sentences: list[Sequence[str]]) -> list[str]:
        """One stream of tokens: each sentence mapped to the vocabulary, with n-1 <s> before it and </s> after."""
        pad, known, stream = [BOS] * (self.n - 1), self._known, []
        for s in sentences:
            stream += pad
            stream += s if known.issuperset(s) else [w if w in known else UNK for w in s]
            stream.append(EOS)
        return stream

    # ------------------------------------------------------------------ probabilities
    def prob(self, word: str, context: Sequence[str]) -> float:
        """p(word | context), where ``context`` is the n-1 tokens before ``word`` (``<s>`` at a sentence start)."""
        h = self._context(context)
        if word == BOS:
            return 0.0  # <s> is padding: it is never predicted
        return self._prob(word if word in self._known else UNK, h)

    def logprob(self, word: str, context: Sequence[str]) -> float:
        """log p(word | context) in nats; -inf where the probability is 0."""
        p = self.prob(word, context)
        return math.log(p) if p > 0 else -math.inf

    def _context(self, context: Sequence[str]) -> Ngram:
        self._check_fitted()
        context = tuple(context)  # a string is a sequence of characters
        if len(context) != self.n - 1:
            raise ValueError(f"a {self.n}-gram model needs a context of n-1 = {self.n - 1} tokens "
                             f"(pad a sentence start with {BOS!r}), got {len(context)}: {context!r}")
        return tuple(w if w in self._known else UNK for w in context)

    def _check_fitted(self) -> None:
        if not self.vocab:
            raise ValueError("this NGramLM has not been fitted: call fit(sentences) first")

    def _top(self, word: str, h: Ngram) -> tuple[int, int]:
        """(c(h, word), c(h)) at the top order n."""
        entry = self._tables[-1].get(h)
        return (entry[2].get(word, 0), entry[0]) if entry else (0, 0)

    def _p_mle(self, word: str, h: Ngram) -> float:
        c, total = self._top(word, h)
        return c / total if total else 0.0

    def _p_add_k(self, word: str, h: Ngram) -> float:
        c, total = self._top(word, h)
        return (c + self.k) / (total + self.k * (len(self.vocab) - 1))  # |V| excludes <s>

    def _p_interpolated(self, word: str, h: Ngram) -> float:
        num = den = 0.0
        for j, (table, lam) in enumerate(zip(self._tables, self.lambdas, strict=True), start=1):
            entry = table.get(h[len(h) - j + 1:])  # the last j-1 tokens of the context
            if entry is None:
                break  # an unseen context: every longer context is unseen too
            num += lam * entry[2].get(word, 0) / entry[0]
            den += lam
        return num / den

    def _p_kneser_ney(self, word: str, h: Ngram) -> float:
        p, d = 0.0, self.discount
        for j, table in enumerate(self._tables, start=1):  # from the unigram level up
            entry = table.get(h[len(h) - j + 1:])
            if entry is None:
                break
            total, distinct, followers = entry
            c = followers.get(word, 0)
            p = c / total if j == 1 else (max(c - d, 0.0) + d * distinct * p) / total
        return p

    # ------------------------------------------------------------------ evaluation
    def nll(self, sentences: Iterable[Sequence[str]]) -> tuple[float, int]:
        """(total negative log-likelihood in nats, number of predicted tokens) of ``sentences``.

        Every real token and each sentence's ``</s>`` is predicted once (``<s>`` never is), as NLTK's
        ``perplexity`` over the padded n-grams counts them. The total is ``inf`` if any probability is 0.
        """
        self._check_fitted()
        sentences = _checked(sentences)
        with _no_gc():
            grams = _count(self._pad(sentences), self.n)
        n_pred = sum(grams.values())
        if not n_pred:
            raise ValueError("cannot evaluate an empty list of sentences")
        terms = []
        for g, c in grams.items():  # each distinct n-gram once, weighted by its count
            p = self._prob(g[-1], g[:-1])
            if p <= 0:
                return math.inf, n_pred
            terms.append(c * math.log(p))
        return -math.fsum(terms), n_pred

    def num_counts(self) -> int:
        """The counts the model stores: one c_j(h, w) per distinct (context, word) pair, over every order j."""
        self._check_fitted()
        return sum(len(words) for table in self._tables for _, _, words in table.values())

    def perplexity(self, sentences: Iterable[Sequence[str]]) -> float:
        """exp(mean negative log-likelihood per predicted token); ``inf`` if any prediction has probability 0."""
        total, n_pred = self.nll(sentences)
        return _perplexity(total / n_pred)

    # ------------------------------------------------------------------ sampling
    def generate(self, max_tokens: int = 100, seed: int | random.Random | torch.Generator | None = None,
                 prompt: Sequence[str] = ()) -> list[str]:
        """Sample w_t ~ p(. | w_{t-n+1..t-1}) one token at a time, after ``prompt``, from the sentence start.

        Stops at ``</s>`` or after ``max_tokens`` tokens; returns the sampled tokens (without ``prompt``,
        padding and ``</s>``). ``seed`` is an int, a ``random.Random`` or a ``torch.Generator``:
        the same seed gives the same sample.
        """
        self._check_fitted()
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        uniform = _uniform(seed)
        history = [BOS] * (self.n - 1) + [w if w in self._known else UNK for w in prompt]
        out: list[str] = []
        while len(out) < max_tokens:
            h = tuple(history[len(history) - self.n + 1:]) if self.n > 1 else ()
            mixture = self._mixture(h)
            if not mixture:
                raise ValueError(f"the model gives every token probability 0 after {h!r} (a context never "
                                 "seen in training): use a smoothed model or another prompt")
            tokens = mixture[_pick(uniform, [weight for weight, _ in mixture])][1]
            if tokens is None:  # the uniform distribution over V
                w = self.vocab[1 + int(uniform() * (len(self.vocab) - 1))]
            else:
                w = list(tokens)[_pick(uniform, list(tokens.values()))]
            if w == EOS:
                break
            out.append(w)
            history.append(w)
        return out

    def _mixture(self, h: Ngram) -> list[tuple[float, dict[str, float] | None]]:
        """p(. | h) as a mixture sum_i weight_i q_i: [(weight_i, {w: q_i(w) up to a constant}), ...].

        ``None`` stands for the uniform distribution over V. Sampling a component and then a token from it
        costs the number of tokens seen after h, not |V| probabilities.
        """
        top = self._tables[-1].get(h)
        if self.smoothing == "mle":
            return [(1.0, top[2])] if top else []
        if self.smoothing in ("laplace", "add-k"):  # (c(h, w) + k) / (c(h) + k|V|): counts, then uniform
            total, prior = (top[0] if top else 0), self.k * (len(self.vocab) - 1)
            return ([(total / (total + prior), top[2])] if top else []) + [(prior / (total + prior), None)]
        seen = [(j, e) for j, table in enumerate(self._tables, 1) if (e := table.get(h[len(h) - j + 1:]))]
        if self.smoothing == "interpolated":
            den = sum(self.lambdas[j - 1] for j, _ in seen)
            return [(self.lambdas[j - 1] / den, e[2]) for j, e in seen]
        mixture, rest, d = [], 1.0, self.discount  # Kneser-Ney, from the highest order down
        for j, (total, distinct, followers) in reversed(seen):
            gamma = d * distinct / total if j > 1 else 0.0  # the mass left for the order below
            mixture.append((rest * (1 - gamma), {w: c - d for w, c in followers.items()} if j > 1 else followers))
            rest *= gamma
        return mixture


def _pick(uniform: Callable[[], float], weights: list[float]) -> int:
    """Index i drawn with probability weights[i] / sum(weights)."""
    cdf = list(accumulate(weights))
    return min(bisect(cdf, uniform() * cdf[-1]), len(weights) - 1)


def _checked(sentences: Iterable[Sequence[str]]) -> list[Sequence[str]]:
    """The sentences as a list, refusing the padding symbols (the model adds them itself)."""
    if isinstance(sentences, str):
        raise ValueError("expected a list of sentences, got one string: wrap it as [text] to use it as one "
                         "sentence of characters, or split it into sentences (e.g. text.split('\\n'))")
    sentences = list(sentences)
    for s in sentences:
        if not isinstance(s, str) and (BOS in s or EOS in s):  # a string's tokens are single characters
            raise ValueError(f"a sentence contains {BOS!r} or {EOS!r}: pass unpadded sentences, "
                             "the model adds the padding itself")
    return sentences


def _by_context(counts: dict[Ngram, int]) -> dict[Ngram, tuple[int, int, dict[str, int]]]:
    """Regroup n-gram counts by context h: h -> (sum of the counts, number of distinct tokens, {w: count})."""
    table: dict[Ngram, list] = {}
    for g, c in counts.items():
        entry = table.get(g[:-1])
        if entry is None:
            table[g[:-1]] = [c, 1, {g[-1]: c}]
        else:
            entry[0] += c
            entry[1] += 1
            entry[2][g[-1]] = c
    return {h: tuple(entry) for h, entry in table.items()}


def _count(stream: list[str], j: int) -> Counter[Ngram]:
    """Counts of the j-grams of ``stream`` that end at a predicted token (not at the <s> padding).

    With n-1 <s> before each sentence (j <= n), such a j-gram never crosses a sentence boundary.
    """
    grams = Counter(zip(*(islice(stream, i, None) for i in range(j)), strict=False))  # shifted copies differ in length
    for g in [g for g in grams if g[-1] == BOS]:
        del grams[g]
    return grams


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: counting makes millions of small containers, none in a cycle,
    which would trigger full collections over and over (a large part of the time of ``fit``)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _uniform(seed: int | random.Random | torch.Generator | None) -> Callable[[], float]:
    """A source of uniform numbers in [0, 1) from a seed, a ``random.Random`` or a ``torch.Generator``."""
    if isinstance(seed, torch.Generator):
        return lambda: torch.rand((), generator=seed).item()
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    return rng.random
