"""Muon (lmcourse.optim) against torch.optim.Muon, and the Newton-Schulz iteration against the SVD."""

import pytest
import torch

from lmcourse.models import GPT, GPTConfig
from lmcourse.optim import Muon, muon_param_groups, muon_with_adamw, newton_schulz


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_muon_equals_torch_muon_step_by_step(nesterov, weight_decay):
    """Tall, wide and square matrices, two of one shape (orthogonalised as a stack): the same weights as torch's
    Muon after every one of five steps, to the last bit (both run the iteration in bfloat16)."""
    torch.manual_seed(0)
    shapes = [(48, 16), (48, 16), (16, 40), (16, 16)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    a = Muon(ours, lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=weight_decay)
    b = torch.optim.Muon(theirs, lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=weight_decay)
    for _ in range(5):
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        a.step()
        b.step()
        for p, q in zip(ours, theirs, strict=True):
            assert torch.equal(p, q)


def test_muon_moves_each_weight_by_the_orthogonalised_momentum():
    """One step from zero momentum, in float32: W - lr sqrt(max(1, m/n)) NS(G) (Nesterov: (1-mu) G + mu (1-mu) G)."""
    torch.manual_seed(1)
    W = torch.nn.Parameter(torch.randn(32, 8))
    G, W0 = torch.randn(32, 8), W.detach().clone()
    W.grad = G
    Muon([W], lr=0.1, momentum=0.5, ns_dtype=torch.float32).step()
    direction = 0.5 * G + 0.5 * (0.5 * G)  # (1 - mu) G + mu M_1, M_1 = (1 - mu) G
    expected = W0 - 0.1 * 2.0 * newton_schulz(direction, dtype=torch.float32)  # sqrt(32 / 8) = 2
    assert (W.detach() - expected).abs().max() < 1e-6


def test_newton_schulz_keeps_the_singular_vectors_and_flattens_the_values():
    torch.manual_seed(2)
    G = torch.randn(24, 64) @ torch.diag(torch.logspace(-2, 1, 64))  # singular values over three decades
    U, S, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    ortho = newton_schulz(G, dtype=torch.float32).double()
    inner = U.T @ ortho @ Vh.T  # diagonal when O = U S' V^T
    off = inner - torch.diag(torch.diagonal(inner))
    assert off.abs().max() < 1e-4
    s = torch.diagonal(inner)
    assert s.min() > 0.6 and s.max() < 1.25, s  # all pushed towards 1; the quintic is not exact
    stack = newton_schulz(torch.stack([G, 2 * G]), dtype=torch.float32)  # scale-free, and stacks work alike
    assert (stack[0] - stack[1]).abs().max() < 1e-5 and (stack[0] - ortho.float()).abs().max() < 1e-5


def test_muon_refuses_what_it_cannot_update():
    with pytest.raises(ValueError, match="2-D weight matrices only.*shape \\(5,\\).*AdamW"):
        Muon([torch.nn.Parameter(torch.zeros(5))])
    with pytest.raises(ValueError, match="lr >= 0"):
        Muon([torch.nn.Parameter(torch.zeros(2, 2))], lr=-1.0)
    with pytest.raises(ValueError, match="matrix \\(m, n\\)"):
        newton_schulz(torch.zeros(2, 2, 2, 2))


@pytest.mark.parametrize("tie_weights", [True, False])
def test_muon_param_groups_give_the_blocks_matrices_to_muon(tie_weights):
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, tie_weights=tie_weights,
                          qk_norm=True))
    matrices, rest = muon_param_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in matrices) == sorted(
        n for n, p in model.named_parameters() if n.startswith("blocks.") and n.endswith("proj.weight")
        or n.endswith(("fc.weight",)))
    assert all(p.ndim == 2 for p in matrices)
    assert len(matrices) + len(rest) == len(list(model.parameters()))  # every parameter once (a tied head once)
    assert {id(p) for p in matrices}.isdisjoint(id(p) for p in rest)
    assert "wte.weight" in {names[id(p)] for p in rest}
    assert ("head.weight" in {names[id(p)] for p in rest}) == (not tie_weights)


def test_adamw_groups_equal_torch_adamw():
    """The groups marked muon=False take AdamW's steps: the same weights as torch.optim.AdamW over ten steps."""
    torch.manual_seed(3)
    shapes = [(7,), (5, 3), (2, 3, 4)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    a = Muon([{"params": ours, "muon": False, "lr": 0.01, "betas": (0.9, 0.99), "weight_decay": 0.1}])
    b = torch.optim.AdamW(theirs, lr=0.01, betas=(0.9, 0.99), weight_decay=0.1, foreach=False)
    for _ in range(10):
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        a.step()
        b.step()
        for p, q in zip(ours, theirs, strict=True):
            assert (p - q).abs().max() < 1e-6


def test_muon_with_adamw_steps_a_gpt_and_lowers_its_loss():
    torch.manual_seed(4)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, tie_weights=False))
    optimizer = muon_with_adamw(model, muon_lr=0.02, lr=0.01)
    assert [g["muon"] for g in optimizer.param_groups] == [True, False]
    x = torch.randint(11, (4, 8), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(20):
        _, loss = model(x, x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0, losses
