"""The fixed-window MLP language model of Bengio et al. (2003), and the windows it trains on.

The model reads the k = ``context_size`` tokens before position t and predicts w_t:

    x = [C[w_{t-k}]; ...; C[w_{t-1}]]          concatenated embeddings, (k * n_embd,)
    h = tanh(H x + d)                           hidden layer, (n_hidden,)
    y = U h + b  (+ W x with direct=True)       logits, (|V|,)
    p(w_t | w_{t-k..t-1}) = softmax(y)[w_t]

C is the embedding table (|V|, n_embd). Bengio's optional "direct connections" W from the embeddings to
the output are kept as an option; everything else in the book uses the plain model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmcourse.core import check_ids, check_non_negative_int, check_positive_int

__all__ = ["MLPLM", "make_windows"]


class MLPLM(nn.Module):
    """Fixed-window neural language model: embeddings -> concatenation -> tanh layer -> vocabulary logits.

    Args:
        vocab_size: |V|, the number of token ids (ids are 0..|V|-1).
        context_size: k, how many previous tokens the model sees.
        n_embd: size of each token's embedding (a row of C).
        n_hidden: size of the tanh hidden layer.
        direct: add Bengio's direct connections W x from the concatenated embeddings to the logits.
        seed: the parameters are initialised from this seed (PyTorch's default initialisers), without
            touching the global random state, so the same arguments always give the same model.
    """

    def __init__(self, vocab_size: int, context_size: int, n_embd: int = 16, n_hidden: int = 256,
                 direct: bool = False, seed: int = 0) -> None:
        super().__init__()
        for name, value in [("vocab_size", vocab_size), ("context_size", context_size),
                            ("n_embd", n_embd), ("n_hidden", n_hidden)]:
            check_positive_int(value, name)
        self.vocab_size, self.context_size = vocab_size, context_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.emb = nn.Embedding(vocab_size, n_embd)  # C
            self.hidden = nn.Linear(context_size * n_embd, n_hidden)  # H, d
            self.out = nn.Linear(n_hidden, vocab_size)  # U, b
            self.direct = nn.Linear(context_size * n_embd, vocab_size, bias=False) if direct else None  # W

    @property
    def block_size(self) -> int:
        """The context the model reads (its window, k tokens): ``lmcourse.sampling.generate`` feeds it the last k."""
        return self.context_size

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next-token logits for each context window.

        Args:
            idx: (B, context_size) integer token ids, the k tokens before each target, oldest first.
            targets: optional (B,) integer ids of the tokens that follow.

        Returns:
            ``(logits, loss)``: logits (B, vocab_size) for the token after each window and, with ``targets``, the
            mean cross-entropy -1/B sum_i log p(targets_i | idx_i) in nats (a 0-d tensor), else None.
        """
        self._check_ids(idx, "idx", 2)
        if idx.shape[1] != self.context_size:
            raise ValueError(f"idx has {idx.shape[1]} tokens per row but this model reads context_size="
                             f"{self.context_size}; build windows with make_windows(ids, {self.context_size})")
        x = self.emb(idx).flatten(1)  # (B, k * n_embd)
        logits = self.out(torch.tanh(self.hidden(x)))  # (B, |V|)
        if self.direct is not None:
            logits = logits + self.direct(x)
        if targets is None:
            return logits, None
        self._check_ids(targets, "targets", 1)
        if targets.shape[0] != idx.shape[0]:
            raise ValueError(f"targets has {targets.shape[0]} entries but idx has {idx.shape[0]} rows; "
                             "there must be one target per context window")
        return logits, F.cross_entropy(logits, targets.long())

    def _check_ids(self, ids: torch.Tensor, name: str, ndim: int) -> None:
        check_ids(ids, self.vocab_size, name, ndim, "(B, context_size)" if ndim == 2 else "(B,)")


def make_windows(ids: Sequence[int] | torch.Tensor, context_size: int, pad_id: int | None = None,
                 reset_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a token sequence w_1..w_T into (context, next token) training pairs.

    Without ``pad_id`` only full windows are made: X[i] = w_{i+1..i+k}, Y[i] = w_{i+k+1}, so the first k
    tokens are never targets and N = T - k. With ``pad_id`` the sequence is first preceded by k copies of
    ``pad_id`` (a start symbol, like the n-gram's <s>), so every token is a target once and N = T:
    the first window is all padding, and ``pad_id`` is never a target unless it occurs in ``ids``.

    With ``reset_id`` (e.g. the newline) a window never looks back past that token: in each window, every
    token before the last ``reset_id`` becomes ``reset_id``. With ``pad_id == reset_id`` this gives exactly
    the windows of each line padded on its own, joined, as an n-gram model padding each sentence with <s>.

    >>> X, Y = make_windows([5, 6, 7], 2, pad_id=0)
    >>> X.tolist(), Y.tolist()
    ([[0, 0], [0, 5], [5, 6]], [5, 6, 7])
    >>> make_windows([5, 0, 6, 7], 2, pad_id=0, reset_id=0)[0].tolist()
    [[0, 0], [0, 5], [0, 0], [0, 6]]

    Args:
        ids: (T,) token ids.
        context_size: k >= 1.
        pad_id: the id used to pad the start, or None for full windows only.
        reset_id: the id after which a window starts afresh, or None.

    Returns:
        X (N, k) and Y (N,), both int64 on the device of ``ids`` (CPU for a list).
    """
    check_positive_int(context_size, "context_size")
    for name, value in [("pad_id", pad_id), ("reset_id", reset_id)]:
        if value is not None:
            check_non_negative_int(value, name, " (a token id) or None")
    ids = torch.as_tensor(ids)
    if ids.numel() and (ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool):
        raise ValueError(f"ids must be integer token ids, got {ids.dtype}; a float id would be silently rounded down")
    ids = ids.long()
    if ids.ndim != 1:
        raise ValueError(f"ids must be a 1-D sequence of token ids, got shape {tuple(ids.shape)}")
    if pad_id is not None:
        ids = torch.cat([torch.full((context_size,), pad_id, dtype=torch.long, device=ids.device), ids])
    if len(ids) <= context_size:
        raise ValueError(f"a sequence of {len(ids)} tokens has no window of {context_size} tokens plus a target; "
                         "use a longer sequence, a smaller context_size, or pad_id= to pad the start")
    X, Y = ids.unfold(0, context_size, 1)[:-1].contiguous(), ids[context_size:].clone()
    if reset_id is not None:
        # a position is hidden if a reset_id occurs at it or after it in the window: a reversed cumulative sum
        hidden = (X == reset_id).flip(1).cumsum(1).flip(1) > 0  # (N, k)
        X[hidden] = reset_id
    return X, Y
