"""An encoder-decoder (seq2seq) model on a toy task, with and without additive attention (chapter 6).

The task: read a sequence of symbols x_1..x_S and write it backwards, y = x_S..x_1, then EOS. Each
sequence has its own length, so batches are padded with PAD and carry their lengths.

The model: a bidirectional GRU encoder reads the source into states h_1..h_S. A GRU decoder starts from
s_0, made from the encoder's two final states, and writes one token per step. Without attention that one
vector is all the decoder ever sees of the source (the *bottleneck*). With attention (Bahdanau et al.,
2015) the decoder state s_{t-1} scores every encoder state, e_{tj} = v^T tanh(W s_{t-1} + U h_j + b), and
the softmax of the scores weights the average c_t = sum_j a_{tj} h_j that the decoder reads at step t.
Training uses teacher forcing (the decoder reads the true previous token); :meth:`Seq2Seq.greedy_decode`
feeds back its own argmax and returns the attention weights for heat maps.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from tqdm.auto import tqdm

from lmcourse.core import check_ids, check_positive_int
from lmcourse.train import TrainConfig, lr_at

__all__ = ["PAD", "BOS", "EOS", "N_SPECIAL", "SYMBOLS", "ReverseBatch", "reverse_batch", "to_string",
           "AdditiveAttention", "Seq2Seq", "train_reverse", "exact_match"]

PAD, BOS, EOS = 0, 1, 2
N_SPECIAL = 3  # symbol k has id N_SPECIAL + k
SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyz"


class ReverseBatch(NamedTuple):
    """A padded batch of the reverse task, B sequences of lengths L_b <= S.

    src (B, S): x_1..x_L then PAD; lengths (B,): L_b; tgt_in (B, S + 1): BOS, x_L..x_1, then PAD (what the
    decoder reads under teacher forcing); tgt_out (B, S + 1): x_L..x_1, EOS, then PAD (what it must write).
    """

    src: torch.Tensor
    lengths: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor


def reverse_batch(batch_size: int, min_len: int, max_len: int, n_symbols: int = 10,
                  generator: torch.Generator | None = None) -> ReverseBatch:
    """``batch_size`` random sequences with lengths uniform in [min_len, max_len], padded to S = max_len."""
    check_positive_int(batch_size, "batch_size")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    if not 1 <= n_symbols <= len(SYMBOLS):
        raise ValueError(f"n_symbols must be in 1..{len(SYMBOLS)}, got {n_symbols}")
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=generator)
    symbols = torch.randint(N_SPECIAL, N_SPECIAL + n_symbols, (batch_size, max_len), generator=generator)
    pos = torch.arange(max_len)
    src = symbols.masked_fill(pos >= lengths[:, None], PAD)  # (B, S)
    rev_idx = (lengths[:, None] - 1 - pos).clamp(min=0)  # position L-1-t of the source, for t < L
    reversed_ = src.gather(1, rev_idx).masked_fill(pos >= lengths[:, None], PAD)  # (B, S)
    pad = torch.full((batch_size, 1), PAD)
    tgt_in = torch.cat([torch.full((batch_size, 1), BOS), reversed_], dim=1)  # (B, S + 1)
    tgt_out = torch.cat([reversed_, pad], dim=1).scatter(1, lengths[:, None], EOS)  # EOS at position L
    return ReverseBatch(src, lengths, tgt_in, tgt_out)


def to_string(ids: torch.Tensor | list[int]) -> str:
    """Symbols as characters, special tokens as ``<bos>``/``<eos>``; PAD is dropped."""
    names = {BOS: "<bos>", EOS: "<eos>", PAD: ""}
    return "".join(names.get(i, SYMBOLS[i - N_SPECIAL] if i >= N_SPECIAL else "?") for i in list(map(int, ids)))


class AdditiveAttention(nn.Module):
    """Bahdanau (additive) attention: e_j = v^T tanh(W s + U h_j + b), a = softmax(e) over the real positions.

    ``forward(s, h, mask)``: a query s (B, D_s), states h (B, S, D_h) and a boolean mask (B, S) that is True
    at real positions -> the context c = sum_j a_j h_j (B, D_h) and the weights a (B, S). Masked positions get
    weight exactly 0.
    """

    def __init__(self, query_size: int, key_size: int, attn_size: int) -> None:
        super().__init__()
        for name, value in [("query_size", query_size), ("key_size", key_size), ("attn_size", attn_size)]:
            check_positive_int(value, name)
        self.W = nn.Linear(query_size, attn_size, bias=False)
        self.U = nn.Linear(key_size, attn_size)
        self.v = nn.Linear(attn_size, 1, bias=False)

    def forward(self, s: torch.Tensor, h: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if s.ndim != 2 or s.shape[1] != self.W.in_features:
            raise ValueError(f"the query s must have shape (B, {self.W.in_features}), got {tuple(s.shape)}")
        if h.ndim != 3 or h.shape[0] != s.shape[0] or h.shape[2] != self.U.in_features:
            raise ValueError(f"the states h must have shape (B={s.shape[0]}, S, {self.U.in_features}), "
                             f"got {tuple(h.shape)}")
        scores = self.v(torch.tanh(self.W(s)[:, None, :] + self.U(h))).squeeze(-1)  # (B, S)
        if mask is not None:
            if mask.dtype != torch.bool or mask.shape != scores.shape:
                raise ValueError(f"mask must be a bool tensor of shape {tuple(scores.shape)} (True = real position), "
                                 f"got {mask.dtype} {tuple(mask.shape)}")
            if not mask.any(dim=1).all():
                raise ValueError("every row of the mask needs at least one True (a sequence of length 0 has "
                                 "nothing to attend to)")
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = F.softmax(scores, dim=-1)  # (B, S)
        context = torch.bmm(weights[:, None, :], h).squeeze(1)  # (B, D_h)
        return context, weights


class Seq2Seq(nn.Module):
    """GRU encoder-decoder over one vocabulary of size V; ``attention=False`` is the bottleneck model.

    The encoder is a bidirectional GRU with H/2 units per direction, so h_j = [fwd_j; bwd_j] has size H, and
    s_0 = tanh(W_0 [fwd_L; bwd_1] + b_0) from its two final states. Step t of the decoder:
    without attention s_t = GRU(emb(y_{t-1}), s_{t-1}), logits = Linear(s_t);
    with attention c_t, a_t = attn(s_{t-1}, h_1..h_S), s_t = GRU([emb(y_{t-1}); c_t], s_{t-1}),
    logits = Linear([s_t; c_t]).
    """

    def __init__(self, vocab_size: int, n_embd: int = 32, hidden_size: int = 64, attention: bool = True,
                 seed: int = 0) -> None:
        super().__init__()
        for name, value in [("vocab_size", vocab_size), ("n_embd", n_embd), ("hidden_size", hidden_size)]:
            check_positive_int(value, name)
        if hidden_size % 2:
            raise ValueError(f"hidden_size must be even (half for each direction of the encoder), got {hidden_size}")
        if vocab_size <= N_SPECIAL:
            raise ValueError(f"vocab_size must exceed the {N_SPECIAL} special tokens, got {vocab_size}")
        self.vocab_size, self.attention = vocab_size, attention
        H, C = hidden_size, hidden_size if attention else 0  # C: size of the context vector c_t (none without)
        with torch.random.fork_rng(devices=[]):  # initialise from `seed` without touching the global state
            torch.manual_seed(seed)
            self.embed = nn.Embedding(vocab_size, n_embd, padding_idx=PAD)  # shared by encoder and decoder
            self.encoder = nn.GRU(n_embd, H // 2, batch_first=True, bidirectional=True)  # h_j = [fwd_j; bwd_j]
            self.bridge = nn.Linear(H, H)  # s_0 = tanh(W_0 [fwd_L; bwd_1] + b_0)
            self.attn = AdditiveAttention(H, H, H) if attention else None
            self.decoder = nn.GRUCell(n_embd + C, H)
            self.head = nn.Linear(H + C, vocab_size)

    def encode(self, src: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """src (B, S), lengths (B,) -> states h (B, S, H) (zeros at PAD), decoder state s_0 (B, H), mask (B, S)."""
        check_ids(src, self.vocab_size, "src", 2, "(B, S)")
        B, S = src.shape
        if B == 0 or S == 0:
            raise ValueError(f"src is empty (shape {tuple(src.shape)}): pass at least one sequence of length >= 1")
        if not isinstance(lengths, torch.Tensor) or lengths.shape != (B,) or lengths.dtype.is_floating_point:
            raise ValueError(f"lengths must be an integer tensor of shape (B={B},), "
                             f"got {getattr(lengths, 'shape', lengths)!r}")
        if int(lengths.min()) < 1 or int(lengths.max()) > S:
            raise ValueError(f"lengths must be in 1..S={S} (the padded length of src), got "
                             f"{int(lengths.min())}..{int(lengths.max())}")
        packed = pack_padded_sequence(self.embed(src), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, h_last = self.encoder(packed)  # h_last (2, B, H/2): forward after x_L, backward after x_1
        h, _ = pad_packed_sequence(out, batch_first=True, total_length=S)
        mask = torch.arange(S, device=src.device) < lengths.to(src.device)[:, None]
        s0 = torch.tanh(self.bridge(torch.cat([h_last[0], h_last[1]], dim=-1)))
        return h, s0, mask

    def step(self, y_prev: torch.Tensor, s: torch.Tensor, h: torch.Tensor,
             mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One decoder step: previous tokens (B,), state s_{t-1} (B, H) -> logits (B, V), s_t, weights (B, S)."""
        x = self.embed(y_prev)
        if self.attn is None:
            s = self.decoder(x, s)
            return self.head(s), s, None
        context, weights = self.attn(s, h, mask)
        s = self.decoder(torch.cat([x, context], dim=-1), s)
        return self.head(torch.cat([s, context], dim=-1)), s, weights

    def forward(self, src: torch.Tensor, lengths: torch.Tensor, tgt_in: torch.Tensor,
                tgt_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher forcing: tgt_in (B, T) -> logits (B, T, V) and the mean cross-entropy over non-PAD tgt_out."""
        h, s, mask = self.encode(src, lengths)
        check_ids(tgt_in, self.vocab_size, "tgt_in", 2, "(B, T)")
        if tgt_in.shape[0] != src.shape[0] or tgt_in.shape[1] == 0:
            raise ValueError(f"tgt_in must have shape (B={src.shape[0]}, T >= 1), got {tuple(tgt_in.shape)}")
        logits = []
        for t in range(tgt_in.shape[1]):
            logits_t, s, _ = self.step(tgt_in[:, t], s, h, mask)
            logits.append(logits_t)
        logits = torch.stack(logits, dim=1)  # (B, T, V)
        if tgt_out is None:
            return logits, None
        if tgt_out.shape != tgt_in.shape:
            raise ValueError(f"tgt_out must have the shape of tgt_in {tuple(tgt_in.shape)}, got {tuple(tgt_out.shape)}")
        return logits, F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD)

    @torch.no_grad()
    def greedy_decode(self, src: torch.Tensor, lengths: torch.Tensor,
                      max_len: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Feed back the argmax for max_len steps -> tokens (B, max_len) (PAD after the first EOS) and the
        attention weights (B, max_len, S) (None for the bottleneck model)."""
        check_positive_int(max_len, "max_len")
        h, s, mask = self.encode(src, lengths)
        y = torch.full((src.shape[0],), BOS, dtype=torch.long, device=src.device)
        tokens, weights = [], []
        for _ in range(max_len):
            logits, s, a = self.step(y, s, h, mask)
            y = logits.argmax(-1)
            tokens.append(y)
            weights.append(a)
        tokens = torch.stack(tokens, dim=1)
        after_eos = (tokens == EOS).long().cumsum(1) - (tokens == EOS).long() > 0  # strictly after the first EOS
        tokens = tokens.masked_fill(after_eos, PAD)
        return tokens, (torch.stack(weights, dim=1) if self.attn is not None else None)


def exact_match(pred: torch.Tensor, tgt_out: torch.Tensor) -> torch.Tensor:
    """Per sequence, True when the prediction (B, T') equals tgt_out (B, T) up to and including EOS -> (B,)."""
    T = tgt_out.shape[1]
    if pred.ndim != 2 or pred.shape[0] != tgt_out.shape[0]:
        raise ValueError(f"pred must have shape (B={tgt_out.shape[0]}, T'), got {tuple(pred.shape)}")
    if pred.shape[1] < T:
        pred = F.pad(pred, (0, T - pred.shape[1]), value=PAD)
    return (pred[:, :T] == tgt_out).all(dim=1)


def train_reverse(model: Seq2Seq, cfg: TrainConfig, min_len: int, max_len: int, batch_size: int = 64,
                  generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                  progress: bool = True) -> list[float]:
    """Teacher-forced training on fresh random batches of the reverse task, with the course's optimiser and
    schedule (AdamW, warm-up, cosine decay, gradient clipping from ``cfg``); returns the per-step losses.

    The batches come from ``generator`` (default: a generator seeded with ``cfg.seed``)."""
    n_symbols = model.vocab_size - N_SPECIAL
    generator = torch.Generator().manual_seed(cfg.seed) if generator is None else generator
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    model.to(device).train()
    losses = []
    for step in tqdm(range(cfg.max_steps), desc="attention" if model.attention else "bottleneck", disable=not progress):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = [t.to(device) for t in reverse_batch(batch_size, min_len, max_len, n_symbols, generator)]
        _, loss = model(*batch)
        opt.zero_grad()
        loss.backward()
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses
