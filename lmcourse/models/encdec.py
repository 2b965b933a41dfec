"""An encoder-decoder Transformer (T5-style wiring, chapter 7) built from the same blocks as GPT.

    encoder: s_1..s_S -> embeddings -> Blocks with bidirectional self-attention -> Norm  = H (B, S, d)
    decoder: w_1..w_T -> embeddings -> Blocks with causal self-attention and cross-attention to H -> Norm -> logits

The three families differ only in masks and wiring: GPT is the decoder without cross-attention, a BERT-style
encoder is ``GPT(GPTConfig(..., causal=False))``, and this module joins an encoder to a decoder. Source and
target share one vocabulary and one embedding table (tied to the head), as in T5.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn

from lmcourse.attention import MultiHeadAttention
from lmcourse.core import check_ids, check_positive_int
from lmcourse.models.gpt import Block, GPTConfig, check_targets, lm_loss
from lmcourse.models.layers import RotaryEmbedding, init_weights, make_norm, sinusoidal_positions

__all__ = ["DecoderBlock", "EncoderDecoder"]


class DecoderBlock(Block):
    """The GPT's block with cross-attention between its two sub-layers: x + SelfAttention(Norm(x)), then
    x + CrossAttention(Norm(x), H) over the encoder's output H, then x + FeedForward(Norm(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.ln_cross = make_norm(config)
        self.cross_attn = MultiHeadAttention(config.n_embd, config.n_head, config.n_kv_head, config.bias,
                                             config.dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None,
                rope: RotaryEmbedding | None = None) -> torch.Tensor:
        """x (B, T, n_embd) attending to the context (B, S, n_embd); ``context_mask`` (B, 1, 1, S) hides padding."""
        x = x + self.drop(self.attn(self.ln_1(x), rope))
        x = x + self.drop(self.cross_attn(self.ln_cross(x), context=context, mask=context_mask))
        return x + self.drop(self.mlp(self.ln_2(x)))


class EncoderDecoder(nn.Module):
    """Encoder-decoder Transformer: ``model(src, tgt)`` -> logits (B, T, V); with ``targets``, (logits, loss).

    Args:
        config: the decoder's shape (``causal`` must be True); the encoder uses the same shape, bidirectional.
        n_enc_layer: encoder depth (default ``config.n_layer``).
    """

    def __init__(self, config: GPTConfig, n_enc_layer: int | None = None) -> None:
        super().__init__()
        if not config.causal:
            raise ValueError("the decoder of an EncoderDecoder must be causal: use a config with causal=True")
        n_enc_layer = config.n_layer if n_enc_layer is None else n_enc_layer
        check_positive_int(n_enc_layer, "n_enc_layer")
        self.config, C = config, config.n_embd
        self.wte = nn.Embedding(config.vocab_size, C)  # shared by source, target and head
        self.wpe = nn.Embedding(config.block_size, C) if config.pos == "learned" else None
        if config.pos == "sinusoidal":
            self.register_buffer("pos_enc", sinusoidal_positions(config.block_size, C), persistent=False)
        self.rope = RotaryEmbedding(C // config.n_head, config.block_size) if config.pos == "rope" else None
        self.drop = nn.Dropout(config.dropout)
        encoder_config = replace(config, causal=False, window=None)
        self.encoder = nn.ModuleList(Block(encoder_config) for _ in range(n_enc_layer))
        self.ln_enc = make_norm(config)
        self.decoder = nn.ModuleList(DecoderBlock(config) for _ in range(config.n_layer))
        self.ln_f = make_norm(config)
        self.head = nn.Linear(C, config.vocab_size, bias=False)
        if config.tie_weights:
            self.head.weight = self.wte.weight
        init_weights(self, n_enc_layer + config.n_layer)

    def embed(self, idx: torch.Tensor, name: str) -> torch.Tensor:
        """Token (+ position) embeddings of idx (B, T) after dropout: (B, T, n_embd)."""
        check_ids(idx, self.config.vocab_size, name, 2, "(B, T)")
        T = idx.shape[1]
        if T < 1 or T > self.config.block_size:
            raise ValueError(f"{name} has {T} tokens per row; this model reads 1..block_size={self.config.block_size}")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        elif self.config.pos == "sinusoidal":
            x = x + self.pos_enc[:T]
        return self.drop(x)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder output H (B, S, n_embd) for source ids src (B, S); src_mask (B, S) is True at real tokens."""
        mask = None if src_mask is None else _key_mask(src_mask, src)
        h = self.embed(src, "src")
        for block in self.encoder:
            h = block(h, rope=self.rope, mask=mask)
        return self.ln_enc(h)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, targets: torch.Tensor | None = None,
                src_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next-token logits for the target given the whole source.

        Args:
            src: (B, S) source ids. src_mask: optional (B, S) boolean, True at real tokens, False at padding.
            tgt: (B, T) decoder input ids (the target shifted right, starting with a start token).
            targets: optional (B, T) ids to predict at each target position; -1 = left out of the loss.

        Returns:
            ``(logits, loss)``: logits (B, T, vocab_size) and, with ``targets``, the mean cross-entropy in nats
            (else None).
        """
        if targets is not None:
            check_targets(targets, tgt, self.config.vocab_size)
        context = self.encode(src, src_mask)  # (B, S, C)
        context_mask = None if src_mask is None else _key_mask(src_mask, src)
        x = self.embed(tgt, "tgt")
        if x.shape[0] != context.shape[0]:
            raise ValueError(f"src has {context.shape[0]} rows but tgt has {x.shape[0]}; pair them one to one")
        for block in self.decoder:
            x = block(x, context, context_mask, rope=self.rope)
        logits = self.head(self.ln_f(x))  # (B, T, V)
        return logits, None if targets is None else lm_loss(logits, targets)


def _key_mask(src_mask: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """(B, S) True-at-real-tokens mask -> (B, 1, 1, S), broadcastable over heads and queries."""
    if src_mask.dtype != torch.bool or src_mask.shape != src.shape:
        raise ValueError(f"src_mask must be a boolean tensor shaped like src {tuple(src.shape)} (True at real "
                         f"tokens), got {src_mask.dtype} {tuple(src_mask.shape)}")
    return src_mask[:, None, None, :]
