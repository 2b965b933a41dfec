"""Attention: scaled dot-product attention, its masks, and multi-head attention (chapters 6 and 7).

For queries q_i, keys k_j and values v_j (rows of Q (T_q, d_k), K (T_k, d_k), V (T_k, d_v)):

    scores  S = Q K^T / sqrt(d_k)                    (T_q, T_k)
    weights A = softmax(S) row by row                (T_q, T_k), each row sums to 1
    output  O = A V                                  (T_q, d_v), row i = sum_j A_ij v_j

A mask is a boolean tensor broadcastable to (..., T_q, T_k) with True where query i *may attend* to key j
(the convention of ``torch.nn.functional.scaled_dot_product_attention``); masked scores become -inf before
the softmax. A query row whose mask is all False has nothing to attend to: like torch, we return zeros for
that row (and zero gradients) instead of the NaN that softmax over all -inf would give.

:func:`scaled_dot_product_attention` is the from-scratch teaching version; :class:`MultiHeadAttention` calls
torch's fused kernel, and the tests check that the two agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmcourse.core import check_positive_int

__all__ = ["scaled_dot_product_attention", "causal_mask", "padding_mask", "MultiHeadAttention"]


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                                 is_causal: bool = False, return_weights: bool = False
                                 ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d_k)) v, with an optional boolean mask (True = may attend) and/or a causal mask.

    Args:
        q: (..., T_q, d_k) queries.
        k: (..., T_k, d_k) keys.
        v: (..., T_k, d_v) values.
        mask: boolean, broadcastable to (..., T_q, T_k); True where query i may attend to key j.
        is_causal: also hide keys j > i (the mask of :func:`causal_mask`, aligned at the top left like torch's).
        return_weights: also return the attention weights.

    Returns:
        out (..., T_q, d_v), and the weights A (..., T_q, T_k) when ``return_weights``. Rows of A whose mask
        is all False are zero, and so are those rows of ``out``.
    """
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"need q (..., T_q, d_k), k (..., T_k, d_k), v (..., T_k, d_v); got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    T_q, T_k = q.shape[-2], k.shape[-2]
    if mask is not None and mask.dtype != torch.bool:
        raise ValueError(f"mask must be boolean (True = may attend), got {mask.dtype}; for 0/1 values use mask.bool()")
    if is_causal:
        causal = causal_mask(T_q, T_k, device=q.device)
        mask = causal if mask is None else mask & causal
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., T_q, T_k)
    if mask is None:
        weights = scores.softmax(dim=-1)
    else:
        # a finite fill (not -inf) keeps all-masked rows NaN-free; exp(min - max) underflows to exactly 0
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1).masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
    out = weights @ v  # (..., T_q, d_v)
    return (out, weights) if return_weights else out


def causal_mask(T_q: int, T_k: int | None = None, window: int | None = None,
                device: torch.device | str | None = None, offset: int = 0) -> torch.Tensor:
    """(T_q, T_k) boolean mask, True where position i may attend to j: j <= i, and i - window < j with a window.

    Query i and key j count from 0 (top-left alignment, as ``is_causal=True`` in torch). ``window`` = w is
    sliding-window attention (Mistral): each position sees itself and the w - 1 positions before it.
    ``offset`` = L puts query i at position L + i: the T_q new tokens after L cached ones (a KV cache).
    """
    T_k = T_q if T_k is None else T_k
    if T_q < 1 or T_k < 1:
        raise ValueError(f"T_q and T_k must be positive, got T_q={T_q}, T_k={T_k}")
    if window is not None:
        check_positive_int(window, "window", " (or None)")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    i = torch.arange(offset, offset + T_q, device=device)[:, None]  # (T_q, 1)
    j = torch.arange(T_k, device=device)[None, :]  # (1, T_k)
    mask = j <= i
    if window is not None:
        mask = mask & (j > i - window)
    return mask


