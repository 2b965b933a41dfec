"""KV cache and batched generation of the GPT: same tokens as recomputing everything, and as one prompt at a time."""

from __future__ import annotations

import pytest
import torch

from lmcourse.attention import causal_mask
from lmcourse.inference import CachedGPT, KVCache, LayerCache
from lmcourse.models import GPT
from lmcourse.models.gpt import GPTConfig
from lmcourse.sampling import generate, sample_next

VARIANTS = [
    {},
    {"pos": "sinusoidal", "n_kv_head": 2},
    {"pos": "rope", "n_kv_head": 1},
    {"pos": "rope", "window": 5, "norm": "rmsnorm", "mlp": "swiglu", "bias": False},
    {"pos": "learned", "window": 3},
    {"pos": "rope", "qk_norm": True, "mlp": "relu2"},
]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one thread is several times faster than two on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_gpt(block_size: int = 16, **kwargs) -> CachedGPT:
    """A small random GPT with chapter 10's machinery (KV cache, left padding)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, block_size=block_size, n_layer=2, n_head=4, n_embd=32, **kwargs))
    with torch.no_grad():  # larger weights than GPT-2's init, so that greedy decoding does not repeat one token
        for p in model.parameters():
            p.mul_(6.0) if p.dim() == 2 else None
    return CachedGPT(model)


@pytest.mark.parametrize("kwargs", VARIANTS)
@pytest.mark.parametrize("greedy", [True, False])
def test_cached_generation_gives_exactly_the_uncached_tokens(kwargs, greedy):
    model = tiny_gpt(**kwargs)
    prompt = torch.randint(0, 40, (2, 5), generator=torch.Generator().manual_seed(1))
    outs = []
    for use_cache in (True, False):  # 5 + 20 tokens: the cache overflows block_size = 16 and is rebuilt
        g = torch.Generator().manual_seed(2)
        outs.append(generate(model, prompt, 20, temperature=1.5, top_k=20, greedy=greedy, generator=g,
                             cache=KVCache.for_model(model, 2) if use_cache else False))
    g, ref = torch.Generator().manual_seed(2), prompt  # the loop by hand: re-read the last block_size tokens
    with torch.no_grad():
        for _ in range(20):
            logits = model.eval()(ref[:, -16:])[0][:, -1]
            ref = torch.cat([ref, sample_next(logits, 1.5, 20, greedy=greedy, generator=g)], dim=1)
    assert outs[0].shape == (2, 25)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], ref)
    assert len(outs[0][:, 5:].unique()) >= (2 if greedy else 8)  # not a test passing on a constant sequence


@pytest.mark.parametrize("kwargs", VARIANTS)
@pytest.mark.parametrize("use_cache", [True, False])
def test_left_padded_batch_equals_one_prompt_at_a_time(kwargs, use_cache):
    model = tiny_gpt(**kwargs).double()  # float64: batched and single matmuls differ only far below the argmax gaps
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 40, (n,), generator=g) for n in (2, 9, 5, 1)]
    P = max(len(p) for p in prompts)
    idx = torch.stack([torch.cat([torch.full((P - len(p),), 39), p]) for p in prompts])  # pads hold any id
    mask = torch.stack([(torch.arange(P) >= P - len(p)).long() for p in prompts])
    cache = KVCache.for_model(model, 4) if use_cache else False
    out = generate(model, idx, 12, greedy=True, attention_mask=mask, cache=cache)  # 9 + 12 > block_size
    for row, p in zip(out, prompts, strict=True):
        one = KVCache.for_model(model, 1) if use_cache else False
        alone = generate(model, p[None], 12, greedy=True, cache=one)[0]
        assert torch.equal(row[P - len(p):], alone)


def test_padding_mask_in_forward_matches_unpadded_logits_and_loss():
    model = tiny_gpt(pos="rope").double()
    x = torch.randint(0, 40, (1, 6), generator=torch.Generator().manual_seed(4))
    y = torch.randint(0, 40, (1, 6), generator=torch.Generator().manual_seed(5))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), x], dim=1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    logits, loss = model(x, y)
    logits_p, loss_p = model(padded, torch.cat([torch.full((1, 3), 7), y], dim=1), attention_mask=mask)
    assert torch.allclose(logits_p[:, 3:], logits, atol=1e-10)
    assert loss_p.item() == pytest.approx(loss.item(), abs=1e-10)  # the targets at the pads left the loss


def test_cache_holds_keys_and_values_of_n_kv_head_heads_and_positions_are_offset():
    model = tiny_gpt(pos="rope", n_kv_head=2)
    caches = KVCache.for_model(model, 2)
    assert caches[0].k.shape == (2, 2, 16, 8)  # (B, n_kv_head, block_size, head_dim)
    x = torch.randint(0, 40, (2, 7), generator=torch.Generator().manual_seed(6))
    full, _ = model(x)
    step1, _ = model(x[:, :4], cache=caches)
    step2, _ = model(x[:, 4:], cache=caches)  # positions 4..6, attending to the 4 cached ones
    assert caches[1].length == 7
    assert torch.allclose(torch.cat([step1, step2], dim=1), full, atol=1e-5)


def test_cached_chunks_equal_full_attention_with_window_gqa_and_rope():
    """Read in chunks of 3, 1 and 5 tokens through the cache, a model with a sliding window, grouped-query heads and
    RoPE gives the logits of one full pass; the causal mask's offset puts each chunk after the cached ones."""
    torch.manual_seed(0)
    model = CachedGPT(GPT(GPTConfig(vocab_size=20, block_size=32, n_layer=1, n_head=4, n_embd=16, n_kv_head=2,
                                    window=4, pos="rope"))).eval()
    x = torch.randint(0, 20, (2, 9), generator=torch.Generator().manual_seed(8))
    full, _ = model(x)
    cache = KVCache.for_model(model, 2)
    parts = [model(x[:, a:b], cache=cache)[0] for a, b in ((0, 3), (3, 4), (4, 9))]
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-6) and cache.length == 9
    assert torch.equal(causal_mask(2, 5, offset=3), causal_mask(5, 5)[3:])
    layer = LayerCache(2, 2, 4, 4)
    with pytest.raises(ValueError, match="do not fit"):
        layer.append(torch.zeros(2, 2, 5, 4), torch.zeros(2, 2, 5, 4))


