"""Muon, the optimiser of the nanoGPT speed-runs (Jordan et al. 2024), for the hidden weight matrices (chapter 7).

For a weight matrix W (m, n) with gradient G_t, Muon keeps a momentum buffer and steps along its orthogonalised
direction:

    M_t = mu M_{t-1} + (1 - mu) G_t                     momentum (an average of past gradients)
    D_t = (1 - mu) G_t + mu M_t  (Nesterov)  or  M_t    the direction
    O_t = NewtonSchulz(D_t) ~ U V^T   for D_t = U S V^T  every singular value pushed towards 1
    W_t = (1 - lr lambda) W_{t-1} - lr sqrt(max(1, m / n)) O_t      decoupled weight decay, then the step

Adam scales each coordinate by its own history; Muon instead gives every direction of the update matrix the same
size, so the rare directions of the gradient get as large a step as the dominant one. The orthogonalisation is five
steps of a quintic Newton-Schulz iteration X <- a X + b (X X^T) X + c (X X^T)^2 X on X_0 = D / ||D||_F (the
Frobenius norm bounds the largest singular value by 1, where the iteration converges); its coefficients
(a, b, c) = (3.4445, -4.7750, 2.0315) trade exactness (singular values end in roughly [0.7, 1.2], not exactly 1) for
speed. Muon is for 2-D hidden matrices only: embeddings, the output head and the norm gains keep AdamW, whose
update the same optimiser applies to the groups marked ``muon=False`` (:func:`muon_param_groups` makes the split):

    m_t = beta1 m_{t-1} + (1 - beta1) g_t,   v_t = beta2 v_{t-1} + (1 - beta2) g_t^2      (elementwise)
    m^_t = m_t / (1 - beta1^t),   v^_t = v_t / (1 - beta2^t)                              bias correction
    w_t = (1 - lr lambda) w_{t-1} - lr m^_t / (sqrt(v^_t) + eps)

``torch.optim.Muon`` and ``torch.optim.AdamW`` implement the same updates; the tests check ours against them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn as nn

__all__ = ["newton_schulz", "Muon", "muon_param_groups", "muon_with_adamw"]

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(G: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """An approximately orthogonal matrix with the singular vectors of G (m, n): U V^T for G = U S V^T, up to
    singular values in about [0.7, 1.2]; G (k, m, n) orthogonalises k matrices at once. Computed in ``dtype``
    (bfloat16, as torch's Muon and the speed-runs do: the iteration tolerates its rounding) and returned in G's."""
    if G.ndim not in (2, 3):
        raise ValueError(f"newton_schulz orthogonalises a matrix (m, n) or a stack (k, m, n), got {tuple(G.shape)}")
    a, b, c = NS_COEFFICIENTS
    X = G.to(dtype)
    tall = X.shape[-2] > X.shape[-1]
    if tall:  # iterate on the wide orientation: X X^T is then the smaller Gram matrix
        X = X.mT
    X = X / X.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-7)  # ||X||_2 <= ||X||_F = 1
    for _ in range(steps):
        A = X @ X.mT  # (m, m) with m <= n
        # subtle: b A + c A A and a X + B X each in one fused product, as torch's Muon computes them (same rounding)
        B = torch.baddbmm(A, A, A, beta=b, alpha=c) if A.ndim == 3 else torch.addmm(A, A, A, beta=b, alpha=c)
        X = torch.baddbmm(X, B, X, beta=a) if X.ndim == 3 else torch.addmm(X, B, X, beta=a)
    return (X.mT if tall else X).to(G.dtype)


class Muon(torch.optim.Optimizer):
    """Momentum, orthogonalised by Newton-Schulz, for 2-D weight matrices; AdamW for groups with ``muon=False``
    (the updates in the module docstring).

    Args:
        params: 2-D parameters, or parameter groups of them; a group with ``"muon": False`` (any shapes) gets the
            AdamW update with its own ``lr``, ``betas``, ``eps`` and ``weight_decay``.
        lr: the learning rate; each matrix (m, n) steps lr * sqrt(max(1, m / n)), so that tall matrices (more
            outputs than inputs) move each output by as much as square ones do.
        momentum: mu.
        nesterov: look ahead along the momentum (the default, as in the speed-runs).
        weight_decay: lambda, decoupled as in AdamW: W <- (1 - lr lambda) W before the step.
        ns_steps, ns_dtype: the Newton-Schulz iteration's steps and precision.
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict], lr: float = 0.02, momentum: float = 0.95,
                 nesterov: bool = True, weight_decay: float = 0.0, ns_steps: int = 5,
                 ns_dtype: torch.dtype = torch.bfloat16, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8) -> None:
        if not lr >= 0.0 or not 0.0 <= momentum < 1.0 or not weight_decay >= 0.0:
            raise ValueError(f"Muon needs lr >= 0, 0 <= momentum < 1 and weight_decay >= 0, got lr={lr}, "
                             f"momentum={momentum}, weight_decay={weight_decay}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, ns_steps=ns_steps,
                        ns_dtype=ns_dtype, muon=True, betas=betas, eps=eps)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"] if group["muon"] else ():
                if p.ndim != 2:
                    raise ValueError(f"Muon updates 2-D weight matrices only, got a parameter of shape "
                                     f"{tuple(p.shape)}; give embeddings, heads, biases and gains to AdamW "
                                     "(muon_param_groups splits a model's parameters)")

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 -- torch.optim.Optimizer's signature
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)
        return loss

    def _muon_step(self, group: dict) -> None:
        """Muon's update of every matrix of ``group`` that has a gradient."""
        lr, mu = group["lr"], group["momentum"]
        params = [p for p in group["params"] if p.grad is not None]
        directions = []
        for p in params:
            buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
            buf.lerp_(p.grad, 1 - mu)  # M_t = mu M_{t-1} + (1 - mu) G_t
            directions.append(p.grad.lerp(buf, mu) if group["nesterov"] else buf)  # (1 - mu) G_t + mu M_t
        by_shape: dict[torch.Size, list[int]] = {}
        for i, p in enumerate(params):  # matrices of one shape are orthogonalised together, as a stack
            by_shape.setdefault(p.shape, []).append(i)
        for shape, index in by_shape.items():
            stack = torch.stack([directions[i] for i in index])  # (k, m, n)
            ortho = newton_schulz(stack, group["ns_steps"], group["ns_dtype"])
            for i, ortho_i in zip(index, ortho, strict=True):
                params[i].mul_(1 - lr * group["weight_decay"])
                params[i].add_(ortho_i, alpha=-lr * math.sqrt(max(1.0, shape[0] / shape[1])))

    def _adamw_step(self, group: dict) -> None:
        """AdamW's update of every parameter of ``group`` that has a gradient."""
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
            state["step"] += 1
            m, v, t = state["m"], state["v"], state["step"]
            m.lerp_(p.grad, 1 - beta1)  # m_t = beta1 m_{t-1} + (1 - beta1) g_t
            v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)  # v_t = beta2 v_{t-1} + (1 - beta2) g_t^2
            m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
            p.mul_(1 - lr * group["weight_decay"])
            p.addcdiv_(m_hat, v_hat.sqrt().add_(eps), value=-lr)