def padding_mask(lengths: torch.Tensor | list[int], T: int) -> torch.Tensor:
    """(B, 1, 1, T) boolean key mask, True at the first lengths[b] (real) tokens of sequence b, False at padding.

    It broadcasts against attention scores (B, n_head, T_q, T), hiding the padded keys from every query.
    """
    lengths = torch.as_tensor(lengths)
    if lengths.ndim != 1 or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be a 1-D sequence of integers (one per sequence), got {lengths!r}")
    if len(lengths) and (int(lengths.min()) < 0 or int(lengths.max()) > T):
        raise ValueError(f"lengths must lie in 0..T={T}, got {lengths.tolist()}")
    return (torch.arange(T, device=lengths.device)[None, :] < lengths[:, None])[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Multi-head attention, with grouped-query attention (GQA) as an option.

    Each of the n_head heads attends in its own head_dim = d_model / n_head subspace; their outputs are
    concatenated and mixed by ``o_proj``. With n_kv_head < n_head, keys and values have only n_kv_head heads,
    each shared by n_head / n_kv_head query heads (n_kv_head = 1 is multi-query attention). Chapter 7's GPT
    builds its self-attention on this class (``lmcourse.models.gpt.SelfAttention``), adding rotary positions and
    sliding windows; chapter 10's ``lmcourse.inference`` reuses its ``project`` and ``attend`` around a KV cache.

    Args:
        d_model: model width (embedding size).
        n_head: number of query heads; must divide d_model.
        n_kv_head: number of key/value heads (default n_head); must divide n_head.
        bias: biases in the four projections.
        dropout: dropout probability on the attention weights (training only).
    """

    def __init__(self, d_model: int, n_head: int, n_kv_head: int | None = None, bias: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        if n_head < 1 or d_model % n_head:
            raise ValueError(f"n_head={n_head} must be positive and divide d_model={d_model}")
        if n_kv_head < 1 or n_head % n_kv_head:
            raise ValueError(f"n_kv_head={n_kv_head} must be positive and divide n_head={n_head}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.n_head, self.n_kv_head, self.head_dim, self.dropout = n_head, n_kv_head, d_model // n_head, dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_head * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_head * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        """Attention of the positions of x over x itself (self-attention) or over ``context`` (cross-attention).

        Args:
            x: (B, T, d_model), the queries' inputs.
            context: (B, S, d_model) the keys' and values' inputs; default x (self-attention, S = T).
            mask: boolean, broadcastable to (B, n_head, T, S), True = may attend (e.g. :func:`padding_mask`).
            is_causal: position i attends only to j <= i.

        Returns:
            (B, T, d_model).
        """
        if x.ndim != 3 or x.shape[-1] != self.q_proj.in_features:
            raise ValueError(f"x must be (B, T, d_model) with d_model={self.q_proj.in_features}, got shape "
                             f"{tuple(x.shape)}")
        if context is not None and (context.ndim != 3 or context.shape[0] != x.shape[0]
                                    or context.shape[2] != x.shape[2]):
            raise ValueError(f"context must be (B={x.shape[0]}, S, d_model={x.shape[2]}), got shape "
                             f"{tuple(context.shape)}")
        if mask is not None and mask.dtype != torch.bool:
            raise ValueError(f"mask must be boolean (True = may attend), got {mask.dtype}")
        q, k, v = self.project(x, context)
        if is_causal and mask is not None:  # torch's kernel takes one or the other
            mask, is_causal = mask & causal_mask(q.shape[2], k.shape[2], device=x.device), False
        return self.attend(q, k, v, mask, is_causal)

    def project(self, x: torch.Tensor, context: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The heads' queries q (B, n_head, T, hd) from x (B, T, d), and keys and values k, v
        (B, n_kv_head, S, hd) from ``context`` (B, S, d), or from x itself (self-attention)."""
        B, T, C = x.shape
        if context is None:  # self-attention: q, k and v in one matrix product with the three weights stacked
            w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])  # (C + 2 kv_dim, C)
            b = None if self.q_proj.bias is None else torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
            q, k, v = F.linear(x, w, b).split([C, self.k_proj.out_features, self.v_proj.out_features], dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(context), self.v_proj(context)
        S = k.shape[1]
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, n_head, T, hd)
        k = k.view(B, S, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv_head, S, hd)
        v = v.view(B, S, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv_head, S, hd)
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
               is_causal: bool = False) -> torch.Tensor:
        """softmax(q k^T / sqrt(hd)) v for every head (torch's fused kernel), heads side by side, then ``o_proj``:
        q (B, n_head, T, hd), k and v (B, n_kv_head, S, hd) -> (B, T, d_model)."""
        if self.n_kv_head != self.n_head:  # each k/v head serves n_head / n_kv_head consecutive query heads
            rep = self.n_head // self.n_kv_head
            k = k.repeat_interleave(rep, dim=1)  # (B, n_head, S, hd)
            v = v.repeat_interleave(rep, dim=1)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)
        B, _, T, _ = q.shape
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, d_model): heads side by side
