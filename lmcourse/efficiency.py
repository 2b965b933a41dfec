"""Efficiency (chapters 10-11): online softmax, tiled (FlashAttention-style) attention, FLOP accounting and MFU.

**Why tile attention.** Standard attention computes the scores S = Q K^T / sqrt(d) (T_q, T_k), writes them
to the GPU's large but slow memory (HBM), reads them back for the softmax, writes A = softmax(S), and reads
it again for A V: O(T^2) memory and O(T^2) slow traffic per head. FlashAttention (Dao et al. 2022) never
forms S: it loads a block of queries and a block of keys/values into the small fast on-chip memory (SRAM),
computes that block of scores, and folds it into running per-query statistics with the *online softmax*:

    m_new = max(m, max_j s_j)                                running maximum (for stability)
    l_new = l * exp(m - m_new) + sum_j exp(s_j - m_new)      running normaliser l = sum_j exp(s_j - m)
    o_new = o * exp(m - m_new) + sum_j exp(s_j - m_new) v_j  running un-normalised output

and divides o by l at the end. Only O (T_q, d) and the log-sum-exp m + log l (T_q,) are stored; the backward
pass recomputes each block of scores from Q, K and the log-sum-exp instead of storing them (recomputation).
Here it is in plain PyTorch: the loops over blocks are Python loops, so it is a demonstration of the
algorithm and its memory use, not a fast kernel (``torch.nn.functional.scaled_dot_product_attention`` is).

**FLOPs.** A forward pass costs about 2 FLOPs (a multiply and an add) per weight per token, the backward
twice that: training costs ~6 N D FLOPs for N weights and D tokens (Kaplan et al. 2020), plus the attention
scores and weighted sums, 12 n_layer T d per token for a context of T. MFU (model FLOPs utilisation) is the
share of the device's peak FLOP/s that those model FLOPs reach.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from lmcourse import attention
from lmcourse.core import check_non_negative_int, check_positive_int

if TYPE_CHECKING:
    from lmcourse.models.gpt import GPTConfig

__all__ = ["online_softmax", "tiled_attention", "gpt_params", "gpt_flops_per_token", "gpt_train_flops",
           "petaflop_s_days", "attention_as_matmuls", "kv_cache_bytes", "GPT3", "PEAK_FLOPS", "peak_flops", "mfu"]


def online_softmax(x: torch.Tensor, dim: int = -1, block: int = 1) -> torch.Tensor:
    """softmax(x) along ``dim``, with the normaliser found in ONE pass over x (running maximum and sum).

    The entries are visited ``block`` at a time (block=1: one by one, as the formula in the module docstring);
    each step rescales the running sum l by exp(m_old - m_new) when a larger maximum m_new appears. A second,
    elementwise pass writes exp(x - m) / l. ``torch.softmax`` needs one pass for the max, one for the sum.
    """
    check_positive_int(block, "block")
    if x.numel() == 0 or not x.dtype.is_floating_point:
        raise ValueError(f"x must be a non-empty floating-point tensor, got shape {tuple(x.shape)}, {x.dtype}")
    x = x.movedim(dim, -1)  # (..., n)
    m = torch.full(x.shape[:-1], -math.inf, dtype=x.dtype, device=x.device)  # running max
    denom = torch.zeros_like(m)  # l, the running sum of exp(x_j - m)
    for start in range(0, x.shape[-1], block):
        chunk = x[..., start:start + block]
        m_new = torch.maximum(m, chunk.amax(dim=-1))
        denom = denom * torch.exp(m - m_new) + torch.exp(chunk - m_new[..., None]).sum(dim=-1)
        m = m_new
    return (torch.exp(x - m[..., None]) / denom[..., None]).movedim(-1, dim)


def _blocks(q: torch.Tensor, k: torch.Tensor, block_q: int, block_k: int, is_causal: bool):
    """Yield (query slice, key slice, boolean mask or None) of every block of scores that is not fully masked."""
    T_q, T_k = q.shape[-2], k.shape[-2]
    for i in range(0, T_q, block_q):
        rows = slice(i, min(i + block_q, T_q))
        for j in range(0, T_k, block_k):
            cols = slice(j, min(j + block_k, T_k))
            if is_causal and j > rows.stop - 1:  # every key of this block is after every query: skip it
                break
            mask = None
            if is_causal and cols.stop - 1 > i:  # the block straddles the diagonal
                mask = torch.arange(cols.start, cols.stop, device=q.device) <= \
                    torch.arange(rows.start, rows.stop, device=q.device)[:, None]
            yield rows, cols, mask


class _TiledAttention(torch.autograd.Function):
    """Tiled attention with a recomputing backward: saves q, k, v, O and the log-sum-exp, never the scores."""

    @staticmethod
    def forward(ctx, q, k, v, is_causal, block_q, block_k):
        scale = 1.0 / math.sqrt(q.shape[-1])
        out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)  # running o, then O
        m = torch.full(q.shape[:-1], -math.inf, dtype=q.dtype, device=q.device)  # (..., T_q) running max
        denom = torch.zeros_like(m)  # running normaliser l
        for rows, cols, mask in _blocks(q, k, block_q, block_k, is_causal):
            s = q[..., rows, :] @ k[..., cols, :].transpose(-2, -1) * scale  # (..., bq, bk): one block in "SRAM"
            if mask is not None:
                s = s.masked_fill(~mask, -math.inf)
            m_new = torch.maximum(m[..., rows], s.amax(dim=-1))
            p = torch.exp(s - m_new[..., None])
            correction = torch.exp(m[..., rows] - m_new)
            denom[..., rows] = denom[..., rows] * correction + p.sum(dim=-1)
            out[..., rows, :] = out[..., rows, :] * correction[..., None] + p @ v[..., cols, :]
            m[..., rows] = m_new
        out = out / denom[..., None]
        lse = m + torch.log(denom)  # (..., T_q) log sum_j exp(s_ij): all the backward pass needs of the softmax
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.config = (is_causal, block_q, block_k, scale)
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, out, lse = ctx.saved_tensors
        is_causal, block_q, block_k, scale = ctx.config
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        D = (d_out * out).sum(dim=-1)  # (..., T_q): sum_j P_ij dP_ij, the softmax's Jacobian term
        for rows, cols, mask in _blocks(q, k, block_q, block_k, is_causal):
            s = q[..., rows, :] @ k[..., cols, :].transpose(-2, -1) * scale  # recomputed, not stored
            if mask is not None:
                s = s.masked_fill(~mask, -math.inf)
            p = torch.exp(s - lse[..., rows, None])  # the block of attention weights A
            dv[..., cols, :] += p.transpose(-2, -1) @ d_out[..., rows, :]
            dp = d_out[..., rows, :] @ v[..., cols, :].transpose(-2, -1)
            ds = p * (dp - D[..., rows, None]) * scale
            dq[..., rows, :] += ds @ k[..., cols, :]
            dk[..., cols, :] += ds.transpose(-2, -1) @ q[..., rows, :]
        return dq, dk, dv, None, None, None


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool = False,
                    block_q: int = 64, block_k: int = 64) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_k)) v computed block by block, never holding more than a (block_q, block_k) block
    of scores; the backward pass recomputes the blocks (FlashAttention's algorithm, in plain PyTorch).

    Args:
        q: (..., T_q, d_k) queries; k: (..., T_k, d_k) keys; v: (..., T_k, d_v) values.
        is_causal: query i attends to keys j <= i only (top-left aligned, as torch's ``is_causal``).
        block_q, block_k: block sizes (rows of queries, rows of keys) processed at once.

    Returns:
        (..., T_q, d_v), equal (up to rounding) to ``F.scaled_dot_product_attention(q, k, v, is_causal=...)``.
    """
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2] or q.shape[:-2] != k.shape[:-2] != v.shape[:-2]:
        raise ValueError(f"need q (..., T_q, d_k), k (..., T_k, d_k), v (..., T_k, d_v); got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    check_positive_int(block_q, "block_q")
    check_positive_int(block_k, "block_k")
    return _TiledAttention.apply(q, k, v, is_causal, block_q, block_k)


def _matmul_weights(config: GPTConfig) -> int:
    """Weights that multiply activations per token: every linear layer, the head included (not the lookups)."""
    C = config.n_embd
    kv = (config.n_kv_head or config.n_head) * (C // config.n_head)
    attn = 2 * C * C + 2 * C * kv  # q, o: C x C; k, v: C x kv
    mlp = 3 * C * (8 * C // 3) if config.mlp == "swiglu" else 8 * C * C
    return config.n_layer * (attn + mlp) + config.vocab_size * C


def gpt_params(config: GPTConfig) -> int:
    """The number of parameters of ``GPT(config)`` from its shape alone (tied weights counted once)."""
    C, L = config.n_embd, config.n_layer
    kv = (config.n_kv_head or config.n_head) * (C // config.n_head)
    norm = C * (2 if config.norm == "layernorm" and config.bias else 1)  # gain (and bias)
    biases = 0
    if config.bias:
        biases = L * (2 * C + 2 * kv + (2 * (8 * C // 3) + C if config.mlp == "swiglu" else 4 * C + C))  # q o k v, mlp
    embeddings = config.vocab_size * C * (1 if config.tie_weights else 2)  # token embedding (and untied head)
    positions = config.block_size * C if config.pos == "learned" else 0
    qk_norm = 2 * L * (C // config.n_head) if config.qk_norm else 0  # a gain per head coordinate, for q and k
    return (_matmul_weights(config) - config.vocab_size * C + embeddings + positions + biases + (2 * L + 1) * norm
            + qk_norm)


def gpt_flops_per_token(config: GPTConfig, seq_len: int | None = None, training: bool = True) -> float:
    """FLOPs per token of a forward (``training=False``: 2 N + 4 n_layer T d) or forward + backward pass
    (6 N + 12 n_layer T d), with N the weights of the linear layers and head and T = seq_len (default block_size).

    The attention term counts the full T x T scores (q k^T) and weighted sums (A v), as dense kernels compute
    them; a causal mask could skip half of them.
    """
    T = config.block_size if seq_len is None else seq_len
    if T < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    forward = 2 * _matmul_weights(config) + 4 * config.n_layer * T * config.n_embd
    return 3 * forward if training else forward


def gpt_train_flops(config: GPTConfig, tokens: float, seq_len: int | None = None) -> float:
    """Training FLOPs for ``tokens`` tokens in windows of ``seq_len``: 6 N D plus the attention term."""
    return gpt_flops_per_token(config, seq_len, training=True) * tokens


@contextlib.contextmanager
def attention_as_matmuls() -> Iterator[None]:
    """Inside the block, ``torch.nn.functional.scaled_dot_product_attention`` is the from-scratch attention of
    chapter 6 (:func:`lmcourse.attention.scaled_dot_product_attention`: two matrix products, a softmax between).

    For counting FLOPs, not for training: ``torch.utils.flop_counter`` has no formula for the CPU's fused
    attention kernel and counts it as zero, while it sees the two products. Attention dropout is not applied
    inside the block (it costs no FLOPs); ``scale`` and ``enable_gqa``, which the course's models never pass,
    raise an error.
    """
    fused = F.scaled_dot_product_attention

    def as_matmuls(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
                   dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                   enable_gqa: bool = False) -> torch.Tensor:
        if scale is not None or enable_gqa:
            raise ValueError("attention_as_matmuls supports the default scale and no enable_gqa; count without it")
        return attention.scaled_dot_product_attention(q, k, v, mask=attn_mask, is_causal=is_causal)

    F.scaled_dot_product_attention = as_matmuls
    try:
        yield
    finally:
        F.scaled_dot_product_attention = fused


def petaflop_s_days(flops: float) -> float:
    """FLOPs expressed in petaflop/s-days (10^15 FLOP/s for a day), the unit of GPT-3's compute budget."""
    return flops / (1e15 * 86400)


def kv_cache_bytes(config: GPTConfig, tokens: int | None = None, batch: int = 1, bytes_per_value: int = 2) -> int:
    """Bytes of the KV cache of ``GPT(config)`` holding ``tokens`` positions (default block_size) of ``batch`` rows.

    Every layer stores a key and a value vector per position and key/value head: 2 n_layer n_kv_head head_dim
    values per token (fewer with grouped-query attention), ``bytes_per_value`` bytes each (2 for bf16/fp16).
    """
    T = config.block_size if tokens is None else tokens
    check_non_negative_int(T, "tokens")
    check_positive_int(batch, "batch")
    check_positive_int(bytes_per_value, "bytes_per_value")
    n_kv_head = config.n_kv_head or config.n_head
    return 2 * config.n_layer * n_kv_head * (config.n_embd // config.n_head) * T * batch * bytes_per_value


# GPT-3 175B (Brown et al. 2020, Table 2.1 and Appendix D): 96 layers, d = 12288, 96 heads, T = 2048, 300B tokens
GPT3 = {"n_layer": 96, "n_embd": 12288, "n_head": 96, "block_size": 2048, "vocab_size": 50257, "tokens": 300e9}

# Dense peak FLOP/s from the vendors' data sheets (no sparsity); "tf32"/"fp32" for float32 matmuls.
PEAK_FLOPS = {
    "A100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12},  # SXM
    "H200": {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12},
}


def peak_flops(device: torch.device | str = "cpu", dtype: str = "bf16", peak: float | None = None) -> float:
    """The device's peak FLOP/s for ``dtype``: ``peak`` if given, else looked up from the CUDA device's name.

    For a CPU (or an unknown GPU) there is no table entry: measure or look up your chip's peak and pass it.
    """
    if peak is not None:
        if peak <= 0:
            raise ValueError(f"peak must be positive FLOP/s, got {peak}")
        return float(peak)
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for model, table in PEAK_FLOPS.items():
            if model in name:
                if dtype not in table:
                    raise ValueError(f"dtype must be one of {sorted(table)}, got {dtype!r}")
                return table[dtype]
        raise ValueError(f"no peak FLOP/s known for {name!r}; pass peak= (from its data sheet)")
    raise ValueError(f"no peak FLOP/s table for device {device}; pass peak= (e.g. cores x GHz x FLOPs per cycle)")


def mfu(tokens_per_s: float, flops_per_token: float, peak: float) -> float:
    """Model FLOPs utilisation: the FLOP/s the model's arithmetic needs at this throughput, over the peak."""
    if peak <= 0:
        raise ValueError(f"peak must be positive FLOP/s, got {peak}")
    return tokens_per_s * flops_per_token / peak
