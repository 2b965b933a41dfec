"""The NumPy RNN LM with hand-written BPTT (chapter 4), checked against torch.nn.RNN, autograd, finite differences."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcourse import bptt

V, H = 7, 5  # vocabulary and hidden sizes of the small test model


def setup(b: int = 3, t: int = 6, seed: int = 0, v: int = V, h: int = H, h0_scale: float = 0.5):
    """Parameters (with non-zero biases), inputs, targets with one unscored position, and a non-zero h0."""
    params = bptt.init_params(v, h, seed=seed)
    rng = np.random.default_rng(seed + 100)
    params["b_h"] += rng.normal(0, 0.1, h)
    params["b_y"] += rng.normal(0, 0.1, v)
    ids, targets = rng.integers(0, v, (b, t)), rng.integers(0, v, (b, t))
    targets[0, 0] = bptt.IGNORE
    return params, ids, targets, rng.normal(0, h0_scale, (b, h))


def torch_reference(params, ids, targets, h0=None) -> dict:
    """Loss, states and gradients from torch.nn.RNN with copied weights + a linear head, by autograd (float64)."""
    v, h = params["W_xh"].shape
    rnn = torch.nn.RNN(v, h, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(params["W_xh"].T))
        rnn.weight_hh_l0.copy_(torch.from_numpy(params["W_hh"].T))
        rnn.bias_ih_l0.copy_(torch.from_numpy(params["b_h"]))
        rnn.bias_hh_l0.zero_()
    W_hy, b_y = (torch.tensor(params[n], requires_grad=True) for n in ("W_hy", "b_y"))
    h0 = torch.zeros(len(ids), h, dtype=torch.float64) if h0 is None else torch.tensor(h0)
    h0.requires_grad_(True)
    out, h_T = rnn(F.one_hot(torch.as_tensor(ids), v).double(), h0[None])  # out (B, T, H)
    logits = out @ W_hy + b_y
    loss = F.cross_entropy(logits.reshape(-1, v), torch.as_tensor(targets).reshape(-1), ignore_index=bptt.IGNORE)
    loss.backward()
    grads = {"W_xh": rnn.weight_ih_l0.grad.T, "W_hh": rnn.weight_hh_l0.grad.T, "b_h": rnn.bias_ih_l0.grad,
             "W_hy": W_hy.grad, "b_y": b_y.grad, "h0": h0.grad}
    return {"loss": loss.item(), "hs": out.detach().numpy(), "h_T": h_T[0].detach().numpy(),
            "probs": logits.softmax(-1).detach().numpy(), "grads": {k: g.numpy() for k, g in grads.items()}}


@pytest.mark.parametrize("with_h0", [False, True])
def test_forward_equals_torch_rnn_with_a_linear_head(with_h0):
    params, ids, targets, h0 = setup()
    h0 = h0 if with_h0 else None
    loss, cache, h_T = bptt.forward(params, ids, targets, h0)
    ref = torch_reference(params, ids, targets, h0)
    np.testing.assert_allclose(cache["hs"][:, 1:], ref["hs"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(h_T, ref["h_T"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(cache["probs"], ref["probs"], rtol=0, atol=1e-12)
    assert loss == pytest.approx(ref["loss"], rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 4), t=st.integers(1, 12), v=st.integers(2, 9), h=st.integers(1, 8), seed=st.integers(0, 999))
def test_full_bptt_equals_autograd(b, t, v, h, seed):
    params, ids, targets, h0 = setup(b, t, seed, v, h)
    targets[0, 0] = ids[0, 0] if t == 1 and b == 1 else targets[0, 0]  # keep at least one scored position
    loss, cache, _ = bptt.forward(params, ids, targets, h0)
    grads, ref = bptt.backward(params, cache), torch_reference(params, ids, targets, h0)
    assert loss == pytest.approx(ref["loss"], rel=1e-12)
    for name in (*bptt.PARAM_NAMES, "h0"):
        assert grads[name].shape == ref["grads"][name].shape
        assert bptt.max_rel_error(grads[name], ref["grads"][name]) < 1e-6, name


def test_dL_dh_t_is_the_total_derivative_through_every_later_step():
    params, ids, targets, h0 = setup(t=8)
    _, cache, _ = bptt.forward(params, ids, targets, h0)
    grads = bptt.backward(params, cache)
    p = {k: torch.tensor(a, requires_grad=True) for k, a in params.items()}  # the recurrence in torch, keeping h_t
    h, hs = torch.tensor(h0), []
    for t in range(ids.shape[1]):
        h = torch.tanh(p["W_xh"][ids[:, t]] + h @ p["W_hh"] + p["b_h"])
        h.retain_grad()
        hs.append(h)
    logits = torch.stack(hs, 1) @ p["W_hy"] + p["b_y"]
    F.cross_entropy(logits.reshape(-1, V), torch.as_tensor(targets).reshape(-1), ignore_index=bptt.IGNORE).backward()
    assert bptt.max_rel_error(grads["h"], torch.stack([h.grad for h in hs], 1).numpy()) < 1e-6


def test_bptt_equals_central_finite_differences():
    params, ids, targets, h0 = setup(b=2, t=4, v=4, h=3)
    loss_of = lambda: bptt.forward(params, ids, targets, h0)[0]
    grads = bptt.backward(params, bptt.forward(params, ids, targets, h0)[1])
    eps = 1e-6
    for name, array in [*((n, params[n]) for n in bptt.PARAM_NAMES), ("h0", h0)]:
        numeric = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            old = array[i]
            array[i] = old + eps
            plus = loss_of()
            array[i] = old - eps
            minus = loss_of()
            array[i] = old
            numeric[i] = (plus - minus) / (2 * eps)
        assert bptt.max_rel_error(grads[name], numeric) < 1e-6, name


def test_truncated_bptt_per_chunk_equals_autograd_with_the_carried_state():
    rng = np.random.default_rng(3)
    stream = bptt.batchify(rng.integers(0, V, 2 * 23), batch_size=2)  # (2, 23): chunks of 5, 5, 5, 5, 2 steps
    params, h0 = setup()[0], rng.normal(0, 0.5, (2, H))
    h, steps = h0, 0
    for (loss, grads, h_next), start in zip(bptt.truncated_bptt(params, stream, 5, h0), range(0, 22, 5), strict=True):
        ids, targets = stream[:, start: start + 5], stream[:, start + 1: start + 6]
        ids = ids[:, : targets.shape[1]]
        assert np.abs(h).max() > 0.05  # the chunk starts from a non-zero carried state
        ref = torch_reference(params, ids, targets, h)  # the carried h enters as a constant h_0
        assert loss == pytest.approx(ref["loss"], rel=1e-12)
        for name in (*bptt.PARAM_NAMES, "h0"):
            assert bptt.max_rel_error(grads[name], ref["grads"][name]) < 1e-6, name
        np.testing.assert_allclose(h_next, ref["h_T"], rtol=0, atol=1e-12)
        h, steps = h_next, steps + ids.shape[1]
    assert steps == 22
    full = torch_reference(params, stream[:, :-1], stream[:, 1:], h0)  # carrying h = running the whole stream
    np.testing.assert_allclose(h, full["h_T"], rtol=0, atol=1e-12)


def test_truncation_changes_the_gradient_but_not_the_loss():
    params, ids, targets, h0 = setup(b=2, t=12)
    stream = np.concatenate([ids, targets[:, -1:]], axis=1)
    targets = stream[:, 1:]
    chunks = list(bptt.truncated_bptt(params, stream, 4, h0))
    full_loss, cache, _ = bptt.forward(params, stream[:, :-1], targets, h0)
    assert np.mean([loss for loss, _, _ in chunks]) == pytest.approx(full_loss, rel=1e-12)  # equal-size chunks
    summed = sum(g["W_hh"] for _, g, _ in chunks) / len(chunks)
    assert bptt.max_rel_error(summed, bptt.backward(params, cache)["W_hh"]) > 1e-3  # paths across chunks are cut


@settings(max_examples=20, deadline=None)
@given(seq_len=st.integers(1, 30))
def test_evaluate_with_a_carried_state_does_not_depend_on_the_chunk_length(seq_len):
    params = setup()[0]
    stream = bptt.batchify(np.random.default_rng(1).integers(0, V, 60), 3)
    loss, _, _ = bptt.forward(params, stream[:, :-1], stream[:, 1:])
    assert bptt.evaluate(params, stream, seq_len) == pytest.approx(loss, rel=1e-12)


def test_gradient_through_time_shrinks_when_W_hh_is_contractive():
    params, ids, targets, _ = setup(b=1, t=30)
    params["W_hh"] *= 0.5 / np.linalg.norm(params["W_hh"], 2)  # spectral norm 0.5
    targets[:, :-1] = bptt.IGNORE  # only the loss at the last step, L_T
    norms = np.linalg.norm(bptt.backward(params, bptt.forward(params, ids, targets)[1])["h"][0], axis=-1)
    assert np.all(norms[:-1] <= 0.5 * norms[1:] + 1e-15)  # ||dL_T/dh_{t-1}|| <= ||W_hh|| ||dL_T/dh_t||


@pytest.mark.parametrize("scale", [1e-3, 1e3])
@pytest.mark.parametrize("ratio", [0.01, 0.5, 0.999, 1.001, 2.0])  # the threshold as a multiple of the norm
def test_clipping_sets_the_global_norm_to_the_threshold_only_when_above_it(scale, ratio):
    rng = np.random.default_rng(0)
    grads = {n: scale * rng.normal(size=s) for n, s in [("W_xh", (4, 3)), ("W_hh", (3, 3)), ("b_h", (3,)),
                                                          ("W_hy", (3, 4)), ("b_y", (4,))]}
    grads["h0"] = np.ones((2, 3)) * 1e6  # not a parameter: neither counted nor clipped
    before = {n: g.copy() for n, g in grads.items()}
    global_norm = lambda g: math.sqrt(sum((g[n] ** 2).sum() for n in bptt.PARAM_NAMES))
    max_norm = ratio * global_norm(before)
    norm = bptt.clip_grad_norm(grads, max_norm)
    assert norm == pytest.approx(global_norm(before), rel=1e-12)
    ref = [torch.tensor(before[n]) for n in bptt.PARAM_NAMES]
    for t in ref:
        t.grad = t.clone()
    assert torch.nn.utils.clip_grad_norm_(ref, max_norm).item() == pytest.approx(norm, rel=1e-12)
    if ratio < 1:
        assert global_norm(grads) == pytest.approx(max_norm, rel=1e-12)
        for n, t in zip(bptt.PARAM_NAMES, ref, strict=True):
            np.testing.assert_allclose(grads[n], before[n] * ratio, rtol=1e-12)  # same direction
            np.testing.assert_allclose(grads[n], t.grad.numpy(), rtol=2e-6 / norm)  # torch divides by norm + 1e-6
    else:
        assert all(np.array_equal(grads[n], before[n]) for n in bptt.PARAM_NAMES)
    np.testing.assert_array_equal(grads["h0"], before["h0"])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_updates_equal_torch_optimizers(optimizer):
    params, ids, targets, h0 = setup()
    ref = [torch.tensor(params[n]) for n in bptt.PARAM_NAMES]
    if optimizer == "adam":
        ours = bptt.Adam(params, lr=1e-2, betas=(0.9, 0.99))
        theirs = torch.optim.Adam(ref, lr=1e-2, betas=(0.9, 0.99), eps=1e-8)
    else:
        ours = None
        theirs = torch.optim.SGD(ref, lr=0.3)
    for _ in range(3):
        grads = bptt.backward(params, bptt.forward(params, ids, targets, h0)[1])
        for n, t in zip(bptt.PARAM_NAMES, ref, strict=True):
            t.grad = torch.tensor(grads[n])
        if ours is not None:
            ours.step(params, grads)
        else:
            bptt.sgd_step(params, grads, lr=0.3)
        theirs.step()
    for n, t in zip(bptt.PARAM_NAMES, ref, strict=True):
        np.testing.assert_allclose(params[n], t.numpy(), rtol=1e-10, atol=1e-12)


def test_training_learns_a_periodic_text_and_sampling_reproduces_it():
    text = "hello world. " * 40
    itos = sorted(set(text))
    ids = np.array([itos.index(c) for c in text])
    params = bptt.init_params(len(itos), 32, seed=0)
    history = bptt.train(params, bptt.batchify(ids, 4), seq_len=16, max_steps=150, lr=1e-2, progress=False)
    assert len(history.train_loss) == 150
    assert history.tokens == 16 * 4 * 129 + 6 * 4 * 16  # a pass over 129 steps is 9 chunks (8 of 16 steps, 1 of 1)
    assert history.train_loss[0] > 2.0 and np.mean(history.train_loss[-10:]) < 0.1
    out = bptt.sample(params, [itos.index("h")], 24, temperature=0.5, seed=0)
    assert "".join(itos[i] for i in out) == "hello world. hello world."
    assert bptt.sample(params, [0, 1], 10, seed=3) == bptt.sample(params, [0, 1], 10, seed=3)  # deterministic


def test_float32_parameters_stay_float32():
    params = bptt.init_params(V, H, dtype=np.float32)
    ids = np.zeros((2, 3), dtype=np.int64)
    _, cache, h_T = bptt.forward(params, ids, ids)
    assert h_T.dtype == np.float32 and bptt.backward(params, cache)["W_hh"].dtype == np.float32


def test_bad_input_gets_a_clear_error():
    params, ids, targets, h0 = setup()
    with pytest.raises(ValueError, match=r"must be a \(B, T\) array.*ids\[None\]"):
        bptt.forward(params, ids[0], targets[0])
    with pytest.raises(ValueError, match="sequence length 0"):
        bptt.forward(params, ids[:, :0], targets[:, :0])
    with pytest.raises(ValueError, match=r"ids holds id 7, outside the vocabulary 0..6"):
        bptt.forward(params, np.full((3, 6), V), targets)
    with pytest.raises(ValueError, match=r"targets holds id -2, outside"):
        bptt.forward(params, ids, np.full((3, 6), -2))
    with pytest.raises(ValueError, match="integer token ids"):
        bptt.forward(params, ids.astype(float), targets)
    with pytest.raises(ValueError, match="targets must have the shape of ids"):
        bptt.forward(params, ids, targets[:, :-1])
    with pytest.raises(ValueError, match="no position to score"):
        bptt.forward(params, ids, np.full_like(targets, bptt.IGNORE))
    with pytest.raises(ValueError, match=r"hidden state must have shape \(B, H\) = \(3, 5\), got \(3, 4\)"):
        bptt.forward(params, ids, targets, h0[:, :4])
    with pytest.raises(ValueError, match=r"params\['W_hh'\] has shape \(4, 4\)"):
        bptt.forward({**params, "W_hh": np.zeros((4, 4))}, ids, targets)
    with pytest.raises(ValueError, match="params lacks"):
        bptt.forward({"W_xh": params["W_xh"]}, ids, targets)
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        bptt.init_params(V, 0)
    with pytest.raises(ValueError, match="1-D stream"):
        bptt.batchify(ids, 2)
    with pytest.raises(ValueError, match="batch_size must be an integer in 1..9"):
        bptt.batchify(np.arange(18), 10)
    with pytest.raises(ValueError, match="seq_len must be a positive integer"):
        next(bptt.truncated_bptt(params, ids, 0))
    with pytest.raises(ValueError, match="max_norm must be positive"):
        bptt.clip_grad_norm(bptt.backward(params, bptt.forward(params, ids, targets)[1]), 0.0)
    with pytest.raises(ValueError, match="optimizer must be 'adam' or 'sgd'"):
        bptt.train(params, ids, 4, 1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        bptt.sample(params, [1], 5, temperature=0)
    with pytest.raises(ValueError, match="prompt has sequence length 0"):
        bptt.sample(params, [], 5)
    with pytest.raises(ValueError, match="cannot compare arrays of shapes"):
        bptt.max_rel_error(np.zeros(2), np.zeros(3))
