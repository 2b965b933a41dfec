"""lmcourse.seq2seq: additive attention against a loop reference and autograd, the reverse task, the models."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcourse.seq2seq import (
    BOS,
    EOS,
    N_SPECIAL,
    PAD,
    AdditiveAttention,
    Seq2Seq,
    exact_match,
    reverse_batch,
    to_string,
    train_reverse,
)
from lmcourse.train import TrainConfig

V = N_SPECIAL + 10  # the vocabulary of the reverse task with 10 symbols


@pytest.fixture(autouse=True)
def one_thread():
    """These networks are tiny: one thread is much faster than several (and than several fighting for cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_mask(lengths: torch.Tensor, S: int) -> torch.Tensor:
    return torch.arange(S)[None, :] < lengths[:, None]


def loop_reference(attn: AdditiveAttention, s: torch.Tensor, h: torch.Tensor, mask: torch.Tensor):
    """e_j = v^T tanh(W s + U h_j + b), a = softmax over real positions, c = sum_j a_j h_j: one position at a time."""
    W, U, b, v = attn.W.weight, attn.U.weight, attn.U.bias, attn.v.weight[0]
    contexts, weights = [], []
    for i in range(s.shape[0]):
        real = [j for j in range(h.shape[1]) if mask[i, j]]
        e = torch.stack([v @ torch.tanh(W @ s[i] + U @ h[i, j] + b) for j in real])
        a_real = torch.exp(e - e.max()) / torch.exp(e - e.max()).sum()
        a = torch.zeros(h.shape[1], dtype=s.dtype)
        a[real] = a_real
        contexts.append(sum(a[j] * h[i, j] for j in real))
        weights.append(a)
    return torch.stack(contexts), torch.stack(weights)


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 4), S=st.integers(1, 7), d_s=st.integers(1, 5), d_h=st.integers(1, 5),
       d_a=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_additive_attention_equals_loop_reference_and_masks_exactly(B, S, d_s, d_h, d_a, seed):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    attn = AdditiveAttention(d_s, d_h, d_a).double()
    s = torch.randn(B, d_s, generator=g, dtype=torch.float64)
    h = torch.randn(B, S, d_h, generator=g, dtype=torch.float64)
    mask = random_mask(torch.randint(1, S + 1, (B,), generator=g), S)
    context, weights = attn(s, h, mask)
    ref_context, ref_weights = loop_reference(attn, s, h, mask)
    assert context.shape == (B, d_h) and weights.shape == (B, S)
    assert torch.allclose(context, ref_context, atol=1e-12) and torch.allclose(weights, ref_weights, atol=1e-12)
    assert (weights[~mask] == 0).all()  # exactly zero, not merely small
    assert torch.allclose(weights.sum(dim=1), torch.ones(B, dtype=torch.float64), atol=1e-12)
    assert (weights[mask] > 0).all()


def test_additive_attention_without_mask_attends_everywhere():
    attn = AdditiveAttention(3, 4, 5)
    s, h = torch.randn(2, 3), torch.randn(2, 6, 4)
    c_none, w_none = attn(s, h)
    c_all, w_all = attn(s, h, torch.ones(2, 6, dtype=torch.bool))
    assert torch.equal(w_none, w_all) and torch.equal(c_none, c_all)


def test_additive_attention_gradients_match_finite_differences():
    torch.manual_seed(0)
    attn = AdditiveAttention(3, 4, 5).double()
    s, h = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 5, 4, dtype=torch.float64)
    mask = random_mask(torch.tensor([5, 2]), 5)
    names = [name for name, _ in attn.named_parameters()]

    def f(s, h, *params):
        return torch.func.functional_call(attn, dict(zip(names, params, strict=True)), (s, h, mask))

    inputs = [t.detach().requires_grad_() for t in (s, h, *attn.parameters())]
    assert torch.autograd.gradcheck(f, inputs)


