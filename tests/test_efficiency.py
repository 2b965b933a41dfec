"""lmcourse.efficiency: online softmax, tiled attention (forward and backward), FLOP accounting, MFU."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from lmcourse.efficiency import (
    GPT3,
    attention_as_matmuls,
    gpt_flops_per_token,
    gpt_params,
    gpt_train_flops,
    kv_cache_bytes,
    mfu,
    online_softmax,
    peak_flops,
    petaflop_s_days,
    tiled_attention,
)
from lmcourse.inference import KVCache
from lmcourse.models import GPT
from lmcourse.models.gpt import GPTConfig


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), block=st.integers(1, 9), scale=st.floats(0.1, 100.0), seed=st.integers(0, 2**16))
def test_online_softmax_equals_softmax(n, block, scale, seed):
    x = torch.randn(3, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    assert torch.allclose(online_softmax(x, block=block), torch.softmax(x, dim=-1), rtol=1e-12, atol=1e-14)
    assert torch.allclose(online_softmax(x.T, dim=0, block=block), torch.softmax(x.T, dim=0), rtol=1e-12, atol=1e-14)


def test_online_softmax_is_stable_and_rejects_bad_input():
    x = torch.tensor([1000.0, 1001.0, -1000.0])  # exp(1000) overflows: the running max keeps it finite
    assert torch.allclose(online_softmax(x), torch.softmax(x, dim=0))
    with pytest.raises(ValueError, match="block must be a positive"):
        online_softmax(x, block=0)
    with pytest.raises(ValueError, match="floating-point"):
        online_softmax(torch.arange(3))


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("T_q, T_k, block_q, block_k",
                         [(37, 37, 8, 16), (20, 45, 16, 7), (45, 20, 5, 64), (1, 9, 4, 4)])
def test_tiled_attention_equals_sdpa_forward_and_backward(is_causal, T_q, T_k, block_q, block_k):
    g = torch.Generator().manual_seed(T_q * T_k)
    q, k = (torch.randn(2, 3, T, 8, generator=g, dtype=torch.float64, requires_grad=True) for T in (T_q, T_k))
    v = torch.randn(2, 3, T_k, 5, generator=g, dtype=torch.float64, requires_grad=True)
    out = tiled_attention(q, k, v, is_causal, block_q=block_q, block_k=block_k)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    assert (out - ref).abs().max().item() < 1e-12
    d_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), d_out)  # our recomputing backward
    ref_grads = torch.autograd.grad(ref, (q, k, v), d_out)
    for a, b in zip(grads, ref_grads, strict=True):
        assert (a - b).abs().max().item() < 1e-12


def test_tiled_attention_float32_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 33, 16, generator=g) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(tiled_attention(q, k, v, True, 8, 8), ref, atol=1e-5)
    small = [t[:, :, :6, :4].double().requires_grad_() for t in (q, k, v)]
    assert torch.autograd.gradcheck(lambda *t: tiled_attention(*t, True, 4, 4), small)
    with pytest.raises(ValueError, match="need q"):
        tiled_attention(q, k[..., :3], v)
    with pytest.raises(ValueError, match="block_q must be a positive integer"):
        tiled_attention(q, k, v, block_q=0)


@pytest.mark.parametrize("kwargs", [
    {}, {"pos": "rope", "n_kv_head": 2, "mlp": "swiglu", "norm": "rmsnorm", "bias": False},
    {"tie_weights": False, "pos": "sinusoidal"}, {"n_kv_head": 1, "norm": "rmsnorm"},
    {"qk_norm": True, "mlp": "relu2", "tie_weights": False},
])
def test_gpt_params_counts_the_models_parameters(kwargs):
    config = GPTConfig(vocab_size=100, block_size=32, n_layer=2, n_head=4, n_embd=48, **kwargs)
    assert gpt_params(config) == sum(p.numel() for p in GPT(config).parameters())


@pytest.mark.parametrize("kwargs", [{}, {"n_kv_head": 2, "mlp": "swiglu"}])
def test_training_flops_within_10_percent_of_torch_flop_counter(kwargs):
    config = GPTConfig(vocab_size=128, block_size=128, n_layer=2, n_head=4, n_embd=64, **kwargs)
    model, B = GPT(config), 2
    x = torch.randint(0, 128, (B, config.block_size), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter, attention_as_matmuls():  # the counter sees attention's matmuls
        model(x, x)[1].backward()
    counted = counter.get_total_flops()
    predicted = gpt_train_flops(config, tokens=x.numel())
    assert abs(predicted - counted) / counted < 0.10
    # without the attention term the estimate would be off by more than 10%: the test can tell
    attention_term = 12 * config.n_layer * config.block_size * config.n_embd * x.numel()
    assert abs(predicted - attention_term - counted) / counted > 0.10
    with FlopCounterMode(display=False) as counter, attention_as_matmuls(), torch.no_grad():
        model(x)
    assert abs(gpt_flops_per_token(config, training=False) * x.numel() / counter.get_total_flops() - 1) < 0.10


def test_gpt3_budget():
    config = GPTConfig(**{k: v for k, v in GPT3.items() if k != "tokens"})
    assert gpt_params(config) == pytest.approx(175e9, rel=0.01)  # "175B"
    # Brown et al. 2020, Table D.1: 3.14e23 training FLOPs, 3640 petaflop/s-days (6 N D)
    assert 6 * gpt_params(config) * GPT3["tokens"] == pytest.approx(3.14e23, rel=0.01)
    assert petaflop_s_days(6 * gpt_params(config) * GPT3["tokens"]) == pytest.approx(3640, rel=0.01)
    assert gpt_train_flops(config, GPT3["tokens"]) > 6 * gpt_params(config) * GPT3["tokens"]  # plus attention


def test_mfu_and_peak():
    assert mfu(tokens_per_s=1000.0, flops_per_token=6e9, peak=1e13) == pytest.approx(0.6)
    assert peak_flops("cpu", peak=2e11) == 2e11
    with pytest.raises(ValueError, match="pass peak="):
        peak_flops("cpu")
    with pytest.raises(ValueError, match="peak must be positive"):
        mfu(1.0, 1.0, 0.0)


@pytest.mark.parametrize("kwargs", [{}, {"n_kv_head": 2}, {"n_kv_head": 1, "pos": "rope"}])
def test_kv_cache_bytes_equals_the_models_caches(kwargs):
    config = GPTConfig(vocab_size=50, block_size=24, n_layer=3, n_head=4, n_embd=32, **kwargs)
    caches = KVCache(config, B=5)  # float32: 4 bytes per value
    assert kv_cache_bytes(config, batch=5, bytes_per_value=4) == sum(c.k.nbytes + c.v.nbytes for c in caches)
    assert kv_cache_bytes(config, tokens=1) * 24 == kv_cache_bytes(config)
    gpt3 = GPTConfig(**{k: v for k, v in GPT3.items() if k != "tokens"})
    assert kv_cache_bytes(gpt3, tokens=1) == 2 * 96 * 12288 * 2  # 4.7 MB per token in bf16
    with pytest.raises(ValueError, match="tokens must be a non-negative integer"):
        kv_cache_bytes(config, tokens=-1)


def test_attention_as_matmuls_makes_fused_attention_countable_and_restores_it():
    fused = F.scaled_dot_product_attention
    q, k, v = torch.randn(3, 2, 2, 16, 8).unbind(0)
    counted = []
    for swap in (False, True):
        with FlopCounterMode(display=False) as counter, (attention_as_matmuls() if swap else contextlib.nullcontext()):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        counted.append(counter.get_total_flops())
        torch.testing.assert_close(out, fused(q, k, v, is_causal=True))
    assert counted == [0, 2 * (2 * 2 * 2 * 16 * 16 * 8)], "the CPU kernel counts 0; QK^T and AV, 2 B H T^2 d each"
    assert F.scaled_dot_product_attention is fused
    with pytest.raises(RuntimeError), attention_as_matmuls():
        raise RuntimeError("an error inside the block")
    assert F.scaled_dot_product_attention is fused, "restored after an error too"
    with pytest.raises(ValueError, match="default scale"), attention_as_matmuls():
        F.scaled_dot_product_attention(q, k, v, scale=0.5)
