"""Tests for lmcourse.ngram: counting, the MLE, smoothing, perplexity against NLTK, sampling, bad input."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.lm import MLE, KneserNeyInterpolated, Laplace, Lidstone, Vocabulary
from nltk.lm.preprocessing import padded_everygram_pipeline
from nltk.util import everygrams, ngrams, pad_sequence

from lmcourse.ngram import BOS, EOS, SMOOTHINGS, UNK, NGramLM

# ---------------------------------------------------------------------------- helpers


def padded(sentence, n):
    """NLTK's left padding (n-1 <s>) and one </s> at the end: the course's convention."""
    return [*pad_sequence(sentence, n, pad_left=True, left_pad_symbol=BOS), EOS]


def nltk_model(cls, n, train, min_count=1, **kwargs):
    """An NLTK model fitted on the same padded data as ``NGramLM(n)``.

    The training n-grams are NLTK's ``everygrams`` of each padded sentence, without the ones that end at
    ``<s>`` (``(<s>,)``, ``(<s>, <s>)``, ...): those are never predictions, and ``NGramLM`` counts each
    prediction once per order. Lidstone/Laplace divide by ``len(vocab)``: we leave ``<s>`` (never
    predicted) out of their vocabulary, so that NLTK looks it up as its unknown label; that is the same
    model as long as the training text has no ``<unk>`` and the evaluated contexts no unknown word.
    """
    tokens = [w for s in train for w in padded(s, n)]
    if cls in (Laplace, Lidstone):
        tokens = [w for w in tokens if w != BOS]
    lm = cls(order=n, vocabulary=Vocabulary(tokens, unk_cutoff=min_count, unk_label=UNK), **kwargs)
    lm.fit([[g for g in everygrams(padded(s, n), max_len=n) if g[-1] != BOS] for s in train])
    return lm


def nltk_perplexity(lm, n, sentences):
    """NLTK's perplexity over the n-grams of the padded sentences (one per real token and per </s>)."""
    return lm.perplexity([g for s in sentences for g in ngrams(padded(s, n), n)])


def seen_contexts(lm, sentences):
    """The contexts (n-1 tokens, mapped to the vocabulary) of every prediction in ``sentences``."""
    n, known = lm.n, set(lm.vocab)
    out = set()
    for s in sentences:
        p = [BOS] * (n - 1) + [w if w in known else UNK for w in s] + [EOS]
        out |= {tuple(p[t - n + 1:t]) for t in range(n - 1, len(p))}
    return out


def random_corpus(seed, n_sentences, alphabet="abcde", max_len=7):
    rng = random.Random(seed)
    return [[rng.choice(alphabet) for _ in range(rng.randint(0, max_len))] for _ in range(n_sentences)]


COWS = {"corn": 4, "grass": 3, "hay": 2, "clover": 1, "silage": 1}  # what follows "cows eat": 11 in all
COWS_CORPUS = [["cows", "eat", w] for w, c in COWS.items() for _ in range(c)] + [["pigs", "eat", "corn"]]

# ---------------------------------------------------------------------------- counting and the MLE


def test_mle_is_the_count_ratio_on_a_hand_example():
    lm = NGramLM(3).fit(COWS_CORPUS)
    for w, c in COWS.items():
        assert lm.prob(w, ["cows", "eat"]) == c / 11
    assert lm.prob("pizza", ["cows", "eat"]) == 0.0 and lm.logprob("pizza", ["cows", "eat"]) == -math.inf
    assert lm.prob("cows", [BOS, BOS]) == 11 / 12 and lm.prob(EOS, ["eat", "hay"]) == 1.0
    assert lm.prob("corn", ["pigs", "eat"]) == 1.0
    assert lm.prob("corn", ["cows", "sleep"]) == 0.0  # an unseen context: the MLE is undefined, we give 0
    bigram = NGramLM(2).fit(COWS_CORPUS)
    assert bigram.prob("corn", ["eat"]) == 5 / 12  # "eat corn" 5 times out of 12 "eat"
    unigram = NGramLM(1).fit(COWS_CORPUS)
    assert unigram.prob("eat", []) == 12 / 48 and unigram.prob(EOS, []) == 12 / 48  # 36 words + 12 </s>


