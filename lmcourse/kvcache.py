"""The KV cache (chapter 10): what a Transformer keeps of the text it has read, so that generating a token costs
one position's work instead of the whole context's.

Generating token t needs the keys k_1..k_t and values v_1..v_t of every earlier position in every layer, but only
the query q_t of the new one; earlier queries and scores are never needed again, so only K and V are cached:

    layer l:  K_l = [k_1; ...; k_L] (B, n_kv_head, L, head_dim),  V_l likewise;  the new tokens append their rows

A :class:`KVCache` holds one :class:`LayerCache` per block of a GPT. ``model(idx, cache=cache)`` reads idx as the
tokens after the L = ``cache.length`` cached ones (at positions L..L+T-1) and appends their keys and values;
``lmcourse.sampling.generate(model, prompt, n, cache=KVCache.for_model(model, B))`` decodes with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from lmcourse.models.gpt import GPTConfig

__all__ = ["LayerCache", "KVCache"]


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
