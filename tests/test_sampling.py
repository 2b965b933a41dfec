"""Decoding (chapter 9) checked against Hugging Face's logits processors, exhaustive search, brute-force
pass@k and a chi-square test of the sampled frequencies."""

import itertools
import math
from fractions import Fraction

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from lmcourse.models import MLPLM
from lmcourse.rnn import LSTMLM
from lmcourse.sampling import (
    beam_search,
    chi_square_test,
    distinct_n,
    filter_logits,
    generate,
    pass_at_k,
    sample_next,
)


def hf_filter(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """The warpers in the order transformers' generate() builds them: temperature, top-k, top-p (if active)."""
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(float(temperature)))
    if top_k is not None:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    return warpers(torch.zeros(logits.shape[0], 1, dtype=torch.long), logits.clone())


def assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs)), "different kept sets"
    assert torch.equal(ours, theirs), f"max difference {(ours - theirs)[torch.isfinite(ours)].abs().max()}"


# logits: Gaussian batches, heavy ties (few distinct values), extreme magnitudes, already-filtered (-inf) entries
random_logits = st.tuples(st.integers(1, 4), st.integers(1, 12),
                          st.sampled_from(["normal", "ties", "extreme", "masked"]), st.integers(0, 2**31 - 1))


def make_logits(spec: tuple[int, int, str, int]) -> torch.Tensor:
    B, V, kind, seed = spec
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":
        return torch.randint(-2, 3, (B, V), generator=g).float()
    logits = torch.randn(B, V, generator=g) * (1e4 if kind == "extreme" else 3.0)
    if kind == "masked":  # some entries already -inf, never a whole row
        masked = torch.rand(B, V, generator=g) < 0.4
        masked[:, 0] = False
        logits = logits.masked_fill(masked, -math.inf)
    return logits


@settings(max_examples=300, deadline=None)
@given(random_logits, st.one_of(st.just(1.0), st.floats(0.05, 5.0)), st.one_of(st.none(), st.integers(1, 14)),
       st.one_of(st.none(), st.just(1.0), st.floats(0.01, 1.0)))
def test_filter_equals_transformers_warpers(spec, temperature, top_k, top_p):
    logits = make_logits(spec)
    assert_same(filter_logits(logits, temperature, top_k, top_p), hf_filter(logits, temperature, top_k, top_p))


def test_filter_on_hand_examples_and_in_hf_order():
    y = torch.tensor([[2.0, 1.0, 1.0, 0.0, -1.0]])
    assert torch.isinf(filter_logits(y, top_k=2)).tolist() == [[False, False, False, True, True]]  # ties kept
    p = F.softmax(y, dim=-1)[0]  # 0.52, 0.19, 0.19, 0.07, 0.03
    kept = ~torch.isinf(filter_logits(y, top_p=0.6))[0]
    assert kept.sum() == 2 and p[kept].sum() >= 0.6 and p[0] < 0.6  # the smallest set with mass >= p
    assert (~torch.isinf(filter_logits(y, top_p=1e-9))).sum() == 1  # tiny p: only the most probable
    # temperature before top-p changes the nucleus: a flatter distribution needs more tokens for the same mass
    assert (~torch.isinf(filter_logits(y, 3.0, top_p=0.6))).sum() > kept.sum()
    # the order matters, and ours is HF's: top-k then top-p renormalises over the k survivors first
    logits = torch.randn(64, 20, generator=torch.Generator().manual_seed(0)) * 2
    wrong = LogitsProcessorList([TopPLogitsWarper(0.6), TopKLogitsWarper(5), TemperatureLogitsWarper(0.7)])
    ours = filter_logits(logits, 0.7, 5, 0.6)
    assert_same(ours, hf_filter(logits, 0.7, 5, 0.6))
    assert not torch.equal(torch.isinf(ours), torch.isinf(wrong(torch.zeros(64, 1, dtype=torch.long), logits)))


def test_sampled_frequencies_match_the_filtered_distribution_and_the_test_can_fail():
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0]])
    n = 40_000
    for temperature, top_k, top_p in [(1.0, None, None), (0.7, None, None), (1.5, 6, None), (1.0, None, 0.8),
                                      (0.8, 5, 0.9)]:
        probs = F.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)[0]
        g = torch.Generator().manual_seed(0)
        w = sample_next(logits.expand(n, -1), temperature, top_k, top_p, generator=g)  # (n, 1)
        counts = torch.bincount(w[:, 0], minlength=logits.shape[1])
        assert (counts[probs == 0] == 0).all()
        stat, df, p_value = chi_square_test(counts, probs)
        assert p_value > 1e-3, (temperature, top_k, top_p, stat, df)
        # the same samples against a slightly wrong distribution (T off by 10%) are rejected
        wrong = F.softmax(filter_logits(logits, temperature * 1.1, top_k, top_p), dim=-1)[0]
        assert chi_square_test(counts, wrong)[2] < 1e-6


