"""The parts the Transformer is built from (chapter 7): norms, feed-forward layers, position encodings, initialisation.

    LayerNorm(x) = (x - mean(x)) / sqrt(var(x) + eps) * g + b       (torch.nn.LayerNorm)
    RMSNorm(x)   = x / sqrt(mean(x^2) + eps) * g                    (Zhang & Sennrich 2019; LLaMA)
    MLP(x)       = W_2 GELU(W_1 x + b_1) + b_2, hidden width 4 d    (GPT-2; GELU in its tanh approximation)
                 = W_2 ReLU(W_1 x + b_1)^2 + b_2 with "relu2"         (So et al. 2021, Primer; the nanoGPT speed-runs)
    SwiGLU(x)    = W_2 (SiLU(W_1 x) * W_3 x)                        (Shazeer 2020; LLaMA)

:mod:`lmcourse.models.gpt` assembles them into the attention, the block and the model; decoder-only (GPT),
encoder-only (BERT) and the encoder-decoder (T5, :mod:`lmcourse.models.encdec`) all stack such blocks, and only
the masks and the wiring differ.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

if TYPE_CHECKING:
    from lmcourse.models.gpt import GPTConfig

__all__ = ["RMSNorm", "MLP", "SwiGLU", "RotaryEmbedding", "sinusoidal_positions", "make_norm", "init_weights"]


class RMSNorm(nn.Module):
    """Root-mean-square norm: x / sqrt(mean(x^2) + eps) * g over the last dimension (no centring, no bias)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))  # g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., dim) -> (..., dim)."""
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


class MLP(nn.Module):
    """GPT-2's feed-forward layer: d -> 4d -> GELU (tanh approximation) -> d, applied at each position.

    ``activation="relu2"`` squares the ReLU instead (Primer's "squared ReLU"): as cheap as ReLU, smooth at 0 to
    first order, and it learned faster than GELU in the chapter's CPU recipe search.
    """

    def __init__(self, n_embd: int, bias: bool = True, activation: str = "gelu") -> None:
        super().__init__()
        if activation not in ("gelu", "relu2"):
            raise ValueError(f"activation must be 'gelu' or 'relu2', got {activation!r}")
        self.activation = activation
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)  # W_1, b_1
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)  # W_2, b_2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, d) -> (B, T, d)."""
        h = self.fc(x)  # (B, T, 4d)
        h = F.relu(h).square() if self.activation == "relu2" else F.gelu(h, approximate="tanh")
        return self.proj(h)


class SwiGLU(nn.Module):
    """Gated feed-forward layer W_2 (SiLU(W_1 x) * W_3 x), hidden width 8d/3 (same parameter count as the MLP)."""

    def __init__(self, n_embd: int, bias: bool = True) -> None:
        super().__init__()
        hidden = 8 * n_embd // 3
        self.w1 = nn.Linear(n_embd, hidden, bias=bias)  # gate
        self.w3 = nn.Linear(n_embd, hidden, bias=bias)  # value
        self.w2 = nn.Linear(hidden, n_embd, bias=bias)  # back to d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, d) -> (B, T, d)."""
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def sinusoidal_positions(T: int, d: int) -> torch.Tensor:
    """(T, d) fixed position encodings of Vaswani et al. (2017).

    PE[t, 2i] = sin(t / 10000^(2i/d)) and PE[t, 2i+1] = cos(t / 10000^(2i/d)), for positions t = 0..T-1.
    """
    if d % 2:
        raise ValueError(f"sinusoidal positions need an even width, got d={d}")
    t = torch.arange(T, dtype=torch.float32)[:, None]  # (T, 1)
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float32) / d)  # (d/2,)
    pe = torch.empty(T, d)
    pe[:, 0::2] = torch.sin(t * freq)
    pe[:, 1::2] = torch.cos(t * freq)
    return pe


class RotaryEmbedding(nn.Module):
    """Rotary position embedding, RoPE (Su et al. 2021), for vectors of size head_dim at positions 0..max_len-1.

    Each pair of coordinates (x_i, x_{i + head_dim/2}) of the vector at position m is rotated by the angle
    m * theta_i, theta_i = base^(-2i / head_dim). A rotation by m then by -n is a rotation by m - n, so the
    score <R_m q, R_n k> depends on the positions only through m - n. (The paper pairs neighbours (x_{2i},
    x_{2i+1}); pairing i with i + head_dim/2, as GPT-NeoX and LLaMA code do, is the same up to a fixed
    permutation of the coordinates, which the learned projections absorb, and needs no strided copies.)
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
        # the table is computed in float64 (angles m * theta_i reach max_len radians) and stored in float32
        theta = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (head_dim/2,)
        angles = torch.arange(max_len, dtype=torch.float64)[:, None] * theta  # (max_len, head_dim/2)
        angles = torch.cat([angles, angles], dim=-1)  # (max_len, head_dim)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Rotate x (..., T, head_dim), whose rows are at positions offset..offset+T-1; returns the same shape.

        ``positions`` (B, T), for x (B, n_head, T, head_dim), gives each row of each sequence its own position
        instead (e.g. counted from the first real token of a left-padded sequence).
        """
        T = x.shape[-2]
        if positions is not None:
            if positions.shape != (x.shape[0], T) or x.ndim != 4:
                raise ValueError(f"positions must be (B, T) = ({x.shape[0]}, {T}) for x (B, n_head, T, head_dim), "
                                 f"got {tuple(positions.shape)} for x {tuple(x.shape)}")
            if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= self.cos.shape[0]):
                raise ValueError(f"positions must lie in 0..{self.cos.shape[0] - 1}")
            cos = self.cos[positions].to(x.dtype)[:, None]  # (B, 1, T, head_dim), broadcast over the heads
            sin = self.sin[positions].to(x.dtype)[:, None]
        else:
            if offset < 0 or offset + T > self.cos.shape[0]:
                raise ValueError(f"positions {offset}..{offset + T - 1} are outside the table of {self.cos.shape[0]}")
            cos = self.cos[offset:offset + T].to(x.dtype)  # (T, head_dim)
            sin = self.sin[offset:offset + T].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def make_norm(config: GPTConfig) -> nn.Module:
    """The normalisation layer the config asks for, over n_embd features."""
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd)
    return nn.LayerNorm(config.n_embd, bias=config.bias)


def init_weights(model: nn.Module, n_layer: int) -> None:
    """GPT-2 initialisation: normal(0, 0.02) linear weights and embeddings, zero biases, unit norm gains, and
    the projections that write into the residual stream (attention output, MLP output) at 0.02 / sqrt(2 n_layer),
    so that the residual stream's variance does not grow with depth."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, (nn.LayerNorm, RMSNorm)):
            nn.init.ones_(module.weight)
    for name, p in model.named_parameters():
        if name.endswith(("attn.o_proj.weight", "mlp.proj.weight", "mlp.w2.weight")):
            nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))
