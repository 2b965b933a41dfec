"""LoRA, low-rank adaptation (Hu et al. 2021), from scratch (chapter 13).

A pretrained linear layer y = W x + b (W of shape (out, in)) is frozen and a trainable low-rank update is added:

    y = W x + b + (alpha / r) B A x        A (r, in), B (out, r), r << min(in, out)

Only A and B train: r (in + out) numbers instead of in * out. B starts at zero, so training starts exactly at the
pretrained model; A starts random (Kaiming-uniform, as ``torch.nn.Linear`` and Hugging Face ``peft`` initialise
it), so the first gradients of B are not zero. alpha / r keeps the update's scale comparable across ranks. For
inference the update merges into the weight, W' = W + (alpha / r) B A: a plain linear layer again, no extra cost.
The tests check :class:`LoRALinear` against ``peft``'s LoRA layer on the same weights (outputs, gradients, merging).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmcourse.core import check_positive_int, is_number

__all__ = ["LoRALinear", "add_lora", "merge_lora", "lora_parameters"]


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus the trainable low-rank update (alpha / r) B A: x (..., in) -> (..., out)."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"LoRA adapts an nn.Linear, got {type(base).__name__}")
        check_positive_int(r, "r", f" (the rank, at most min(in, out) = {min(base.in_features, base.out_features)})")
        if r > min(base.in_features, base.out_features):
            raise ValueError(f"r={r} is larger than the layer allows: min(in, out) = "
                             f"{min(base.in_features, base.out_features)}")
        if not is_number(alpha) or alpha <= 0:
            raise ValueError(f"alpha must be a positive number, got {alpha!r}")
        self.base = base.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, float(alpha), alpha / r
        w = base.weight
        self.A = nn.Parameter(torch.empty(r, base.in_features, dtype=w.dtype, device=w.device))
        self.B = nn.Parameter(torch.zeros(base.out_features, r, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight W + (alpha / r) B A (out, in), differentiable in A and B. Code that reads a layer's
        weight directly (the GPT's attention stacks q, k and v into one product) thus sees the adapted layer."""
        return self.base.weight + self.scaling * (self.B @ self.A)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """W x + b through the frozen layer, plus the low-rank path (alpha / r) B (A x): never forms B A."""
        return self.base(x) + self.scaling * F.linear(F.linear(x, self.A), self.B)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with W' = W + (alpha / r) B A and the same bias: the same outputs, no LoRA."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.A.device, dtype=self.A.dtype)
        with torch.no_grad():
            out.weight.copy_(self.weight)
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out


def add_lora(model: nn.Module, targets: Iterable[str] = ("q_proj", "v_proj"), r: int = 8,
             alpha: float = 16.0) -> nn.Module:
    """Freeze every parameter of ``model`` and wrap each ``nn.Linear`` whose name (the last part of its path, e.g.
    ``q_proj`` in ``blocks.0.attn.q_proj``) is in ``targets`` in a :class:`LoRALinear`; returns the model (changed
    in place). Unfreeze a task head yourself afterwards (``head.requires_grad_(True)``)."""
    targets = set(targets)
    linear = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    found = [(name, m) for name, m in linear if name.rsplit(".", 1)[-1] in targets]
    if not found:
        raise ValueError(f"no nn.Linear named {sorted(targets)} in the model; its linear layers are "
                         f"{sorted({name.rsplit('.', 1)[-1] for name, _ in linear})}")
    model.requires_grad_(False)
    for name, module in found:
        model.set_submodule(name, LoRALinear(module, r, alpha))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` of ``model`` by its merged ``nn.Linear`` (in place); returns the model."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            model.set_submodule(name, module.merged())
    return model


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The A and B matrices of every LoRA layer of ``model``."""
    return [p for m in model.modules() if isinstance(m, LoRALinear) for p in (m.A, m.B)]