def test_chi_square_p_values_match_tables_and_pool_rare_categories():
    # the p-value function Q(df / 2, x / 2) at the tabulated 5% and 1% critical values of chi^2(df)
    for df, x05, x01 in [(1, 3.841, 6.635), (2, 5.991, 9.210), (5, 11.070, 15.086), (10, 18.307, 23.209)]:
        for x, alpha in [(x05, 0.05), (x01, 0.01)]:
            p = torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), torch.tensor(x / 2)).item()
            assert abs(p - alpha) < 2e-4
    # statistics by hand, with closed-form tails: chi^2(2) has P(X >= x) = exp(-x / 2), chi^2(1) erfc(sqrt(x / 2))
    stat, df, p = chi_square_test(torch.tensor([30, 50, 20]), torch.tensor([0.25, 0.5, 0.25]))  # E = (25, 50, 25)
    assert math.isclose(stat, 25 / 25 + 0 + 25 / 25) and df == 2 and math.isclose(p, math.exp(-1), rel_tol=1e-9)
    stat, df, p = chi_square_test(torch.tensor([60, 40]), torch.tensor([0.5, 0.5]))
    assert math.isclose(stat, 4.0) and df == 1 and math.isclose(p, math.erfc(math.sqrt(2)), rel_tol=1e-9)
    # E = (94, 3, 3): the two rare categories are pooled into one (O = 10, E = 6), df = 1
    counts, probs = torch.tensor([90, 4, 6]), torch.tensor([0.94, 0.03, 0.03])
    stat, df, _ = chi_square_test(counts, probs)
    assert math.isclose(stat, 16 / 94 + 16 / 6, rel_tol=1e-6) and df == 1
    assert chi_square_test(counts, probs, min_expected=0.0)[1] == 2  # without pooling
    assert chi_square_test(torch.tensor([5, 5, 1]), torch.tensor([0.5, 0.5, 0.0]))[2] == 0.0  # impossible token


class TinyLM(nn.Module):
    """A small causal model: embeddings -> running mean over the prefix -> linear head. Returns (logits, None)."""

    def __init__(self, V: int = 7, d: int = 8, block_size: int | None = None, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.emb, self.head, self.drop = nn.Embedding(V, d), nn.Linear(d, V), nn.Dropout(0.5)
        if block_size is not None:
            self.block_size = block_size
        self.seen_lengths: list[int] = []

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, None]:
        assert not self.training and not torch.is_grad_enabled()  # generate must use eval mode and no_grad
        self.seen_lengths.append(idx.shape[1])
        x = self.emb(idx).cumsum(1) / torch.arange(1, idx.shape[1] + 1)[:, None]  # (B, T, d)
        return self.head(self.drop(torch.tanh(3 * x))) * 3, None


def test_greedy_generate_is_the_argmax_loop_and_the_mode_is_restored():
    model = TinyLM().train()
    idx = torch.tensor([[1, 2], [3, 4], [0, 0]])
    out = generate(model, idx, 10, greedy=True)
    assert model.training
    model.eval()
    expected = idx
    with torch.no_grad():
        for _ in range(10):
            expected = torch.cat([expected, model(expected)[0][:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, expected)
    assert torch.equal(generate(model, idx, 10, temperature=1e-4, generator=torch.Generator().manual_seed(1)), out)


def test_seeded_sampling_is_reproducible_and_equals_a_multinomial_loop():
    model, idx = TinyLM(), torch.tensor([[1, 2, 3]] * 4)
    a = generate(model, idx, 30, temperature=1.3, top_k=5, top_p=0.9, generator=torch.Generator().manual_seed(3))
    b = generate(model, idx, 30, temperature=1.3, top_k=5, top_p=0.9, generator=torch.Generator().manual_seed(3))
    c = generate(model, idx, 30, temperature=1.3, top_k=5, top_p=0.9, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    g, expected = torch.Generator().manual_seed(3), idx
    model.eval()
    with torch.no_grad():
        for _ in range(30):
            probs = F.softmax(hf_filter(model(expected)[0][:, -1], 1.3, 5, 0.9), dim=-1)
            expected = torch.cat([expected, torch.multinomial(probs, 1, generator=g)], 1)
    assert torch.equal(a, expected)


def test_generate_crops_the_context_and_stops_at_the_end_token():
    model = TinyLM(block_size=4)
    out = generate(model, torch.tensor([[1, 2, 3, 4, 5, 6]]), 5, greedy=True)
    assert set(model.seen_lengths) == {4}
    expected = torch.tensor([[1, 2, 3, 4, 5, 6]])
    model.eval()
    with torch.no_grad():
        for _ in range(5):
            expected = torch.cat([expected, model(expected[:, -4:])[0][:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, expected)
    # eos: rows that finished are padded with it, and generation stops when all rows are done
    model = TinyLM(seed=1)
    idx = torch.tensor([[0], [1], [2], [3]] * 8)
    full = generate(model, idx, 40, generator=torch.Generator().manual_seed(0))
    eos = int(full[:, 1:].flatten().mode().values)  # a token that many rows produce
    out = generate(model, idx, 40, generator=torch.Generator().manual_seed(0), eos_id=eos)
    ends = []  # the length of each row up to and including its first eos
    for row_full, row in zip(full, out, strict=True):
        stop = (row_full[1:] == eos).nonzero()
        ends.append(1 + int(stop[0]) + 1 if len(stop) else len(row_full))
        assert torch.equal(row[:ends[-1]], row_full[:ends[-1]]) and (row[ends[-1]:] == eos).all()
    assert out.shape[1] == max(ends) and (out[:, 1:] == eos).any(1).sum() >= 2


def test_the_mlp_and_rnn_sample_through_the_same_filters():
    """The one generate serves chapters 3-5's models too (the MLP's window, the RNN's state as its cache), and
    draws exactly what filter_logits + multinomial draw on the whole prefix."""
    rnn, mlp = LSTMLM(9, 8, n_embd=5).eval(), MLPLM(9, 3, n_embd=4, n_hidden=8).eval()
    prompt = torch.tensor([[1, 2, 3]])
    for kwargs in [dict(temperature=0.8), dict(temperature=1.2, top_k=3), dict(top_p=0.7), dict(top_k=4, top_p=0.9)]:
        out_rnn = generate(rnn, prompt, 12, generator=torch.Generator().manual_seed(0), **kwargs)
        out_mlp = generate(mlp, prompt, 12, generator=torch.Generator().manual_seed(0), **kwargs)
        for model, out, window in [(rnn, out_rnn, None), (mlp, out_mlp, 3)]:
            g, expected = torch.Generator().manual_seed(0), prompt
            with torch.no_grad():
                for _ in range(12):
                    logits = model(expected)[0][:, -1] if window is None else model(expected[:, -window:])[0]
                    probs = F.softmax(filter_logits(logits, **kwargs), dim=-1)
                    expected = torch.cat([expected, torch.multinomial(probs, 1, generator=g)], 1)
            assert torch.equal(out, expected), (type(model).__name__, kwargs)


class TableLM(nn.Module):
    """p(w_t | w_{t-1}) from a fixed (|V|, |V|) table of logits: a bigram model with a forward pass."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.table[idx], None  # (B, T, |V|), and no loss


def exhaustive(table: torch.Tensor, prompt: int, length: int, eos_id: int | None, alpha: float) -> dict:
    """Every continuation (stopping at eos_id) and its score log_prob / n ** alpha."""
    logp, out = F.log_softmax(table.double(), dim=-1), {}
    for seq in itertools.product(range(table.shape[0]), repeat=length):
        if eos_id in seq:
            seq = seq[:seq.index(eos_id) + 1]
        lp = sum(logp[a, b].item() for a, b in zip((prompt, *seq[:-1]), seq, strict=True))
        out[seq] = lp / len(seq) ** alpha
    return out


@pytest.mark.parametrize("eos_id", [None, 0])
@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0])
def test_beam_search_with_a_full_beam_is_exhaustive_search(eos_id, alpha):
    V, L = 3, 4
    table = torch.randn(V, V, generator=torch.Generator().manual_seed(5)) * 2
    every = exhaustive(table, 1, L, eos_id, alpha)
    found = beam_search(TableLM(table), torch.tensor([[1]]), V**L, L, length_penalty=alpha, eos_id=eos_id)
    found_seqs = [tuple(h.ids[1:].tolist()) for h in found]
    assert sorted(found_seqs) == sorted(every)  # nothing pruned, nothing twice (bigram paths can tie in score)
    assert max(abs(h.score - every[seq]) for h, seq in zip(found, found_seqs, strict=True)) < 1e-9
    assert all(a.score >= b.score for a, b in zip(found[:-1], found[1:], strict=True))
    assert found[0].score == max(every.values())
    assert beam_search(TableLM(table), torch.tensor([[1]]), 1, L, alpha, eos_id)[0].score <= found[0].score


def test_beam_of_one_is_greedy_and_a_wider_beam_escapes_a_greedy_trap():
    for seed in range(5):
        model = TinyLM(seed=seed)
        prompt = torch.tensor([[seed % 7]])
        greedy = generate(model, prompt, 8, greedy=True)
        (top,) = beam_search(model, prompt, 1, 8)
        assert torch.equal(top.ids, greedy[0])
        assert len(beam_search(model, prompt, 5, 8)) == 5
    # a bigram table where greedy is a trap: 0 -> 1 is likely but everything after 1 is flat
    table = torch.log(torch.tensor([[1e-9, 0.6, 0.4], [1e-9, 0.5, 0.5], [1e-9, 0.0 + 1e-9, 1.0]]))
    best = beam_search(TableLM(table), torch.tensor([[0]]), 2, 3, length_penalty=0.0)[0]
    greedy = generate(TableLM(table), torch.tensor([[0]]), 3, greedy=True)
    assert best.ids.tolist() == [0, 2, 2, 2] and greedy[0, 1] == 1 and best.log_prob > math.log(0.6 * 0.5 * 0.5)


def test_pass_at_k_equals_the_brute_force_expectation():
    for n in range(1, 9):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert abs(pass_at_k(n, c, k) - brute) < 1e-12
    # large n: the product form stays accurate where the binomials are astronomically large
    n, c, k = 2000, 7, 150
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert abs(pass_at_k(n, c, k) - float(exact)) < 1e-12
    assert pass_at_k(200, 1, 1) == pytest.approx(1 / 200) and pass_at_k(10, 0, 10) == 0.0


def test_distinct_n_counts_unique_ngrams():
    assert distinct_n(["abab"], 1) == 2 / 4 and distinct_n(["abab"], 2) == 2 / 3
    assert distinct_n([[1, 2, 3], [1, 2, 3]], 3) == 1 / 2 and distinct_n(["abc", "d"], 2) == 1.0


class FlatLM(nn.Module):
    """A model that returns the wrong shape: (B, |V|) instead of (B, T, |V|)."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.zeros(idx.shape[0], 5)


def test_bad_arguments_raise_clear_errors():
    y, model, idx = torch.zeros(2, 5), TinyLM(), torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match="temperature must be > 0.*greedy=True"):
        sample_next(y, temperature=0.0)
    assert sample_next(y, temperature=0.0, greedy=True).shape == (2, 1)  # the temperature is not used
    for kwargs, message in [({"top_k": 0}, "top_k must be a positive integer"), ({"top_k": 2.5}, "top_k"),
                            ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"), ({"top_p": 1.5}, "top_p"),
                            ({"temperature": -1.0}, "temperature"), ({"temperature": math.inf}, "temperature"),
                            ({"temperature": True}, "temperature"), ({"top_p": True}, "top_p")]:
        with pytest.raises(ValueError, match=message):
            filter_logits(y, **kwargs)
        with pytest.raises(ValueError, match=message):
            generate(model, idx, 0, **kwargs)
    with pytest.raises(ValueError, match="NaN"):
        filter_logits(torch.tensor([[0.0, math.nan]]))
    with pytest.raises(ValueError, match="floating-point"):
        filter_logits(torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match=r"2-D \(B, \|V\|\)"):
        sample_next(torch.zeros(5))
    with pytest.raises(ValueError, match="-inf everywhere"):
        sample_next(torch.full((1, 3), -math.inf))
    with pytest.raises(ValueError, match=r"2-D tensor \(B, T\) of integer token ids"):
        generate(model, torch.tensor([1, 2]), 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, idx, -1)
    for bad in (True, 2.0):  # a bool or a float is not a number of tokens (True would mean 1)
        with pytest.raises(ValueError, match=f"max_new_tokens must be a non-negative integer, got {bad}"):
            generate(model, idx, bad)
    with pytest.raises(ValueError, match=r"logits of shape \(B, T, \|V\|\)"):
        generate(FlatLM(), idx, 1)
    with pytest.raises(ValueError, match="one prompt"):
        beam_search(model, torch.tensor([[1], [2]]), 2, 3)
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(model, idx, 0, 3)
    for args, message in [((5, 2, 6), "k must be between 1"), ((5, 6, 1), "0 <= c <= n"), ((5, 2, 0), "k must"),
                          ((0, 0, 1), "n must be a positive integer"), ((5.0, 2, 1), "n must be a positive integer")]:
        with pytest.raises(ValueError, match=message):
            pass_at_k(*args)
    with pytest.raises(ValueError, match="no 3-gram"):
        distinct_n(["ab"], 3)
    with pytest.raises(ValueError, match="distribution"):
        chi_square_test(torch.tensor([1, 2]), torch.tensor([0.5, 0.6]))
