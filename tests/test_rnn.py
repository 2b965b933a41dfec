"""lmcourse.rnn: RNN/LSTM/GRU from their equations equal torch.nn's, the recurrent LMs, generation, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcourse.rnn import LSTMLM, RNNLM, GRUCell, LSTMCell, Recurrent, RNNCell, evaluate_stream, unroll
from lmcourse.sampling import generate
from lmcourse.train import TrainConfig, sample_windows, train

TORCH = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
TORCH_CELL = {RNNCell: torch.nn.RNNCell, LSTMCell: torch.nn.LSTMCell, GRUCell: torch.nn.GRUCell}
TOL = 1e-5


def random_state(cell: str, shape: tuple[int, ...], g: torch.Generator):
    h = torch.randn(*shape, generator=g)
    return (h, torch.randn(*shape, generator=g)) if cell == "lstm" else h


def as_tuple(state) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(as_tuple(a), as_tuple(b), strict=True))


@pytest.mark.parametrize("cls", [RNNCell, LSTMCell, GRUCell])
def test_one_step_of_each_cell_equals_torch_cell(cls):
    g = torch.Generator().manual_seed(0)
    ref = TORCH_CELL[cls](5, 4)
    ours = cls(5, 4)
    ours.load_state_dict(ref.state_dict())  # same names and shapes as torch's cells
    x = torch.randn(3, 5, generator=g)
    state = random_state("lstm" if cls is LSTMCell else "rnn", (3, 4), g)
    assert max_diff(ours(x, state), ref(x, state)) < TOL


def test_relu_rnn_cell_equals_torch():
    ref, ours = torch.nn.RNNCell(3, 4, nonlinearity="relu"), RNNCell(3, 4, nonlinearity="relu")
    ours.load_state_dict(ref.state_dict())
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    assert max_diff(ours(x, h), ref(x, h)) < TOL


@pytest.mark.parametrize("n_layers", [1, 2])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_recurrent_equals_torch_outputs_states_and_gradients(cell, n_layers):
    """Outputs, final states and every gradient (parameters, inputs, initial state) in float32."""
    g = torch.Generator().manual_seed(1)
    ref = TORCH[cell](6, 8, n_layers, batch_first=True)
    ours = Recurrent(cell, 6, 8, n_layers)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 7, 6, generator=g)
    state = random_state(cell, (n_layers, 3, 8), g)
    results = []
    for model in (ours, ref):
        xi = x.clone().requires_grad_()
        si = tuple(s.clone().requires_grad_() for s in as_tuple(state))
        out, final = model(xi, si if cell == "lstm" else si[0])
        (out.pow(2).sum() + sum(f.sin().sum() for f in as_tuple(final))).backward()
        grads = {name: p.grad for name, p in zip(model.state_dict(), model.parameters(), strict=True)}
        results.append((out, final, grads, xi.grad, [s.grad for s in si]))
    (o1, f1, g1, gx1, gs1), (o2, f2, g2, gx2, gs2) = results
    assert o1.shape == (3, 7, 8)
    assert max_diff(o1, o2) < TOL and max_diff(f1, f2) < TOL
    assert g1.keys() == g2.keys()
    assert max(max_diff(g1[k], g2[k]) for k in g1) < TOL
    assert max_diff(gx1, gx2) < TOL and max_diff(tuple(gs1), tuple(gs2)) < TOL


@pytest.mark.parametrize("cls", [RNNCell, LSTMCell, GRUCell])
def test_unroll_of_a_cell_equals_one_torch_layer(cls):
    cell = {RNNCell: "rnn", LSTMCell: "lstm", GRUCell: "gru"}[cls]
    ours, ref = cls(4, 5), TORCH[cell](4, 5, batch_first=True)
    ours.load_state_dict({k.removesuffix("_l0"): v for k, v in ref.state_dict().items()})
    x = torch.randn(2, 9, 4)
    out, final = unroll(ours, x)  # zero initial state
    out_ref, final_ref = ref(x)
    assert max_diff(out, out_ref) < TOL
    assert max_diff(as_tuple(final), tuple(s[0] for s in as_tuple(final_ref))) < TOL


def test_recurrent_state_dict_uses_torch_names_both_ways():
    ours = Recurrent("lstm", 3, 4, n_layers=2)
    ref = torch.nn.LSTM(3, 4, 2, batch_first=True)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ref.load_state_dict(ours.state_dict())
    assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), ref.parameters(), strict=True))
    assert [n for n, _ in ours.named_parameters()][:2] == ["layers.0.weight_ih", "layers.0.weight_hh"]


@pytest.mark.parametrize("n_embd", [None, 6])
@pytest.mark.parametrize("cell,n_layers", [("rnn", 1), ("lstm", 2), ("gru", 2)])
def test_fused_and_from_scratch_lms_agree(cell, n_layers, n_embd):
    kw = dict(vocab_size=11, hidden_size=8, n_layers=n_layers, cell=cell, n_embd=n_embd, seed=3)
    fused, scratch = RNNLM(fused=True, **kw), RNNLM(fused=False, **kw)
    assert list(fused.state_dict()) == list(scratch.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fused.parameters(), scratch.parameters(), strict=True))
    scratch.load_state_dict(RNNLM(fused=True, **{**kw, "seed": 4}).state_dict())  # weights copy 1:1
    fused.load_state_dict(scratch.state_dict())
    g = torch.Generator().manual_seed(0)
    idx, targets = torch.randint(11, (4, 10), generator=g), torch.randint(11, (4, 10), generator=g)
    state = random_state(cell, (n_layers, 4, 8), g)
    caches = [fused.new_cache(4), scratch.new_cache(4)]
    for cache in caches:
        cache.state = state  # start both from the same random state
    (l1, loss1), (l2, loss2) = fused(idx, targets, caches[0]), scratch(idx, targets, caches[1])
    assert l1.shape == (4, 10, 11) and loss1.ndim == 0
    assert max_diff(l1, l2) < TOL and abs(loss1.item() - loss2.item()) < TOL
    loss1.backward()
    loss2.backward()
    assert max(max_diff(p.grad, q.grad) for p, q in zip(fused.parameters(), scratch.parameters(), strict=True)) < TOL
    ref_loss = F.cross_entropy(l2.reshape(-1, 11), targets.reshape(-1))
    assert abs(loss2.item() - ref_loss.item()) < 1e-6
    assert fused(idx)[1] is None


@settings(max_examples=15, deadline=None)
@given(cell=st.sampled_from(["rnn", "lstm", "gru"]), B=st.integers(1, 4), T=st.integers(1, 6),
       H=st.integers(1, 9), n_layers=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_fused_equals_from_scratch_for_any_shape(cell, B, T, H, n_layers, seed):
    kw = dict(vocab_size=7, hidden_size=H, n_layers=n_layers, cell=cell, seed=seed)
    idx = torch.randint(7, (B, T), generator=torch.Generator().manual_seed(seed))
    (l1, s1), (l2, s2) = (RNNLM(fused=f, **kw).forward_with_state(idx) for f in (True, False))
    assert max_diff(l1, l2) < TOL and max_diff(s1, s2) < TOL


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_carried_state_continues_the_sequence(cell):
    """Two halves with the state carried over give the logits of the whole sequence (truncated BPTT)."""
    model = RNNLM(9, 6, n_layers=2, cell=cell, n_embd=4)
    idx = torch.randint(9, (3, 12), generator=torch.Generator().manual_seed(0))
    whole, _ = model.forward_with_state(idx)
    first, state = model.forward_with_state(idx[:, :5])
    second, _ = model.forward_with_state(idx[:, 5:], state)
    assert max_diff(torch.cat([first, second], 1), whole) < 1e-6


@pytest.mark.parametrize("fused", [False, True])
def test_generate_carries_the_state_like_rereading_the_prefix(fused):
    model = LSTMLM(10, 8, n_layers=2, fused=fused, n_embd=5, dropout=0.3)
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    out = generate(model, prompt, 6, temperature=0.8, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 9) and torch.equal(out[:, :3], prompt) and model.training
    g, naive = torch.Generator().manual_seed(0), prompt
    model.eval()
    with torch.no_grad():
        for _ in range(6):  # re-read the whole prefix at every step
            probs = F.softmax(model(naive)[0][:, -1] / 0.8, dim=-1)
            naive = torch.cat([naive, torch.multinomial(probs, 1, generator=g)], 1)
    assert torch.equal(out, naive)


def test_lstm_lm_learns_a_repeating_pattern_with_the_shared_loop():
    ids = torch.tensor([0, 1, 2, 3, 2, 1] * 50)
    g = torch.Generator().manual_seed(0)
    model = LSTMLM(4, 16, fused=True, n_embd=8)
    history = train(model, lambda: sample_windows(ids, 12, 8, g), TrainConfig(max_steps=150, lr=1e-2),
                    progress=False)
    # after the first token each next token is determined (from the previous two): the loss falls well below ln 4
    assert history.train_loss[0] > 1.2 and sum(history.train_loss[-10:]) / 10 < 0.2


def test_bad_inputs_raise_clear_errors():
    cell, lstm = RNNCell(3, 4), LSTMCell(3, 4)
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, input_size=3\)"):
        cell(torch.zeros(2, 5), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"hidden state must be a tensor h of shape \(2, 4\), got \(2, 5\)"):
        cell(torch.zeros(2, 3), torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"must be a pair \(h, c\)"):
        lstm(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, input_size=3\)"):
        unroll(cell, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="sequence is empty"):
        unroll(cell, torch.zeros(2, 0, 3))
    rec = Recurrent("gru", 3, 4, n_layers=2)
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, input_size=3\)"):
        rec(torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match=r"tensor h of shape \(2, 2, 4\), got \(1, 2, 4\)"):
        rec(torch.zeros(2, 5, 3), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        RNNCell(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        LSTMCell(3, 0)


@pytest.mark.parametrize("fused", [False, True])
def test_bad_lm_inputs_raise_clear_errors(fused):
    model = RNNLM(5, 4, n_layers=2, cell="lstm", fused=fused)
    with pytest.raises(ValueError, match=r"idx must be 2-D with shape \(B, T\)"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"outside the vocabulary 0..4"):
        model(torch.tensor([[1, 5]]))
    with pytest.raises(ValueError, match=r"T = 0"):
        model(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"targets must have the shape of idx \(1, 2\)"):
        model(torch.tensor([[1, 2]]), torch.tensor([[1, 2, 3]]))
    with pytest.raises(ValueError, match=r"pair \(h, c\) of tensors of shape \(2, 1, 4\)"):
        model.forward_with_state(torch.tensor([[1, 2]]), torch.zeros(2, 1, 4))
    with pytest.raises(ValueError, match=r"shape \(2, 1, 4\), got \(\(2, 1, 4\), \(2, 1, 3\)\)"):
        model.forward_with_state(torch.tensor([[1, 2]]), (torch.zeros(2, 1, 4), torch.zeros(2, 1, 3)))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        generate(model, torch.tensor([[1]]), 3, temperature=0.0)


def test_bad_constructor_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown cell type 'transformer': choose one of rnn, lstm, gru"):
        RNNLM(5, 4, cell="transformer")
    with pytest.raises(ValueError, match="unknown cell type"):
        Recurrent("lstmm", 3, 4)
    with pytest.raises(ValueError, match="n_layers must be a positive integer"):
        RNNLM(5, 4, n_layers=0)
    with pytest.raises(ValueError, match="dropout must be in"):
        LSTMLM(5, 4, dropout=1.0)
    with pytest.raises(ValueError, match=r"n_embd must be a positive integer \(or None"):
        LSTMLM(5, 4, n_embd=0)


@pytest.mark.parametrize("fused", [False, True])
def test_forget_bias_shifts_only_the_forget_gate_rows(fused):
    base, shifted = LSTMLM(7, 5, n_layers=2, fused=fused), LSTMLM(7, 5, n_layers=2, fused=fused, forget_bias=2.0)
    for (name, p), q in zip(base.state_dict().items(), shifted.state_dict().values(), strict=True):
        expected = p.clone()
        if "bias_hh" in name:
            expected[5:10] += 2.0
        assert torch.equal(q, expected), name
    with pytest.raises(ValueError, match="forget_bias is for LSTM cells only"):
        RNNLM(7, 5, cell="gru", forget_bias=1.0)


def test_evaluate_stream_reads_the_text_in_order_with_the_state_carried():
    model = LSTMLM(6, 8, n_embd=4, dropout=0.2)
    ids = torch.randint(6, (41,), generator=torch.Generator().manual_seed(0))
    model.eval()
    whole = model(ids[None, :-1], ids[None, 1:])[1].item()  # one pass over all 40 pairs
    halves = [model(ids[None, i:i + 20], ids[None, i + 1:i + 21])[1].item() for i in (0, 20)]
    model.train()
    assert evaluate_stream(model, ids, batch_size=1, block_size=7) == pytest.approx(whole, abs=1e-6)
    assert evaluate_stream(model, ids, batch_size=2, block_size=3) == pytest.approx(sum(halves) / 2, abs=1e-6)
    assert model.training
    with pytest.raises(ValueError, match=r"ids must be 1-D with shape \(N,\)"):
        evaluate_stream(model, ids[None])
    with pytest.raises(ValueError, match="too few for 32 streams"):
        evaluate_stream(model, ids[:20])


def test_int32_ids_work_and_other_dtypes_are_explained():
    model = RNNLM(5, 4)  # no embedding: the one-hot input needs int64, the check converts int32
    idx = torch.tensor([[0, 1, 2, 3]])
    logits, loss = model(idx, idx)
    logits32, loss32 = model(idx.int(), idx.int())
    assert torch.equal(logits32, logits) and torch.equal(loss32, loss)
    with pytest.raises(ValueError, match=r"int64 \(or int32\)"):
        model(idx.to(torch.uint8))


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ({"block_size": 0}, "block_size must be a positive integer, got 0"),
])
def test_evaluate_stream_rejects_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        evaluate_stream(RNNLM(5, 4), torch.arange(40) % 5, **kwargs)