def test_vocabulary_and_unk_policy():
    lm = NGramLM(2, min_count=2).fit([["a", "b", "a"], ["a", "c"], ["b"]])
    assert lm.vocab == [BOS, EOS, UNK, "a", "b"]  # "c" was seen once: it became <unk>
    assert lm.prob(UNK, ["a"]) == 1 / 3  # "a c" counts as "a <unk>"
    assert lm.prob("zebra", ["a"]) == lm.prob(UNK, ["a"])  # unknown at evaluation: <unk> too
    assert lm.prob("b", ["zebra"]) == lm.prob("b", [UNK])
    assert lm.prob(BOS, ["a"]) == 0.0  # <s> is never predicted
    assert NGramLM(1).fit([["a", "b"]]).vocab == [BOS, EOS, UNK, "a", "b"]  # <unk> is always there
    assert NGramLM(1).fit([["a", UNK]]).vocab == [BOS, EOS, UNK, "a"]  # a text may already contain <unk>


def test_a_string_is_a_sentence_of_characters():
    a, b = NGramLM(3, "kneser-ney").fit(["hello", "help"]), NGramLM(3, "kneser-ney").fit([list("hello"), list("help")])
    assert a.vocab == b.vocab and a.prob("l", "he") == b.prob("l", ["h", "e"]) > 0
    assert a.perplexity(["hell"]) == b.perplexity([list("hell")])


def test_perplexity_is_exp_of_the_mean_nll_of_every_token_and_end_of_sentence():
    train, test = random_corpus(0, 20), random_corpus(1, 5)
    lm = NGramLM(3, "kneser-ney").fit(train)
    logps = []
    for s in test:
        p = [BOS, BOS, *s, EOS]
        logps += [lm.logprob(p[t], p[t - 2:t]) for t in range(2, len(p))]
    total, count = lm.nll(test)
    assert count == sum(len(s) + 1 for s in test) == len(logps)
    assert total == pytest.approx(-math.fsum(logps), rel=1e-12)
    assert lm.perplexity(test) == pytest.approx(math.exp(-math.fsum(logps) / count), rel=1e-12)


def test_add_k_and_interpolated_on_hand_examples():
    lm = NGramLM(3, "laplace").fit(COWS_CORPUS)
    V = len(lm.vocab) - 1  # </s>, <unk>, 8 words: <s> is never predicted
    assert V == 10 and lm.prob("corn", ["cows", "eat"]) == (4 + 1) / (11 + V)
    assert lm.prob("pizza", ["cows", "eat"]) == 1 / (11 + V)  # pizza is <unk>
    assert NGramLM(3, "add-k", k=0.5).fit(COWS_CORPUS).prob("corn", ["x", "y"]) == 0.5 / (0.5 * V)
    jm = NGramLM(3, "interpolated", lambdas=[0.2, 0.3, 0.5]).fit(COWS_CORPUS)
    assert jm.prob("corn", ["cows", "eat"]) == pytest.approx(0.2 * 5 / 48 + 0.3 * 5 / 12 + 0.5 * 4 / 11)
    # "sleep eat" was never seen: its order drops out and the other lambdas are renormalised
    assert jm.prob("corn", ["sleep", "eat"]) == pytest.approx((0.2 * 5 / 48 + 0.3 * 5 / 12) / 0.5)
    assert NGramLM(2, "interpolated").lambdas == [0.5, 0.5]


def test_kneser_ney_uses_continuation_counts_san_francisco():
    """Francisco is frequent but only ever follows "San"; glasses is rarer but follows many words."""
    corpus = [["San", "Francisco"]] * 6 + [[w, "glasses"] for w in ("reading", "my", "his", "sun")]
    lm = NGramLM(2, "kneser-ney", discount=0.5).fit(corpus)
    # bigram types: (<s> San), (San Francisco), (Francisco </s>), (<s> w) x4, (w glasses) x4, (glasses </s>)
    n_types = 12
    assert lm.prob("Francisco", ["reading"]) == pytest.approx(0.5 * 1 * (1 / n_types))  # "reading" -> 1 type
    assert lm.prob("glasses", ["reading"]) == pytest.approx(0.5 / 1 + 0.5 * 1 * (4 / n_types))
    assert NGramLM(1).fit(corpus).prob("Francisco", []) > NGramLM(1).fit(corpus).prob("glasses", [])


