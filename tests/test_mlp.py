"""The MLP language model (chapter 3) checked against hand computation, torch.nn.functional and autograd."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcourse.models import MLPLM, make_windows
from lmcourse.sampling import generate

V, K, D, H = 11, 3, 4, 7  # vocabulary, context, embedding and hidden sizes of the small test model


def small_model(direct: bool = False, seed: int = 0) -> MLPLM:
    return MLPLM(V, K, n_embd=D, n_hidden=H, direct=direct, seed=seed).double()


def batch(b: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (b, K), generator=g), torch.randint(0, V, (b,), generator=g)


def by_hand(model: MLPLM, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """The forward pass written out from the weights: one-hot @ C -> concat -> tanh(H x + d) -> U h + b (+ W x)."""
    onehot = F.one_hot(idx, V).double()  # (B, K, V)
    x = (onehot @ model.emb.weight).reshape(idx.shape[0], K * D)  # (B, K*D)
    h = torch.tanh(x @ model.hidden.weight.T + model.hidden.bias)  # (B, H)
    logits = h @ model.out.weight.T + model.out.bias  # (B, V)
    if model.direct is not None:
        logits = logits + x @ model.direct.weight.T
    return {"onehot": onehot, "x": x, "h": h, "logits": logits}


@pytest.mark.parametrize("direct", [False, True])
def test_forward_equals_hand_computation_and_loss_equals_cross_entropy(direct):
    model, (idx, targets) = small_model(direct), batch()
    logits, loss = model(idx, targets)
    assert logits.shape == (6, V)
    assert model(idx)[1] is None  # without targets: (logits, None)
    torch.testing.assert_close(model(idx)[0], logits)
    torch.testing.assert_close(logits, by_hand(model, idx)["logits"], rtol=0, atol=1e-12)
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets), rtol=0, atol=1e-12)
    nll = -(logits - logits.exp().sum(1, keepdim=True).log())[torch.arange(6), targets].mean()  # -log softmax
    torch.testing.assert_close(loss, nll, rtol=0, atol=1e-12)


def test_embedding_lookup_is_one_hot_times_the_table():
    model, (idx, _) = small_model(), batch()
    looked_up = model.emb(idx)  # (B, K, D)
    torch.testing.assert_close(looked_up, F.one_hot(idx, V).double() @ model.emb.weight, rtol=0, atol=0)
    assert not torch.equal(looked_up[0, 0], looked_up[0, 0].roll(1))  # rows are not trivially constant


@pytest.mark.parametrize("direct", [False, True])
def test_hand_derived_gradients_equal_autograd(direct):
    """Backpropagation written by hand (softmax-minus-one-hot, tanh' = 1 - h^2, ...) against autograd of the module."""
    model, (idx, targets) = small_model(direct), batch(b=9)
    _, loss = model(idx, targets)
    loss.backward()
    f = by_hand(model, idx)
    with torch.no_grad():
        dlogits = (F.softmax(f["logits"], 1) - F.one_hot(targets, V)) / len(targets)  # (B, V)
        dh = dlogits @ model.out.weight  # (B, H)
        dpre = dh * (1 - f["h"] ** 2)  # (B, H)
        dx = dpre @ model.hidden.weight  # (B, K*D)
        expected = {"out.weight": dlogits.T @ f["h"], "out.bias": dlogits.sum(0),
                    "hidden.weight": dpre.T @ f["x"], "hidden.bias": dpre.sum(0)}
        if direct:
            expected["direct.weight"] = dlogits.T @ f["x"]
            dx = dx + dlogits @ model.direct.weight
        # each row of C gets the gradients of every context position that looked it up
        expected["emb.weight"] = torch.einsum("bkv,bkd->vd", f["onehot"], dx.reshape(-1, K, D))
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads.keys() == expected.keys()
    for name, grad in grads.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(grad, expected[name], rtol=0, atol=1e-12, msg=name)


def test_initialisation_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = MLPLM(V, K, seed=5), MLPLM(V, K, seed=5), MLPLM(V, K, seed=6)
    assert torch.equal(torch.rand(1), before)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name


def test_make_windows_on_a_hand_example():
    X, Y = make_windows([5, 6, 7, 8], 2)
    assert X.tolist() == [[5, 6], [6, 7]] and Y.tolist() == [7, 8]
    X, Y = make_windows(torch.tensor([5, 6, 7, 8]), 2, pad_id=0)
    assert X.tolist() == [[0, 0], [0, 5], [5, 6], [6, 7]] and Y.tolist() == [5, 6, 7, 8]
    assert X.dtype == Y.dtype == torch.long
    X, Y = make_windows([4], 3, pad_id=9)
    assert X.tolist() == [[9, 9, 9]] and Y.tolist() == [4]


@settings(max_examples=50, deadline=None)
@given(ids=st.lists(st.integers(0, 50), min_size=1, max_size=30), k=st.integers(1, 6), pad=st.booleans())
def test_make_windows_rows_are_slices_of_the_padded_sequence(ids, k, pad):
    if not pad and len(ids) <= k:
        with pytest.raises(ValueError, match="no window"):
            make_windows(ids, k)
        return
    X, Y = make_windows(ids, k, pad_id=99 if pad else None)
    seq = [99] * k + ids if pad else ids
    assert X.shape == (len(seq) - k, k) and Y.shape == (len(seq) - k,)
    assert Y.tolist() == seq[k:]  # every token after the first k is a target exactly once, in order
    for i, (row, y) in enumerate(zip(X.tolist(), Y.tolist(), strict=True)):
        assert row + [y] == seq[i:i + k + 1]


def test_make_windows_reset_on_a_hand_example():
    X, Y = make_windows([5, 0, 6, 7, 8], 3, pad_id=0, reset_id=0)
    assert X.tolist() == [[0, 0, 0], [0, 0, 5], [0, 0, 0], [0, 0, 6], [0, 6, 7]] and Y.tolist() == [5, 0, 6, 7, 8]
    X, _ = make_windows([1, 2, 9, 3, 4], 3, reset_id=9)  # reset without padding: only full windows
    assert X.tolist() == [[9, 9, 9], [9, 9, 3]]


@settings(max_examples=50, deadline=None)
@given(lines=st.lists(st.lists(st.integers(1, 5), max_size=8), min_size=1, max_size=6), k=st.integers(1, 5))
def test_make_windows_with_reset_equals_each_line_padded_on_its_own(lines, k):
    """Separator 0 ends each line (like a newline): windows of the joined text = windows of each line, joined."""
    joined = [w for line in lines for w in line + [0]]
    X, Y = make_windows(joined, k, pad_id=0, reset_id=0)
    parts = [make_windows(line + [0], k, pad_id=0) for line in lines]
    assert torch.equal(X, torch.cat([x for x, _ in parts])) and torch.equal(Y, torch.cat([y for _, y in parts]))


@pytest.mark.parametrize("idx, message", [
    (torch.zeros(K, dtype=torch.long), "2-D"),
    (torch.zeros(2, K, 1, dtype=torch.long), "2-D"),
    (torch.zeros(2, K + 1, dtype=torch.long), "context_size"),
    (torch.zeros(2, K), "integer"),
    ([[0] * K], "integer"),
    (torch.full((2, K), V), "outside the vocabulary"),
    (torch.full((2, K), -1), "outside the vocabulary"),
])
def test_bad_idx_is_a_clear_error(idx, message):
    with pytest.raises(ValueError, match=message):
        small_model()(idx)


@pytest.mark.parametrize("targets, message", [
    (torch.zeros(3, dtype=torch.long), "one target per context"),
    (torch.zeros(2, 1, dtype=torch.long), "1-D"),
    (torch.tensor([0, V]), "outside the vocabulary"),
    (torch.zeros(2), "integer"),
])
def test_bad_targets_are_a_clear_error(targets, message):
    with pytest.raises(ValueError, match=message):
        small_model()(torch.zeros(2, K, dtype=torch.long), targets)


def test_other_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="context_size must be a positive"):
        MLPLM(V, 0)
    with pytest.raises(ValueError, match="vocab_size must be a positive"):
        MLPLM(2.5, K)
    with pytest.raises(ValueError, match="context_size must be a positive"):
        make_windows([1, 2, 3], 0)
    with pytest.raises(ValueError, match="1-D"):
        make_windows([[1, 2], [3, 4]], 1)
    with pytest.raises(ValueError, match="pad_id must be a non-negative integer"):
        make_windows([1, 2], 1, pad_id="<s>")
    with pytest.raises(ValueError, match="reset_id must be a non-negative integer"):
        make_windows([1, 2], 1, reset_id=0.5)
    with pytest.raises(ValueError, match="this model reads context_size"):
        generate(small_model(), torch.zeros(1, K - 1, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="temperature"):
        generate(small_model(), torch.zeros(1, K, dtype=torch.long), 5, temperature=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(small_model(), torch.zeros(1, K, dtype=torch.long), -1)


def test_generate_samples_from_the_model_s_window():
    """lmcourse.sampling.generate feeds the MLP its last k tokens: it equals a plain loop that samples from
    softmax(model(window)) with the same generator."""
    model = small_model(seed=3)
    start = torch.tensor([[0] * K])
    out = generate(model, start, 60, temperature=0.7, generator=torch.Generator().manual_seed(4))
    g, window, expected = torch.Generator().manual_seed(4), [0] * K, []
    for _ in range(60):
        probs = F.softmax(model(torch.tensor([window]))[0] / 0.7, dim=-1)
        w = int(torch.multinomial(probs, 1, generator=g))
        expected.append(w)
        window = window[1:] + [w]
    assert out.shape == (1, K + 60)
    assert out[0, K:].tolist() == expected


def test_the_model_memorises_a_handful_of_windows_and_replays_them():
    """Overfitting on purpose: the loss drops far below log |V| and greedy-ish sampling replays the text."""
    text = "hello world"
    vocab = sorted(set(text + "\n"))
    ids = [vocab.index(c) for c in text + "\n"]
    X, Y = make_windows(ids, 3, pad_id=vocab.index("\n"))
    model = MLPLM(len(vocab), 3, n_embd=8, n_hidden=32, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    _, first = model(X, Y)
    for _ in range(60):
        _, loss = model(X, Y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first.item() > 0.8 * math.log(len(vocab))  # it starts near the uniform guess
    assert loss.item() < 0.01 * math.log(len(vocab))
    out = generate(model, torch.full((1, 3), vocab.index("\n")), len(ids), temperature=0.05,
                   generator=torch.Generator().manual_seed(0))
    assert "".join(vocab[i] for i in out[0, 3:].tolist()) == text + "\n"


def test_float_ids_are_refused_instead_of_rounded_down():
    with pytest.raises(ValueError, match="ids must be integer token ids, got torch.float32"):
        make_windows([1.7, 2.2, 3.9, 4.5], 2)
    with pytest.raises(ValueError, match="context_size must be a positive integer, got True"):
        make_windows([1, 2, 3], True)
    with pytest.raises(ValueError, match="0 tokens has no window"):  # an empty list is too short, not float
        make_windows([], 2)


def test_int32_targets_give_the_int64_loss_and_max_new_tokens_must_be_an_integer():
    model = MLPLM(7, 3)
    x, y = make_windows(torch.arange(20) % 7, 3)
    assert torch.equal(model(x.int(), y.int())[1], model(x, y)[1])
    with pytest.raises(ValueError, match="max_new_tokens must be a non-negative integer, got 2.5"):
        generate(model, x[:1], 2.5)
