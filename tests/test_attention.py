"""Attention (chapters 6-7) checked against torch: F.scaled_dot_product_attention, nn.MultiheadAttention, loops."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcourse.attention import MultiHeadAttention, causal_mask, padding_mask, scaled_dot_product_attention
from lmcourse.models.gpt import GPTConfig, SelfAttention
from lmcourse.models.layers import RotaryEmbedding

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run on one thread: these tiny tensors gain nothing from more, and on a loaded machine OpenMP's waiting
    threads make small ops many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def qkv(B=2, H=3, T_q=5, T_k=5, d_k=4, d_v=6, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, d, generator=g, dtype=dtype, requires_grad=True)
            for T, d in ((T_q, d_k), (T_k, d_k), (T_k, d_v))]


def forward_and_grads(fn, q, k, v, seed=1):
    """fn's output and the gradients of <out, G> for a fixed random G with respect to q, k, v."""
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v)
    G = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return (out, *torch.autograd.grad((out * G).sum(), (q, k, v)))


def assert_close_to_torch(q, k, v, mask=None, is_causal=False):
    ours = forward_and_grads(lambda q, k, v: scaled_dot_product_attention(q, k, v, mask, is_causal), q, k, v)
    if is_causal and mask is not None:  # torch takes one or the other; its causal mask is the lower triangle
        mask, is_causal = mask & torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril(), False
    ref = forward_and_grads(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask, is_causal=is_causal),
                            q, k, v)
    for name, a, b in zip(("out", "dq", "dk", "dv"), ours, ref, strict=True):
        assert torch.isfinite(a).all(), name
        assert (a - b).abs().max() < TOL[q.dtype], f"{name} differs by {(a - b).abs().max():.2e}"


def random_mask(shape, seed=2):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.7


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("T_q,T_k", [(5, 5), (3, 7), (7, 3)])
@pytest.mark.parametrize("kind", ["none", "causal", "padding", "broadcast", "full", "causal+padding"])
def test_sdpa_equals_torch_forward_and_gradients(dtype, T_q, T_k, kind):
    q, k, v = qkv(T_q=T_q, T_k=T_k, dtype=dtype)
    pad = padding_mask([T_k, max(1, T_k - 2)], T_k)  # (B, 1, 1, T_k): the 2nd sequence has 2 padding tokens
    masks = {"none": None, "causal": None, "padding": pad, "broadcast": random_mask((T_q, T_k)),
             "full": random_mask((2, 3, T_q, T_k)), "causal+padding": pad}
    assert_close_to_torch(q, k, v, masks[kind], is_causal="causal" in kind)


def test_sdpa_is_the_formula_and_returns_the_weights():
    q, k, v = qkv(B=1, H=1, T_q=4, T_k=6)
    out, weights = scaled_dot_product_attention(q, k, v, return_weights=True)
    scores = torch.empty(1, 1, 4, 6, dtype=q.dtype)
    for i in range(4):
        for j in range(6):
            scores[0, 0, i, j] = (q[0, 0, i] * k[0, 0, j]).sum() / math.sqrt(4)
    expected = torch.exp(scores) / torch.exp(scores).sum(-1, keepdim=True)
    assert torch.allclose(weights, expected, atol=1e-12)
    assert torch.allclose(out, weights @ v, atol=1e-12)
    _, causal_weights = scaled_dot_product_attention(q, k, v, is_causal=True, return_weights=True)
    assert torch.allclose(causal_weights.sum(-1), torch.ones(1, 1, 4, dtype=q.dtype))
    assert (causal_weights[0, 0][~causal_mask(4, 6)] == 0).all() and (causal_weights[0, 0][causal_mask(4, 6)] > 0).all()


def test_fully_masked_rows_give_zeros_and_zero_gradients_like_torch():
    q, k, v = qkv(T_q=4, T_k=4)
    mask = causal_mask(4).clone()
    mask[2] = False  # query 2 may attend to nothing
    out, dq, dk, dv = forward_and_grads(lambda q, k, v: scaled_dot_product_attention(q, k, v, mask), q, k, v)
    assert torch.isfinite(out).all() and torch.isfinite(dq).all() and torch.isfinite(dk).all()
    assert (out[:, :, 2] == 0).all() and (dq[:, :, 2] == 0).all()
    assert_close_to_torch(q, k, v, mask)
    _, weights = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    assert (weights[:, :, 2] == 0).all()


def test_sdpa_rejects_bad_input():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="boolean"):
        scaled_dot_product_attention(q, k, v, mask=torch.ones(5, 5))
    with pytest.raises(ValueError, match="d_k"):
        scaled_dot_product_attention(q, k[..., :3], v)
    with pytest.raises(ValueError, match="d_k"):
        scaled_dot_product_attention(q, k, v[..., :4, :])


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 5), st.booleans(), st.integers(0, 10**6))
def test_sdpa_property_random_shapes_and_masks(T_q, T_k, d, is_causal, seed):
    q, k, v = qkv(B=2, H=2, T_q=T_q, T_k=T_k, d_k=d, d_v=d + 1, seed=seed)
    assert_close_to_torch(q, k, v, random_mask((2, 1, T_q, T_k), seed), is_causal)


