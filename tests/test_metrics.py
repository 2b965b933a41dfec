"""lmcourse.metrics against torch's cross-entropy and a direct computation in bits."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmcourse.metrics import bits_per_char, nats_to_bits, perplexity


def test_perplexity_is_exp_of_torch_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(50, 7, generator=g, dtype=torch.float64), torch.randint(0, 7, (50,), generator=g)
    nll = F.cross_entropy(logits, targets).item()
    probs = logits.softmax(-1)[torch.arange(50), targets]
    assert perplexity(nll) == pytest.approx(math.prod(1 / p for p in probs.tolist()) ** (1 / 50), rel=1e-12)


def test_uniform_model_has_perplexity_v_and_log2_v_bits():
    v = 65
    assert perplexity(math.log(v)) == pytest.approx(v)
    assert bits_per_char(1000 * math.log(v), 1000) == pytest.approx(math.log2(v))
    assert nats_to_bits(math.log(2)) == pytest.approx(1.0)


def test_bits_per_char_of_a_subword_model():
    # 3 tokens of probability 1/2, 1/4, 1/8 that together spell 12 characters: 6 bits over 12 characters
    total_nll = -sum(math.log(p) for p in (0.5, 0.25, 0.125))
    assert bits_per_char(total_nll, 12) == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [-0.1, float("nan")])
def test_bad_nll_is_rejected(bad):
    with pytest.raises(ValueError, match="negative log-likelihood must be a number >= 0"):
        perplexity(bad)


def test_empty_text_is_rejected():
    with pytest.raises(ValueError, match="empty text"):
        bits_per_char(1.0, 0)


def test_perplexity_of_a_huge_loss_is_inf_and_a_non_number_is_explained():
    assert perplexity(1000.0) == math.inf  # exp(1000) overflows a float: a diverged model's perplexity is inf
    for bad in ([1.0, 2.0], torch.tensor([1.0, 2.0]), None):
        with pytest.raises(ValueError, match=r"must be one number \(a float or a 0-d tensor\)"):
            perplexity(bad)