def muon_param_groups(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(matrices for Muon, the rest for AdamW): the weights of the linear layers inside the blocks go to Muon;
    embeddings, the output head (tied or not), biases and norm gains go to AdamW. Every trainable parameter once."""
    matrices, rest, seen = [], [], set()
    blocks = getattr(model, "blocks", None)
    hidden = {id(p) for p in blocks.parameters()} if blocks is not None else set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            is_matrix = isinstance(module, nn.Linear) and name == "weight" and id(p) in hidden
            (matrices if is_matrix else rest).append(p)
    return matrices, rest


def muon_with_adamw(model: nn.Module, muon_lr: float, lr: float, weight_decay: float = 0.0,
                    betas: tuple[float, float] = (0.9, 0.95), momentum: float = 0.95) -> Muon:
    """One optimiser for a GPT: Muon at ``muon_lr`` (with ``weight_decay``) for the blocks' matrices, AdamW at ``lr``
    (no decay) for the embeddings, the head and the gains (:func:`muon_param_groups`)."""
    matrices, rest = muon_param_groups(model)
    return Muon([{"params": matrices, "lr": muon_lr, "weight_decay": weight_decay},
                 {"params": rest, "lr": lr, "weight_decay": 0.0, "muon": False}], momentum=momentum, betas=betas)