# ---------------------------------------------------------------------------- probabilities sum to one

corpora = st.lists(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=8), min_size=1, max_size=6)


@settings(max_examples=15, deadline=None)
@given(corpus=corpora, min_count=st.integers(1, 2), k=st.floats(0.01, 3), discount=st.floats(0.05, 0.95),
       lam=st.lists(st.floats(0.1, 1), min_size=4, max_size=4))
@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_probabilities_sum_to_one_for_every_context_seen_in_training(smoothing, n, corpus, min_count, k,
                                                                     discount, lam):
    lambdas = [x / sum(lam[:n]) for x in lam[:n]]
    lm = NGramLM(n, smoothing, k=k if smoothing == "add-k" else 1.0, discount=discount, lambdas=lambdas,
                 min_count=min_count).fit(corpus)
    outcomes = [w for w in lm.vocab if w != BOS]
    assert {EOS, UNK} <= set(outcomes)
    for h in seen_contexts(lm, corpus):
        assert math.fsum(lm.prob(w, h) for w in outcomes) == pytest.approx(1, abs=1e-12)
    if n > 1:  # a context never seen in training: the smoothed models are still distributions
        unseen = (EOS,) * (n - 1)
        total = math.fsum(lm.prob(w, unseen) for w in outcomes)
        assert total == (0 if smoothing == "mle" else pytest.approx(1, abs=1e-12))


# ---------------------------------------------------------------------------- agreement with NLTK

NLTK_CASES = [(smoothing, cls, kwargs, n)
              for smoothing, cls, kwargs in [("mle", MLE, {}), ("laplace", Laplace, {}),
                                             ("add-k", Lidstone, {"gamma": 0.1}),
                                             ("kneser-ney", KneserNeyInterpolated, {"discount": 0.75})]
              for n in (1, 2, 3, 4)
              if (smoothing, n) != ("kneser-ney", 1)]  # NLTK fails there: test_nltk_kneser_ney_fails_for_unigrams


@pytest.mark.parametrize("smoothing, cls, kwargs, n", NLTK_CASES, ids=[f"{c[0]}-{c[3]}" for c in NLTK_CASES])
def test_perplexity_agrees_with_nltk(smoothing, cls, kwargs, n):
    train, held_out = random_corpus(0, 30), random_corpus(1, 10)
    lm = NGramLM(n, smoothing, k=kwargs.get("gamma", 1.0)).fit(train)
    ref = nltk_model(cls, n, train, **kwargs)
    for sentences in (train, held_out):
        ours, theirs = lm.perplexity(sentences), nltk_perplexity(ref, n, sentences)
        if math.isinf(theirs):  # the MLE of held-out text: some n-gram was never seen
            assert smoothing == "mle" and math.isinf(ours)
        else:
            assert ours == pytest.approx(theirs, rel=1e-9)
    assert smoothing == "mle" or math.isfinite(lm.perplexity(held_out))


@pytest.mark.parametrize("n", [2, 3, 4])
def test_kneser_ney_agrees_with_nltk_with_unknown_words(n):
    """min_count=2: rare training words and unknown test words (also inside contexts) become <unk>."""
    rng = random.Random(n)
    train = [rng.choices("abcdefghij", weights=[2.0 ** -i for i in range(10)], k=rng.randint(0, 7))
             for _ in range(25)]
    held_out = random_corpus(2, 10, alphabet="abcdefghijklm")
    lm = NGramLM(n, "kneser-ney", min_count=2).fit(train)
    ref = nltk_model(KneserNeyInterpolated, n, train, min_count=2, discount=0.75)
    assert any(w not in lm.vocab for s in train for w in s)  # some training words became <unk>
    assert any(w not in lm.vocab for s in held_out for w in s)  # and some test words are unknown
    assert lm.perplexity(held_out) == pytest.approx(nltk_perplexity(ref, n, held_out), rel=1e-9)