@pytest.mark.parametrize("T_q,T_k,window", [(6, 6, None), (6, 6, 1), (6, 6, 3), (4, 7, 2), (7, 4, None), (5, 5, 9)])
def test_causal_mask_equals_loop(T_q, T_k, window):
    expected = torch.zeros(T_q, T_k, dtype=torch.bool)
    for i in range(T_q):
        for j in range(T_k):
            expected[i, j] = j <= i and (window is None or i - window < j)
    assert torch.equal(causal_mask(T_q, T_k, window=window), expected)
    if T_q == T_k and window is None:
        assert torch.equal(causal_mask(T_q), torch.ones(T_q, T_q, dtype=torch.bool).tril())


def test_masks_reject_bad_arguments():
    with pytest.raises(ValueError, match="window"):
        causal_mask(4, window=0)
    with pytest.raises(ValueError, match="positive"):
        causal_mask(0)
    with pytest.raises(ValueError, match="lengths"):
        padding_mask([3, 6], 5)
    with pytest.raises(ValueError, match="lengths"):
        padding_mask([[1, 2]], 5)


def test_padding_mask_equals_loop():
    lengths = [3, 0, 5]
    mask = padding_mask(lengths, 5)
    assert mask.shape == (3, 1, 1, 5) and mask.dtype == torch.bool
    for b, n in enumerate(lengths):
        assert mask[b, 0, 0].tolist() == [t < n for t in range(5)]


# ----------------------------------------------------------------------------------- multi-head attention


def mha_pair(d_model=12, n_head=3, seed=0):
    """Our MultiHeadAttention and torch.nn.MultiheadAttention with the same weights (float64, eval mode)."""
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(d_model, n_head, bias=True, batch_first=True, dtype=torch.float64).eval()
    nn.init.normal_(ref.in_proj_bias)  # torch initialises biases to zero; make them count
    ours = MultiHeadAttention(d_model, n_head).double().eval()
    with torch.no_grad():
        for proj, w, b in zip((ours.q_proj, ours.k_proj, ours.v_proj), ref.in_proj_weight.chunk(3),
                              ref.in_proj_bias.chunk(3), strict=True):
            proj.weight.copy_(w)
            proj.bias.copy_(b)
        ours.o_proj.weight.copy_(ref.out_proj.weight)
        ours.o_proj.bias.copy_(ref.out_proj.bias.normal_())
    return ours, ref


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_mha_equals_torch_multihead_attention(cross, causal, padded):
    ours, ref = mha_pair()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 12, generator=g, dtype=torch.float64)
    context = torch.randn(2, 7, 12, generator=g, dtype=torch.float64) if cross else x
    S = context.shape[1]
    lengths = [S, S - 3]
    # torch's masks are True where attention is NOT allowed; ours are True where it is
    key_padding = ~padding_mask(lengths, S)[:, 0, 0] if padded else None
    attn_mask = ~causal_mask(5, S) if causal else None
    expected, _ = ref(x, context, context, key_padding_mask=key_padding, attn_mask=attn_mask, need_weights=False)
    got = ours(x, context=context if cross else None, mask=padding_mask(lengths, S) if padded else None,
               is_causal=causal)
    assert got.shape == (2, 5, 12)
    assert (got - expected).abs().max() < 1e-12


def gpt_attention(d: int, n_head: int, n_kv_head: int | None = None, window: int | None = None,
                  bias: bool = True) -> SelfAttention:
    """The GPT's causal self-attention (chapter 6's MultiHeadAttention with the config's switches)."""
    return SelfAttention(GPTConfig(vocab_size=2, block_size=32, n_layer=1, n_head=n_head, n_embd=d,
                                   n_kv_head=n_kv_head, window=window, bias=bias))


def test_mha_fast_paths_equal_the_from_scratch_function():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, bias=False).double()
    rope = RotaryEmbedding(4, 10).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    B, T = 2, 9

    def heads(t):
        return t.view(B, T, 4, 4).transpose(1, 2)

    q, k, v = heads(mha.q_proj(x)), heads(mha.k_proj(x)), heads(mha.v_proj(x))
    windowed, plain = (gpt_attention(16, 4, window=w, bias=False).double() for w in (3, None))
    for sa in (windowed, plain):  # the GPT's self-attention, with the same weights
        sa.load_state_dict(mha.state_dict())
    for name, got, mask, rotate in [("causal", mha(x, is_causal=True), causal_mask(T), False),
                                    ("window", windowed(x), causal_mask(T, window=3), False),
                                    ("rope", plain(x, rope=rope), causal_mask(T), True)]:
        qq, kk = (rope(q), rope(k)) if rotate else (q, k)
        y = scaled_dot_product_attention(qq, kk, v, mask).transpose(1, 2).reshape(B, T, 16)
        assert (got - mha.o_proj(y)).abs().max() < 1e-12, name


