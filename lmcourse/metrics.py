"""How language models are scored: perplexity and bits per character.

A model that gives the held-out tokens w_1..w_N a mean negative log-likelihood of
NLL = -(1/N) sum_t log p(w_t | w_<t) (in nats) has perplexity exp(NLL). Models with different
tokenizers are only comparable per character (or byte) of text: bits/char = total NLL / (C ln 2).
"""

from __future__ import annotations

import math

__all__ = ["perplexity", "bits_per_char", "nats_to_bits"]


def _check_nll(nll: float) -> float:
    try:
        nll = float(nll)
    except (TypeError, ValueError):
        raise ValueError(f"a negative log-likelihood must be one number (a float or a 0-d tensor), got "
                         f"{type(nll).__name__}; average the per-token losses first") from None
    if math.isnan(nll) or nll < 0:
        raise ValueError(f"a negative log-likelihood must be a number >= 0, got {nll}")
    return nll


def perplexity(mean_nll: float) -> float:
    """Perplexity exp(NLL) from the mean negative log-likelihood per token, in nats (inf when exp overflows)."""
    try:
        return math.exp(_check_nll(mean_nll))
    except OverflowError:  # exp(NLL) is larger than the largest float (NLL > ~709.8 nats)
        return math.inf


def nats_to_bits(nats: float) -> float:
    """Convert an information quantity from nats (natural log) to bits (log base 2)."""
    return nats / math.log(2)


def bits_per_char(total_nll: float, n_chars: int) -> float:
    """Bits per character from the *total* NLL (nats) a model gives a text of ``n_chars`` characters.

    For a character-level model, ``total_nll / n_chars`` is its mean NLL per token; for a subword
    model each token covers several characters, so the same text costs fewer tokens.
    """
    if n_chars <= 0:
        raise ValueError(f"n_chars must be positive, got {n_chars}: bits per character of an empty text is undefined")
    return nats_to_bits(_check_nll(total_nll) / n_chars)