def test_additive_attention_rejects_bad_input():
    attn = AdditiveAttention(3, 4, 5)
    s, h = torch.randn(2, 3), torch.randn(2, 6, 4)
    with pytest.raises(ValueError, match="query s"):
        attn(torch.randn(2, 4), h)
    with pytest.raises(ValueError, match="states h"):
        attn(s, torch.randn(3, 6, 4))
    with pytest.raises(ValueError, match="bool"):
        attn(s, h, torch.ones(2, 6))
    with pytest.raises(ValueError, match="at least one True"):
        attn(s, h, random_mask(torch.tensor([3, 0]), 6))
    with pytest.raises(ValueError, match="positive integer"):
        AdditiveAttention(0, 4, 5)


@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 6), min_len=st.integers(1, 5), extra=st.integers(0, 5), n_symbols=st.integers(1, 12),
       seed=st.integers(0, 2**16))
def test_reverse_batch_targets_are_the_reversed_sources(B, min_len, extra, n_symbols, seed):
    max_len = min_len + extra
    batch = reverse_batch(B, min_len, max_len, n_symbols, torch.Generator().manual_seed(seed))
    src, lengths, tgt_in, tgt_out = batch
    assert src.shape == (B, max_len) and tgt_in.shape == tgt_out.shape == (B, max_len + 1)
    assert ((min_len <= lengths) & (lengths <= max_len)).all()
    for b in range(B):
        L = int(lengths[b])
        x = src[b, :L].tolist()
        assert all(N_SPECIAL <= i < N_SPECIAL + n_symbols for i in x)
        assert (src[b, L:] == PAD).all()
        assert tgt_out[b].tolist() == x[::-1] + [EOS] + [PAD] * (max_len - L)
        assert tgt_in[b].tolist() == [BOS] + x[::-1] + [PAD] * (max_len - L)
    again = reverse_batch(B, min_len, max_len, n_symbols, torch.Generator().manual_seed(seed))
    assert all(torch.equal(a, b) for a, b in zip(batch, again, strict=True))


def test_reverse_batch_differs_across_seeds_and_rejects_bad_arguments():
    a = reverse_batch(8, 5, 5, generator=torch.Generator().manual_seed(0))
    b = reverse_batch(8, 5, 5, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a.src, b.src)
    for kwargs in [dict(batch_size=0, min_len=1, max_len=2), dict(batch_size=2, min_len=0, max_len=2),
                   dict(batch_size=2, min_len=3, max_len=2), dict(batch_size=2, min_len=1, max_len=2, n_symbols=0),
                   dict(batch_size=2, min_len=1, max_len=2, n_symbols=99)]:
        with pytest.raises(ValueError):
            reverse_batch(**kwargs)


def test_to_string():
    assert to_string([BOS, N_SPECIAL + 1, N_SPECIAL + 2, EOS, PAD]) == "<bos>12<eos>"


def test_exact_match_compares_up_to_eos_and_pads_short_predictions():
    tgt = torch.tensor([[5, 4, EOS, PAD], [5, 4, 3, EOS]])
    assert exact_match(torch.tensor([[5, 4, EOS], [5, 4, 3]]), tgt).tolist() == [True, False]
    assert exact_match(torch.tensor([[5, 4, EOS, PAD, PAD], [5, 4, 3, EOS, PAD]]), tgt).tolist() == [True, True]
    with pytest.raises(ValueError, match="pred"):
        exact_match(torch.zeros(3, 4, dtype=torch.long), tgt)