def test_bad_cache_use_raises_value_error():
    model = tiny_gpt(block_size=8)
    caches = KVCache.for_model(model, 1)
    model(torch.zeros(1, 6, dtype=torch.long), cache=caches)
    with pytest.raises(ValueError, match="6 cached \\+ 3 new tokens"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=caches)
    with pytest.raises(ValueError, match="do not fit"):
        caches[0].append(torch.zeros(1, 4, 3, 8), torch.zeros(1, 4, 3, 8))
    with pytest.raises(ValueError, match="one layer cache per block"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=caches[:1])
    with pytest.raises(ValueError, match="attention_mask must be a \\(B, T\\)"):
        generate(model, torch.zeros(2, 3, dtype=torch.long), 2, attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="only 0 \\(padding\\) and 1"):
        model(torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.tensor([[0, 2, 1]]))
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, torch.zeros(1, 3, dtype=torch.long), -1)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, torch.zeros(1, 3, dtype=torch.long), 2, temperature=0.0)


def test_one_cache_serves_several_generations_and_its_length_is_every_layers():
    """generate empties the cache before it reads a prompt, so a cache can be reused; KVCache.length is the
    positions each layer holds, and reset() empties every layer."""
    model = tiny_gpt(n_kv_head=2)
    cache = KVCache.for_model(model, 1)
    assert len(cache) == 2 and cache.length == 0 and cache[0].k.dtype == next(model.parameters()).dtype
    prompt = torch.tensor([[3, 1, 4]])
    first = generate(model, prompt, 10, greedy=True, cache=cache)
    assert cache.length == 3 + 9 and all(layer.length == 12 for layer in cache)  # the last token is not fed
    assert torch.equal(generate(model, prompt, 10, greedy=True, cache=cache), first)
    assert torch.equal(generate(model, prompt, 10, greedy=True, cache=False), first)
    cache.reset()
    assert cache.length == 0


def test_the_plain_gpt_is_chapter_7s_and_the_wrapper_shares_its_weights_and_mode():
    """GPT.forward takes no cache and no padding (chapter 7); CachedGPT adds both without copying a weight, keeps the
    GPT's mode, and without cache or mask gives exactly the GPT's logits and loss."""
    cached = tiny_gpt()
    gpt = cached.gpt.eval()
    assert CachedGPT(gpt).training is False and all(
        p is q for p, q in zip(gpt.parameters(), cached.parameters(), strict=True))
    x = torch.randint(0, 40, (2, 9), generator=torch.Generator().manual_seed(7))
    (a, la), (b, lb) = gpt(x, x), CachedGPT(gpt)(x, x)
    assert torch.equal(a, b) and torch.equal(la, lb)
    with pytest.raises(TypeError):
        gpt(x, cache=KVCache.for_model(gpt, 2))
    with pytest.raises(ValueError, match="reads no attention_mask.*CachedGPT"):
        generate(gpt, x, 2, attention_mask=torch.ones_like(x))