@settings(max_examples=15, deadline=None)
@given(train=corpora, held_out=corpora, n=st.integers(2, 4), discount=st.floats(0.05, 0.95))
def test_kneser_ney_agrees_with_nltk_on_random_corpora(train, held_out, n, discount):
    held_out = [[w for w in s if w in {x for t in train for x in t}] for s in held_out]  # no unknown words
    lm = NGramLM(n, "kneser-ney", discount=discount).fit(train)
    ref = nltk_model(KneserNeyInterpolated, n, train, discount=discount)
    assert lm.perplexity(held_out) == pytest.approx(nltk_perplexity(ref, n, held_out), rel=1e-9)


def test_nltk_kneser_ney_fails_for_unigrams():
    """For n = 1 the top order is the unigram: raw counts, and no lower order to give a discount to.

    Hand computation: tokens a b a </s>, so p(a) = 2/4. NLTK computes unigram continuation counts from
    bigrams, which a unigram model does not have, and divides by zero.
    """
    lm = NGramLM(1, "kneser-ney").fit([["a", "b", "a"]])
    assert lm.prob("a", []) == 2 / 4 and lm.prob(EOS, []) == 1 / 4
    with pytest.raises(ZeroDivisionError):
        nltk_model(KneserNeyInterpolated, 1, [["a", "b", "a"]], discount=0.75).score("a")


def test_nltk_kneser_ney_does_not_sum_to_one_with_its_own_pipeline():
    """NLTK's gamma counts the *raw* distinct followers of a lower-order context, not its continuations.

    Corpus: "a b", "b a a", "c"; trigrams, D = 3/4. Hand computation of the right model:
    p3(a | <s> <s>) = (1 - D)/3 + D * 3/3 * p2(a | <s>); below the top order the counts are continuation
    counts: N1+(. <s> w) = 1 for a, b, c (3 types), so p2(a | <s>) = (1 - D)/3 + D * 3/3 * p1(a), and
    p1(a) = N1+(. a) / N1+(. .) = 3/9 (a follows <s>, b and a; 9 bigram types). So p3 = 1/12 + 3/4 * 1/3 = 1/3.

    NLTK's ``padded_everygram_pipeline`` also counts the bigram "<s> <s>", so the bigram context <s> has 4
    raw followers but only 3 continuations, and NLTK's gamma there is D * 4/3 = 1 instead of D * 3/3:
    its p(. | <s> <s>) sums to (1 - D) + D * ((1 - D) + D * 4/3) = 19/16 over its vocabulary.
    """
    corpus = [["a", "b"], ["b", "a", "a"], ["c"]]
    lm = NGramLM(3, "kneser-ney").fit(corpus)
    assert lm.prob("a", [BOS, BOS]) == pytest.approx(1 / 3, abs=1e-15)
    assert math.fsum(lm.prob(w, [BOS, BOS]) for w in lm.vocab) == pytest.approx(1, abs=1e-15)
    train, vocab = padded_everygram_pipeline(3, corpus)
    ref = KneserNeyInterpolated(3, discount=0.75)
    ref.fit(train, vocab)
    assert math.fsum(ref.score(w, [BOS, BOS]) for w in ref.vocab) == pytest.approx(19 / 16, abs=1e-12)
    assert ref.score(BOS, [BOS, BOS]) > 0  # and it predicts the padding


# ---------------------------------------------------------------------------- sampling