@pytest.mark.parametrize("n_kv_head", [1, 2, 4])
def test_grouped_query_attention_equals_mha_with_repeated_kv_heads(n_kv_head):
    """GQA with n_kv_head heads == MHA whose key/value weights repeat each kv head for its n_head/n_kv_head
    query heads (n_kv_head=1: multi-query attention; n_kv_head=n_head: plain MHA)."""
    torch.manual_seed(0)
    n_head, hd = 4, 3
    gqa = MultiHeadAttention(12, n_head, n_kv_head=n_kv_head).double()
    assert gqa.k_proj.weight.shape == (n_kv_head * hd, 12)
    mha = MultiHeadAttention(12, n_head).double()
    rep = n_head // n_kv_head
    with torch.no_grad():
        for name in ("q_proj", "o_proj"):
            getattr(mha, name).load_state_dict(getattr(gqa, name).state_dict())
        for name in ("k_proj", "v_proj"):
            w = getattr(gqa, name).weight.view(n_kv_head, hd, 12)
            b = getattr(gqa, name).bias.view(n_kv_head, hd)
            getattr(mha, name).weight.copy_(torch.cat([w[h // rep] for h in range(n_head)]))
            getattr(mha, name).bias.copy_(torch.cat([b[h // rep] for h in range(n_head)]))
    x = torch.randn(2, 6, 12, dtype=torch.float64)
    for kwargs in ({}, {"is_causal": True}):
        assert (gqa(x, **kwargs) - mha(x, **kwargs)).abs().max() < 1e-12
    windowed = [gpt_attention(12, n_head, n_kv, window=2).double() for n_kv in (n_kv_head, None)]
    for sa, weights in zip(windowed, (gqa, mha), strict=True):
        sa.load_state_dict(weights.state_dict())
    assert (windowed[0](x) - windowed[1](x)).abs().max() < 1e-12


def test_mha_rejects_bad_arguments():
    with pytest.raises(ValueError, match="divide d_model"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="n_kv_head"):
        MultiHeadAttention(12, 4, n_kv_head=3)
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match="context"):
        mha(x, context=torch.randn(3, 3, 8))
    with pytest.raises(ValueError, match=r"\(B, T, d_model\)"):
        mha(x[0])
    with pytest.raises(ValueError, match=r"\(B, T, d_model\) with d_model=8, got shape \(2, 3, 7\)"):
        mha(x[..., :7])  # the wrong width: caught before the projections' matmul
    with pytest.raises(ValueError, match="boolean"):
        mha(x, mask=torch.ones(3, 3))


# ----------------------------------------------------------------------------------- rotary embeddings


def rope_complex(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Reference RoPE: coordinate pairs (x_i, x_{i+d/2}) as complex numbers z_i, multiplied by e^{i m theta_i}."""
    d = x.shape[-1]
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    z = torch.complex(x[..., : d // 2], x[..., d // 2:]) * torch.polar(torch.ones(1, dtype=torch.float64),
                                                                       positions[:, None] * theta)
    return torch.cat([z.real, z.imag], dim=-1)


def test_rope_equals_complex_rotation_and_preserves_norms():
    rope = RotaryEmbedding(8, 32).double()  # its cos/sin table is float32: agreement to ~1e-7
    x = torch.randn(2, 3, 10, 8, dtype=torch.float64)
    for offset in (0, 5, 22):
        got = rope(x, offset=offset)
        assert (got - rope_complex(x, torch.arange(offset, offset + 10, dtype=torch.float64))).abs().max() < 1e-6
        assert (got.norm(dim=-1) - x.norm(dim=-1)).abs().max() < 1e-6
    assert torch.allclose(rope(x[..., :1, :]), x[..., :1, :])  # position 0: no rotation
    with pytest.raises(ValueError, match="outside"):
        rope(x, offset=23)
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(7, 4)


def test_rope_scores_depend_only_on_the_offset():
    """<R_m q, R_n k> is the same for every (m, n) with the same m - n, and changes with m - n."""
    rope = RotaryEmbedding(16, 64).double()
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(16, generator=g, dtype=torch.float64), torch.randn(16, generator=g, dtype=torch.float64)

    def score(m, n):
        return float(rope(q[None], offset=m) @ rope(k[None], offset=n).T)

    for delta in (-5, 0, 3, 17):
        scores = [score(n + delta, n) for n in range(max(0, -delta), 40)]
        assert max(scores) - min(scores) < 1e-5, delta  # float32 cos/sin table
    offsets = [score(d, 0) for d in range(6)]
    assert min(abs(a - b) for i, a in enumerate(offsets) for b in offsets[:i]) > 1e-3  # but m - n matters
