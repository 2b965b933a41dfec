"""Inference (chapter 10): the GPT reading left-padded batches and keeping a KV cache, what a Transformer keeps of
the text it has read, so that generating a token costs one position's work instead of the whole context's.

Generating token t needs the keys k_1..k_t and values v_1..v_t of every earlier position in every layer, but only
the query q_t of the new one; earlier queries and scores are never needed again, so only K and V are cached:

    layer l:  K_l = [k_1; ...; k_L] (B, n_kv_head, L, head_dim),  V_l likewise;  the new tokens append their rows

A :class:`KVCache` holds one :class:`LayerCache` per block of a GPT. :class:`CachedGPT` wraps a trained GPT (sharing
its weights) with the two things generation needs and training does not: ``cached(idx, cache=cache)`` reads idx as
the tokens after the L = ``cache.length`` cached ones (at positions L..L+T-1) and appends their keys and values, and
``attention_mask`` (0 at padding) lets rows of different lengths, padded on the left, share one batch: pad keys are
hidden from every query and each row's positions count from its first real token. It has ``new_cache(B)``, so
``lmcourse.sampling.generate(CachedGPT(gpt), prompt, n)`` decodes with the cache.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from lmcourse.models.gpt import GPT, GPTConfig, SelfAttention, check_context, check_targets, lm_loss
from lmcourse.models.layers import RotaryEmbedding

__all__ = ["LayerCache", "KVCache", "CachedGPT"]


class LayerCache:
    """The keys and values one attention layer has computed so far, preallocated for ``max_len`` positions.

    Args:
        B, n_kv_head, max_len, head_dim: the shape (B, n_kv_head, max_len, head_dim) of each of K and V.
    """

    def __init__(self, B: int, n_kv_head: int, max_len: int, head_dim: int, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        self.k = torch.zeros(B, n_kv_head, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.length = 0  # positions filled so far

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, n_kv_head, T, head_dim) after the cached ones; return all keys and values so far,
        (B, n_kv_head, length, head_dim) views of the storage."""
        T, L = k.shape[2], self.length
        if k.shape != v.shape or k.shape[:2] != self.k.shape[:2] or k.shape[3] != self.k.shape[3]:
            raise ValueError(f"k and v must be (B, n_kv_head, T, head_dim) = {tuple(self.k.shape[:2])} + (T, "
                             f"{self.k.shape[3]}), got {tuple(k.shape)} and {tuple(v.shape)}")
        if L + T > self.max_len:
            raise ValueError(f"the cache holds {self.max_len} positions; {L} are used and {T} more do not fit: "
                             "crop the context and rebuild the cache")
        self.k[:, :, L:L + T] = k
        self.v[:, :, L:L + T] = v
        self.length = L + T
        return self.k[:, :, :self.length], self.v[:, :, :self.length]


class KVCache(list):
    """One :class:`LayerCache` per block of a GPT, for B sequences of up to ``config.block_size`` tokens.

    A list of the layers' caches (``cache[l]`` is layer l's), with the number of positions they hold
    (:attr:`length`) and :meth:`reset`, which empties them without reallocating.
    """

    def __init__(self, config: GPTConfig, B: int, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        n_kv_head = config.n_kv_head or config.n_head
        head_dim = config.n_embd // config.n_head
        super().__init__(LayerCache(B, n_kv_head, config.block_size, head_dim, device, dtype)
                         for _ in range(config.n_layer))

    @classmethod
    def for_model(cls, model: nn.Module, B: int) -> KVCache:
        """An empty cache for B sequences, on the device and in the dtype of the model's weights."""
        p = next(model.parameters())
        return cls(model.config, B, p.device, p.dtype)

    @property
    def length(self) -> int:
        """The positions every layer holds."""
        return self[0].length

    def reset(self) -> None:
        """Forget every position (the storage stays allocated)."""
        for layer in self:
            layer.length = 0


class CachedGPT(nn.Module):
    """A GPT with chapter 10's inference machinery: a KV cache and left-padded batches. It shares ``gpt``'s weights
    and mode, and is called as every model of the course is, ``model(idx, targets=None)`` -> ``(logits, loss)``."""

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt
        self.train(gpt.training)

    @property
    def config(self) -> GPTConfig:
        return self.gpt.config

    @property
    def block_size(self) -> int:
        return self.gpt.block_size

    def new_cache(self, B: int) -> KVCache:
        """An empty cache for B sequences (``lmcourse.sampling.generate`` takes it by default)."""
        return KVCache.for_model(self.gpt, B)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, cache: KVCache | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The GPT's ``(logits, loss)`` for idx (B, T), read after the L tokens in ``cache`` and/or with padding.

        Args:
            idx, targets: as for ``GPT``; with a cache, idx holds the T tokens after the L = ``cache.length``
                cached ones, at positions L..L+T-1 (L + T <= block_size).
            attention_mask: optional (B, L + T) 0/1 or boolean over the cached and the new tokens, 0 at padding:
                pad keys are hidden from every query, each row's positions count from its first real token, and
                padding positions leave the loss.
            cache: a :class:`KVCache` for the B rows, extended in place.
        """
        gpt = self.gpt
        if cache is not None and len(cache) != len(gpt.blocks):
            raise ValueError(f"cache must hold one layer cache per block ({len(gpt.blocks)}), got {len(cache)}; "
                             "make it with KVCache.for_model(model, B)")
        L = 0 if cache is None else cache[0].length
        check_context(idx, gpt.vocab_size, gpt.block_size, cached=L)
        if targets is not None:
            check_targets(targets, idx, gpt.vocab_size)
        B, T = idx.shape
        mask = positions = None
        pos = torch.arange(L, L + T, device=idx.device)  # (T,) shared by every row
        if attention_mask is not None:
            real = _check_attention_mask(attention_mask, (B, L + T))  # (B, L + T) bool
            positions = (real.long().cumsum(-1) - 1).clamp(min=0)[:, L:]  # (B, T): 0 at the first real token
            pos, mask = positions, real[:, None, None, :]  # key mask (B, 1, 1, L + T)
            if targets is not None:
                targets = targets.masked_fill(~real[:, L:], -1)
        x = gpt.embed(idx, pos)  # (B, T, C)
        for i, block in enumerate(gpt.blocks):
            layer = None if cache is None else cache[i]
            x = x + block.drop(_attend(block.attn, block.ln_1(x), gpt.rope, mask, layer, positions, L))
            x = x + block.drop(block.mlp(block.ln_2(x)))
        logits = gpt.head(gpt.ln_f(x))  # (B, T, V)
        return logits, None if targets is None else lm_loss(logits, targets)


def _attend(attn: SelfAttention, x: torch.Tensor, rope: RotaryEmbedding | None, mask: torch.Tensor | None,
            cache: LayerCache | None, positions: torch.Tensor | None, L: int) -> torch.Tensor:
    """``attn``'s self-attention of the T new positions x (B, T, C) after the L cached ones: the new keys and values
    join the cache, and the queries attend to all L + T of them. ``positions`` (B, T): RoPE positions per row."""
    q, k, v = attn.qkv(x, rope, offset=L, positions=positions)  # (B, n_head, T, hd), (B, n_kv_head, T, hd) x 2
    if cache is not None:
        k, v = cache.append(k, v)  # (B, n_kv_head, L + T, hd): the cached keys and values, then the new ones
    mask, is_causal = attn.mask_for(x.shape[1], k.shape[2], mask, x.device)
    return attn.attend(q, k, v, mask, is_causal)


def _check_attention_mask(attention_mask: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The (B, T) 0/1 or boolean padding mask as booleans (True = real token); a ValueError if it is malformed."""
    if not isinstance(attention_mask, torch.Tensor) or tuple(attention_mask.shape) != shape:
        raise ValueError(f"attention_mask must be a (B, T) = {shape} tensor of 0/1 (0 at padding), got "
                         f"{tuple(getattr(attention_mask, 'shape', ())) or type(attention_mask).__name__}")
    if attention_mask.dtype != torch.bool and not ((attention_mask == 0) | (attention_mask == 1)).all():
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (real token)")
    return attention_mask.bool()