@pytest.mark.parametrize("attention", [True, False])
def test_model_ignores_padding_and_decoding_agrees_with_teacher_forcing(attention):
    model = Seq2Seq(V, 8, 16, attention=attention).eval()
    batch = reverse_batch(4, 2, 6, generator=torch.Generator().manual_seed(0))
    logits, loss = model(*batch)
    assert logits.shape == (4, 7, V) and loss.ndim == 0
    longer = torch.cat([batch.src, torch.full((4, 3), PAD)], dim=1)  # more padding must change nothing
    logits_longer, _ = model(longer, batch.lengths, batch.tgt_in)
    assert torch.allclose(logits, logits_longer, atol=1e-6)
    tokens, weights = model.greedy_decode(batch.src, batch.lengths, max_len=7)
    fed = torch.cat([torch.full((4, 1), BOS), tokens[:, :-1]], dim=1)  # (PADs after EOS come too late to matter)
    tf_logits, _ = model(batch.src, batch.lengths, fed)
    first_eos = [(row == EOS).nonzero()[0, 0].item() + 1 if (row == EOS).any() else 7 for row in tokens]
    for b, n in enumerate(first_eos):  # feeding the model its own outputs reproduces them, up to the first EOS
        assert tokens[b, :n].tolist() == tf_logits[b, :n].argmax(-1).tolist()
        assert (tokens[b, n:] == PAD).all()
    if attention:
        assert weights.shape == (4, 7, 6)
        assert torch.allclose(weights.sum(-1), torch.ones(4, 7), atol=1e-6)
        assert (weights.masked_select(~(torch.arange(6) < batch.lengths[:, None])[:, None, :]) == 0).all()
    else:
        assert weights is None


def test_model_rejects_bad_input():
    model = Seq2Seq(V, 8, 16)
    batch = reverse_batch(3, 2, 5, generator=torch.Generator().manual_seed(0))
    src, lengths, tgt_in, tgt_out = batch
    bad = [
        ((src, torch.tensor([2, 3, 6]), tgt_in), "lengths must be in 1..S"),  # longer than the padded length
        ((src, torch.tensor([2, 0, 3]), tgt_in), "lengths must be in 1..S"),
        ((src, lengths[:2], tgt_in), "lengths must be an integer tensor"),
        ((src, lengths.float(), tgt_in), "lengths must be an integer tensor"),
        ((src[0], lengths, tgt_in), "src must be 2-D"),
        ((src.float(), lengths, tgt_in), "integer token ids"),
        ((src + V, lengths, tgt_in), "outside the vocabulary"),
        ((src[:0], lengths[:0], tgt_in[:0]), "empty"),
        ((src, lengths, tgt_in[:2]), "tgt_in must have shape"),
        ((src, lengths, tgt_in, tgt_out[:, :3]), "tgt_out must have the shape"),
    ]
    for args, message in bad:
        with pytest.raises(ValueError, match=message):
            model(*args)
    with pytest.raises(ValueError, match="max_len"):
        model.greedy_decode(src, lengths, 0)
    with pytest.raises(ValueError, match="special tokens"):
        Seq2Seq(N_SPECIAL)
    with pytest.raises(ValueError, match="even"):
        Seq2Seq(V, hidden_size=33)


def test_seed_fixes_the_initialisation_without_touching_the_global_random_state():
    state = torch.random.get_rng_state()
    a, b = Seq2Seq(V, 8, 16, seed=3), Seq2Seq(V, 8, 16, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_attention_model_learns_to_reverse_and_beats_the_bottleneck():
    """A small honest run: the same training for both models, then greedy decoding of fresh sequences."""
    results = {}
    for attention in (True, False):
        model = Seq2Seq(V, 16, 32, attention=attention)
        cfg = TrainConfig(max_steps=200, lr=1e-2, seed=0)
        losses = train_reverse(model, cfg, 1, 6, batch_size=64, progress=False)
        assert losses[-1] < losses[0]
        batch = reverse_batch(300, 6, 6, generator=torch.Generator().manual_seed(99))  # held-out, longest length
        pred, _ = model.greedy_decode(batch.src, batch.lengths, max_len=7)
        results[attention] = exact_match(pred, batch.tgt_out).float().mean().item()
    assert results[True] > 0.95, results  # 0.98-1.0 over seeds 0-2 (seed 0 is tested)
    assert results[True] > results[False] + 0.5, results  # the bottleneck model: under 0.1 at this budget
