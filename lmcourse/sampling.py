"""Decoding: turning next-token distributions p(w_t | w_<t) into text.

A language model gives logits y (|V|,) for the next token; p(w_t | w_<t) = softmax(y). Generation repeats
"pick w_t, append it to the context" until an end token or a length limit. How w_t is picked is the decoder:

- greedy: w_t = argmax_w p(w | w_<t);
- sampling (ancestral): w_t ~ p(. | w_<t), optionally reshaped first by
  temperature T (softmax(y / T), i.e. p^(1/T) renormalised), top-k (keep the k most probable tokens)
  and top-p / nucleus (keep the smallest set of most probable tokens whose mass reaches p), in this order,
  as Hugging Face ``transformers`` chains its ``TemperatureLogitsWarper``, ``TopKLogitsWarper`` and
  ``TopPLogitsWarper``; filtered tokens get the logit -inf, so probability 0;
- beam search: keep the ``beam_width`` most probable partial sequences instead of one.

Also here: the tools that measure decoders. :func:`pass_at_k` (Chen et al. 2021), :func:`distinct_n`
(Li et al. 2016) and :func:`chi_square_test`, which checks that a sampler draws from the distribution it claims.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmcourse.core import check_non_negative_int, check_positive_int, is_number

__all__ = ["check_sampling_args", "filter_logits", "sample_next", "generate", "Hypothesis",
           "beam_search", "pass_at_k", "distinct_n", "chi_square_test"]


def check_sampling_args(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                        greedy: bool = False) -> None:
    """Raise a ValueError unless the decoding arguments make sense (temperature is not used when greedy)."""
    if not greedy and not (is_number(temperature) and temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be > 0 and finite, got {temperature!r}; for the limit T -> 0 "
                         "(always the most probable token) use greedy=True")
    if top_k is not None:
        check_positive_int(top_k, "top_k", " (or None to keep every token)")
    if top_p is not None and (not is_number(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (or None to keep every token), got {top_p!r}")


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Apply temperature, then top-k, then top-p to next-token logits; removed tokens get -inf.

    - temperature: y / T. softmax(y / T) is p^(1/T) renormalised: T < 1 sharpens, T > 1 flattens.
    - top-k: keep the tokens whose logit is at least the k-th largest (ties with the k-th are kept).
    - top-p: sort the tokens from least to most probable and drop them while the mass dropped so far is
      at most 1 - p: what is left is the smallest set of most probable tokens with mass >= p (the most
      probable token always stays). Among tokens of equal probability at the boundary the sort order decides.

    Args:
        logits: (..., |V|) floating-point logits, e.g. (B, |V|) for the last position of a batch.
        temperature: T > 0. top_k: k >= 1 or None. top_p: p in (0, 1] or None (p = 1 keeps every token).

    Returns:
        (..., |V|) logits divided by T with the filtered entries set to -inf.
    """
    check_sampling_args(temperature, top_k, top_p)
    _check_logits(logits)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1) the k-th largest logit
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1)  # ascending: least probable first
        mass_so_far = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (..., |V|)
        drop = mass_so_far <= 1 - top_p
        drop[..., -1] = False  # the most probable token always stays
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    return logits