def test_generate_is_reproducible_and_stops():
    lm = NGramLM(3, "kneser-ney").fit(random_corpus(0, 30))
    a, b = lm.generate(seed=1), lm.generate(seed=1)
    assert a == b and EOS not in a and BOS not in a
    assert lm.generate(seed=random.Random(5)) == lm.generate(seed=random.Random(5))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert lm.generate(seed=g1) == lm.generate(seed=g2)
    assert len({tuple(lm.generate(seed=s)) for s in range(20)}) > 5
    assert all(len(lm.generate(max_tokens=3, seed=s)) <= 3 for s in range(20))
    assert lm.generate(max_tokens=0) == []
    assert NGramLM(2).fit([["x", "y"]]).generate(seed=0) == ["x", "y"]  # the MLE of a one-sentence corpus


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_the_sampling_mixture_is_the_model(smoothing):
    """generate() samples p(. | h) as a mixture of simple distributions: it must be exactly prob(., h)."""
    corpus = random_corpus(0, 30)
    lm = NGramLM(3, smoothing, k=0.5 if smoothing == "add-k" else 1.0, discount=0.6).fit(corpus)
    outcomes = lm.vocab[1:]
    unseen = set() if smoothing == "mle" else {(EOS, EOS), (BOS, EOS)}
    for h in seen_contexts(lm, corpus) | unseen:
        p = Counter()
        for weight, tokens in lm._mixture(h):
            tokens = dict.fromkeys(outcomes, 1.0) if tokens is None else tokens
            for w, v in tokens.items():
                p[w] += weight * v / math.fsum(tokens.values())
        for w in outcomes:
            assert p[w] == pytest.approx(lm.prob(w, h), abs=1e-12)


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_generate_samples_from_the_model(smoothing):
    """The first token of many samples is distributed as p(w | <s>): each frequency within 4 sigma."""
    lm = NGramLM(2, smoothing, k=0.5 if smoothing == "add-k" else 1.0).fit(COWS_CORPUS)
    rng, n = random.Random(0), 4000
    first = Counter((lm.generate(max_tokens=1, seed=rng) or [EOS])[0] for _ in range(n))
    for w in lm.vocab[1:]:
        p = lm.prob(w, [BOS])
        assert abs(first[w] / n - p) <= 4 * math.sqrt(p * (1 - p) / n), w


def test_generate_from_an_unseen_mle_context_is_an_error():
    with pytest.raises(ValueError, match="probability 0"):
        NGramLM(2).fit(COWS_CORPUS).generate(prompt=["zebra"], seed=0)


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 0}, "n must be a positive integer"),
    ({"n": -2}, "n must be a positive integer"),
    ({"n": 2.5}, "n must be a positive integer"),
    ({"n": 2, "smoothing": "good-turing"}, "unknown smoothing 'good-turing'"),
    ({"n": 2, "smoothing": "add-k", "k": 0}, "k > 0"),
    ({"n": 2, "smoothing": "add-k", "k": -1}, "k > 0"),
    ({"n": 2, "smoothing": "laplace", "k": 0.5}, "use smoothing='add-k'"),
    ({"n": 2, "smoothing": "kneser-ney", "discount": 0}, "strictly between 0 and 1"),
    ({"n": 2, "smoothing": "kneser-ney", "discount": 1}, "strictly between 0 and 1"),
    ({"n": 2, "smoothing": "kneser-ney", "discount": 1.5}, "strictly between 0 and 1"),
    ({"n": 2, "smoothing": "interpolated", "lambdas": [0.5, 0.6]}, "sum to 1"),
    ({"n": 2, "smoothing": "interpolated", "lambdas": [1.0]}, "n = 2 positive weights"),
    ({"n": 2, "min_count": 0}, "min_count must be a positive integer"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NGramLM(**kwargs)


def test_bad_calls():
    lm = NGramLM(3, "kneser-ney")
    for call in (lambda: lm.prob("a", ["a", "b"]), lambda: lm.perplexity([["a"]]), lambda: lm.generate()):
        with pytest.raises(ValueError, match=r"not been fitted: call fit\(sentences\) first"):
            call()
    with pytest.raises(ValueError, match="empty corpus"):
        lm.fit([])
    with pytest.raises(ValueError, match="empty corpus"):
        lm.fit(iter([]))
    with pytest.raises(ValueError, match="got one string"):
        lm.fit("one long text")
    with pytest.raises(ValueError, match="unpadded sentences"):
        lm.fit([[BOS, "a", EOS]])
    lm.fit(COWS_CORPUS)
    for context in (["eat"], ["cows", "eat", "corn"], []):
        with pytest.raises(ValueError, match=f"context of n-1 = 2 tokens .* got {len(context)}"):
            lm.prob("corn", context)
    with pytest.raises(ValueError, match="context of n-1 = 2"):
        lm.logprob("corn", "cows eat")  # a string is a sequence of characters
    with pytest.raises(ValueError, match="empty list of sentences"):
        lm.perplexity([])
    with pytest.raises(ValueError, match="max_tokens must be >= 0"):
        lm.generate(max_tokens=-1)