def _check_logits(logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point:
        raise ValueError(f"logits must be a floating-point tensor (..., |V|), got "
                         f"{getattr(logits, 'dtype', type(logits).__name__)}")
    if logits.ndim == 0 or logits.shape[-1] == 0:
        raise ValueError(f"logits must have shape (..., |V|) with |V| >= 1, got {tuple(logits.shape)}")
    if torch.isnan(logits).any():
        raise ValueError("logits contain NaN; check the model's forward pass (e.g. an overflow or a 0/0)")


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, greedy: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token of each row: argmax (``greedy``) or a sample from softmax(filter_logits(logits, ...)).

    Args:
        logits: (B, |V|) next-token logits.
        temperature, top_k, top_p: as in :func:`filter_logits` (ignored with ``greedy=True``, but checked).
        greedy: take the most probable token (the first one on ties) instead of sampling.
        generator: a ``torch.Generator`` on the device of ``logits``, for reproducible samples.

    Returns:
        (B, 1) int64 token ids.
    """
    check_sampling_args(temperature, top_k, top_p, greedy)
    _check_logits(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D (B, |V|), got shape {tuple(logits.shape)}; "
                         "take the last position with logits[:, -1, :]")
    if greedy:
        return logits.argmax(dim=-1, keepdim=True)
    logits = filter_logits(logits, temperature, top_k, top_p)
    probs = F.softmax(logits.float() if logits.element_size() < 4 else logits, dim=-1)  # (B, |V|), half -> float
    if torch.isnan(probs).any():
        raise ValueError("a row of logits is -inf everywhere: no token has a positive probability to sample")
    return torch.multinomial(probs, 1, generator=generator)


def _next_logits(model: nn.Module, idx: torch.Tensor, **kwargs: object) -> torch.Tensor:
    """The logits (B, |V|) of the token after idx (B, T), from the model's ``(logits, loss)`` for idx.

    logits are (B, T, |V|), one row per position (the last is the next token's), or (B, |V|) for a window model
    such as the MLP LM, which predicts only the token after its window.
    """
    out = model(idx, **kwargs)
    logits = out[0] if isinstance(out, tuple) and len(out) == 2 else None
    if isinstance(logits, torch.Tensor) and logits.ndim == 3 and logits.shape[:2] == idx.shape:
        return logits[:, -1, :]
    if isinstance(logits, torch.Tensor) and logits.ndim == 2 and logits.shape[0] == idx.shape[0]:
        return logits
    got = f"logits of shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor) else (
        f"a tensor of shape {tuple(out.shape)}, not a pair" if isinstance(out, torch.Tensor) else type(out).__name__)
    raise ValueError(f"model(idx) must return (logits, loss) with logits of shape (B, T, |V|) = ({idx.shape[0]}, "
                     f"{idx.shape[1]}, |V|), or (B, |V|) for the token after a window; got {got}")


def _check_prompt(idx: torch.Tensor, max_new_tokens: int) -> None:
    if not isinstance(idx, torch.Tensor) or idx.dtype.is_floating_point or idx.dtype == torch.bool or idx.ndim != 2:
        raise ValueError(f"idx must be a 2-D tensor (B, T) of integer token ids, got "
                         f"{getattr(idx, 'dtype', type(idx).__name__)} {tuple(getattr(idx, 'shape', ()))}; "
                         "use ids[None] for a single prompt")
    if idx.shape[1] == 0:
        raise ValueError("idx has no tokens (T = 0): start from at least one token, e.g. a newline or <s>")
    check_non_negative_int(max_new_tokens, "max_new_tokens")


@torch.no_grad()
def generate(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
             generator: torch.Generator | None = None, eos_id: int | None = None,
             attention_mask: torch.Tensor | None = None, cache: object | None = None) -> torch.Tensor:
    """Append up to ``max_new_tokens`` tokens to each prompt, one :func:`sample_next` at a time: the one
    decoding loop of the course, for every language model.

    The model is called as every model of the course is, ``model(idx)`` -> ``(logits, loss)``, reading at most
    ``model.block_size`` tokens when it has that attribute (the last ones). With a ``cache`` (what the model keeps
    of the text it has read: a recurrent network's hidden state, chapter 4; a Transformer's keys and values,
    chapter 10) the prompt is read once and each later step feeds only the newest token,
    ``model(idx[:, -1:], cache=cache)``. Once the sequence outgrows ``block_size`` each step empties the cache
    (``cache.reset()``) and re-reads the last block_size tokens (a sliding window, as the uncached loop reads), so
    there the cache saves nothing. Runs in eval mode (no dropout) without gradients and restores the mode.

    Args:
        model: the language model.
        idx: (B, T) prompt ids on the model's device; rows of different lengths are left-padded.
        max_new_tokens: the length limit.
        temperature, top_k, top_p, greedy, generator: as in :func:`sample_next`.
        eos_id: the end token: a row that produced it is finished and is padded with ``eos_id``;
            generation stops early when every row is finished.
        attention_mask: optional (B, T) 0/1, 0 at the left padding of idx, passed on to a model that reads one
            (for a GPT: ``lmcourse.inference.CachedGPT(gpt)``).
        cache: an empty cache for the B rows, with ``reset()``; None: the model's own ``new_cache(B)`` if it has
            one (the recurrent models, and the GPT wrapped in ``lmcourse.inference.CachedGPT``), else none; False:
            none, the whole context is re-read at every step (same tokens, slower).

    Returns:
        (B, T + n) ids, the prompt followed by n <= max_new_tokens new tokens.
    """
    check_sampling_args(temperature, top_k, top_p, greedy)
    _check_prompt(idx, max_new_tokens)
    if attention_mask is not None and (not isinstance(attention_mask, torch.Tensor)
                                       or attention_mask.shape != idx.shape):
        raise ValueError(f"attention_mask must be a (B, T) = {tuple(idx.shape)} tensor of 0/1 (0 at padding), got "
                         f"{tuple(getattr(attention_mask, 'shape', ())) or type(attention_mask).__name__}")
    if attention_mask is not None and "attention_mask" not in inspect.signature(model.forward).parameters:
        raise ValueError(f"{type(model).__name__} reads no attention_mask; for left-padded rows of a GPT, generate "
                         "with lmcourse.inference.CachedGPT(model)")
    T_max, mask = getattr(model, "block_size", None), attention_mask
    if cache is None and hasattr(model, "new_cache"):
        cache = model.new_cache(idx.shape[0])
    cache = None if cache is False else cache
    was_training = model.training
    model.eval()
    try:
        finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
        n_cached = 0  # the tokens the cache holds
        for _ in range(max_new_tokens):
            if cache is not None and n_cached and (T_max is None or n_cached < T_max):  # feed the newest token
                new, kwargs = idx[:, -1:], {"cache": cache}
            else:  # (re)read the last block_size tokens, into the emptied cache if there is one
                new, n_cached, kwargs = _crop(model, idx), 0, {}
                if cache is not None:
                    cache.reset()
                    kwargs["cache"] = cache
            n_cached += new.shape[1]
            if mask is not None:
                kwargs["attention_mask"] = mask[:, -(n_cached if cache is not None else new.shape[1]):]
            w = sample_next(_next_logits(model, new, **kwargs), temperature, top_k, top_p, greedy, generator)
            if eos_id is not None:
                w = w.masked_fill(finished[:, None], eos_id)
                finished |= w[:, 0] == eos_id
            idx = torch.cat([idx, w], dim=1)  # (B, T + 1)
            if mask is not None:
                mask = torch.cat([mask, torch.ones_like(w, dtype=mask.dtype)], dim=1)
            if finished.all():
                break
    finally:
        model.train(was_training)
    return idx


class Hypothesis(NamedTuple):
    """One finished beam: ``ids`` (T + n,) the prompt and n new tokens, their total ``log_prob`` (nats)
    sum_t log p(w_t | w_<t) over the n new tokens, and ``score`` = log_prob / n ** length_penalty."""

    ids: torch.Tensor
    score: float
    log_prob: float


@torch.no_grad()
def beam_search(model: nn.Module, idx: torch.Tensor, beam_width: int, max_new_tokens: int,
                length_penalty: float = 1.0, eos_id: int | None = None) -> list[Hypothesis]:
    """Beam search for the most probable continuations of one prompt.

    At each step every live beam is extended by every token, and the ``beam_width`` extensions with the highest
    total log-probability are kept. An extension that ends with ``eos_id`` is finished and leaves the beam, which
    then shrinks by one (as described by Jurafsky & Martin); the search ends when no beam is left or after
    ``max_new_tokens`` steps. Finished and surviving beams are ranked by log_prob / n ** length_penalty, where n
    counts the new tokens: 0 ranks by total log-probability (which favours short outputs, every token costs
    probability), 1 by the mean per token. With ``beam_width`` >= |V| ** max_new_tokens nothing is ever pruned
    (exhaustive search); with ``beam_width = 1`` it is greedy decoding.

    Args:
        model: any model for :func:`generate` (logits (B, T, |V|), context cropped to ``model.block_size``).
        idx: (1, T) prompt ids. beam_width: beams kept, >= 1. max_new_tokens: >= 1.
        length_penalty: the exponent alpha of the length normalisation. eos_id: the end token, or None.

    Returns:
        up to ``beam_width`` :class:`Hypothesis`, best score first.
    """
    _check_prompt(idx, max_new_tokens)
    if idx.shape[0] != 1:
        raise ValueError(f"beam_search decodes one prompt (1, T) at a time, got {idx.shape[0]} rows; loop over them")
    check_positive_int(beam_width, "beam_width")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1 for beam search")
    was_training = model.training
    model.eval()
    try:
        beams, beam_logp = idx, torch.zeros(1, device=idx.device, dtype=torch.float64)  # (A, T + t), (A,)
        finished: list[tuple[torch.Tensor, float, int]] = []
        for t in range(1, max_new_tokens + 1):
            logp = F.log_softmax(_next_logits(model, _crop(model, beams)).double(), dim=-1)  # (A, |V|)
            total = (beam_logp[:, None] + logp).flatten()  # (A * |V|,)
            best, flat = torch.topk(total, min(beam_width, int(torch.isfinite(total).sum())))
            rows, tokens = flat // logp.shape[1], flat % logp.shape[1]
            beams = torch.cat([beams[rows], tokens[:, None]], dim=1)
            done = tokens == eos_id if eos_id is not None else torch.zeros_like(tokens, dtype=torch.bool)
            finished += [(beams[i], best[i].item(), t) for i in done.nonzero()[:, 0].tolist()]
            beams, beam_logp = beams[~done], best[~done]
            if len(beams) == 0:
                break
        finished += [(ids, lp, ids.shape[0] - idx.shape[1]) for ids, lp in zip(beams, beam_logp.tolist(), strict=True)]
    finally:
        model.train(was_training)
    ranked = sorted((Hypothesis(ids, lp / n ** length_penalty, lp) for ids, lp, n in finished),
                    key=lambda h: h.score, reverse=True)
    return ranked[:beam_width]


def _crop(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """The last ``model.block_size`` tokens of idx (B, T), all of them for a model without that attribute."""
    T_max = getattr(model, "block_size", None)
    return idx if T_max is None else idx[:, -T_max:]


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples of which c are correct (Chen et al. 2021).

    pass@k = 1 - C(n - c, k) / C(n, k): the probability that k samples drawn without replacement from the n
    include a correct one. The ratio is computed as prod_{i = n-c+1}^{n} (1 - k / i), with no huge binomials.
    """
    check_positive_int(n, "n", " (the number of samples)")
    check_non_negative_int(c, "c", " (the number of correct samples)")
    check_positive_int(k, "k")
    if not c <= n:
        raise ValueError(f"need n >= 1 samples and 0 <= c <= n correct ones, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of samples n={n}, got k={k}; draw more samples")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return 1.0 - math.prod(1 - k / i for i in range(n - c + 1, n + 1))


def distinct_n(sequences: Sequence[Sequence], n: int) -> float:
    """Distinct-n (Li et al. 2016): the number of different n-grams over all sequences / the number of n-grams.

    1 means no n-gram repeats anywhere; repetitive or mutually similar samples score low.
    """
    check_positive_int(n, "n")
    grams = [tuple(s[i:i + n]) for s in sequences for i in range(len(s) - n + 1)]
    if not grams:
        raise ValueError(f"the sequences contain no {n}-gram; pass longer sequences or a smaller n")
    return len(set(grams)) / len(grams)


def chi_square_test(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0
                    ) -> tuple[float, int, float]:
    """Pearson's chi-square goodness-of-fit test: are ``counts`` draws from the distribution ``probs``?

    X^2 = sum_i (O_i - E_i)^2 / E_i with E_i = N p_i, O_i = counts[i]. Categories with p_i = 0 must be empty
    (else the p-value is 0); categories with E_i < ``min_expected`` are pooled into one so that the chi-square
    approximation holds. Under the null hypothesis X^2 ~ chi^2(df) with df = (categories left) - 1, and the
    p-value is P(chi^2(df) >= X^2) = Q(df / 2, X^2 / 2), the regularised upper incomplete gamma function.

    Args:
        counts: (|V|,) observed counts. probs: (|V|,) the claimed distribution (sums to 1).

    Returns:
        (X^2, df, p-value). A small p-value (say < 0.001) rejects the claim.
    """
    counts, probs = torch.as_tensor(counts, dtype=torch.float64), torch.as_tensor(probs, dtype=torch.float64)
    if counts.ndim != 1 or counts.shape != probs.shape:
        raise ValueError(f"counts and probs must be 1-D of the same length, got {tuple(counts.shape)} and "
                         f"{tuple(probs.shape)}")
    if (probs < 0).any() or abs(probs.sum().item() - 1) > 1e-6 or (counts < 0).any():
        raise ValueError("probs must be a distribution (non-negative, summing to 1) and counts non-negative")
    if (counts[probs == 0] > 0).any():
        return math.inf, 0, 0.0  # a token that cannot occur occurred
    expected = counts.sum() * probs
    rare = (expected < min_expected) & (probs > 0)
    observed_pooled, expected_pooled = counts[rare].sum(), expected[rare].sum()
    keep = (expected >= min_expected)
    observed, expected = counts[keep], expected[keep]
    if expected_pooled > 0:
        observed = torch.cat([observed, observed_pooled[None]])
        expected = torch.cat([expected, expected_pooled[None]])
    df = len(expected) - 1
    if df < 1:
        raise ValueError(f"only {len(expected)} category with an expected count >= {min_expected}: "
                         "draw more samples")
    stat = ((observed - expected) ** 2 / expected).sum()
    return stat.item(), df, torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), stat / 2).item()
