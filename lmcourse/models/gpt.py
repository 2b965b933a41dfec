"""The GPT language model (chapter 7): a decoder-only Transformer, architecturally GPT-2 (Radford et al. 2019).

    x_0 = E[w_t] + P[t]                             token + position embeddings, (B, T, d), then dropout
    x_l = Block(x_{l-1})  for l = 1..n_layer        pre-norm causal self-attention and MLP, with residuals
    logits = Norm(x_L) E^T                          the head shares its weights with the token embedding E

Thanks to the causal mask, the logits at position t depend on w_1..w_t only, so one forward pass of a window
gives T next-token predictions and the loss averages all of them. ``GPTConfig`` also selects the modern
variants the chapter discusses (sinusoidal or rotary positions, RMSNorm, SwiGLU or squared ReLU, QK-norm,
grouped-query and sliding-window attention) and ``causal=False`` for an encoder-only (BERT-style, masked-LM) model.
``GPT.from_hf`` copies the weights of a Hugging Face ``GPT2LMHeadModel``; the tests show both give the same logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmcourse.attention import MultiHeadAttention, causal_mask
from lmcourse.core import check_ids, check_positive_int, is_number
from lmcourse.models.layers import MLP, RMSNorm, RotaryEmbedding, SwiGLU, init_weights, make_norm, sinusoidal_positions

__all__ = ["GPTConfig", "SelfAttention", "Block", "GPT", "lm_loss"]

_CHOICES = {"pos": ("learned", "sinusoidal", "rope"), "norm": ("layernorm", "rmsnorm"),
            "mlp": ("gelu", "relu2", "swiglu")}


@dataclass
class GPTConfig:
    """The shape of a :class:`GPT`. ``dataclasses.asdict(config)`` round-trips through ``GPTConfig(**d)``."""

    vocab_size: int  # |V|
    block_size: int  # longest context T the model can read
    n_layer: int
    n_head: int
    n_embd: int  # d, the width of the residual stream
    dropout: float = 0.0
    bias: bool = True  # biases in the linear layers and LayerNorms
    pos: str = "learned"  # "learned" | "sinusoidal" | "rope"
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    mlp: str = "gelu"  # "gelu" (GPT-2) | "relu2" (squared ReLU, Primer) | "swiglu" (LLaMA)
    qk_norm: bool = False  # RMS-normalise each head's queries and keys before the scores (OLMo 2, Qwen3)
    n_kv_head: int | None = None  # grouped-query attention: key/value heads (None = n_head)
    window: int | None = None  # sliding-window attention: each position sees this many (None = all before it)
    causal: bool = True  # False: bidirectional self-attention (an encoder, for a masked-LM objective)
    tie_weights: bool = True  # the head's weight matrix is the token embedding's

    def __post_init__(self) -> None:
        _check_config(self)  # at the bottom of the module, with the other input checks


class SelfAttention(MultiHeadAttention):
    """Chapter 6's multi-head attention as the GPT uses it: self-attention, causal unless ``config.causal`` is False,
    with the config's sliding window, grouped-query heads, QK-norm and rotary positions.

    QK-norm divides each head's query and key vectors by their root mean square (times a learned gain per
    coordinate, :class:`~lmcourse.models.layers.RMSNorm` over head_dim): a score q.k / sqrt(hd) is then bounded by
    the gains, so no head's softmax can saturate however large the projections grow, and a higher learning rate
    stays stable.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config.n_embd, config.n_head, config.n_kv_head, config.bias, config.dropout)
        self.causal, self.window = config.causal, config.window
        self.q_norm = RMSNorm(self.head_dim) if config.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim) if config.qk_norm else None

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C); ``mask`` (boolean, True = may attend, e.g. (B, 1, 1, T)) hides padding keys."""
        q, k, v = self.qkv(x, rope)  # (B, n_head, T, hd), (B, n_kv_head, T, hd) x 2
        mask, is_causal = self.mask_for(x.shape[1], x.shape[1], mask, x.device)
        return self.attend(q, k, v, mask, is_causal)

    def qkv(self, x: torch.Tensor, rope: RotaryEmbedding | None = None, offset: int = 0,
            positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, n_head, T, hd), keys and values (B, n_kv_head, T, hd) of x (B, T, C): projected, QK-normed,
        then rotated by ``rope`` for positions offset..offset+T-1 (or ``positions`` (B, T), chapter 10)."""
        q, k, v = self.project(x)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope(q, offset=offset, positions=positions), rope(k, offset=offset, positions=positions)
        return q, k, v

    def mask_for(self, T: int, S: int, mask: torch.Tensor | None = None, device: torch.device | None = None
                 ) -> tuple[torch.Tensor | None, bool]:
        """(mask, is_causal) for T queries at the last T of S key positions (S - T earlier keys are cached, chapter
        10), combined with ``mask``: torch's kernel takes ``is_causal`` alone or one explicit mask, so a window,
        padding or cached keys turn the causal structure into an explicit mask."""
        L = S - T
        is_causal = self.causal and not (T == 1 and L and self.window is None)  # one new token sees every earlier one
        if is_causal and (mask is not None or self.window is not None or L):
            causal = causal_mask(T, S, window=self.window, device=device, offset=L)
            mask, is_causal = causal if mask is None else mask & causal, False
        return mask, is_causal


class Block(nn.Module):
    """One pre-norm Transformer layer: x + SelfAttention(Norm(x)), then x + FeedForward(Norm(x)).

    Dropout acts on each sub-layer's output before it joins the residual stream.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = SelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = (SwiGLU(config.n_embd, config.bias) if config.mlp == "swiglu"
                    else MLP(config.n_embd, config.bias, config.mlp))
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, rope: RotaryEmbedding | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, n_embd) -> (B, T, n_embd); ``rope`` and ``mask`` go to :class:`SelfAttention`."""
        x = x + self.drop(self.attn(self.ln_1(x), rope, mask))  # between positions
        return x + self.drop(self.mlp(self.ln_2(x)))  # at each position


class GPT(nn.Module):
    """GPT-2-style Transformer language model: ``model(idx, targets=None)`` -> ``(logits, loss)``.

    Parameters are initialised as in GPT-2: normal(0, 0.02) weights and embeddings, zero biases, and the
    projections that write into the residual stream scaled down by 1/sqrt(2 n_layer). Seed the global
    random state (``lmcourse.runtime.seed_everything``) first for a reproducible model.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        C = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, C)  # E, token embeddings
        self.wpe = nn.Embedding(config.block_size, C) if config.pos == "learned" else None  # P, learned positions
        if config.pos == "sinusoidal":
            self.register_buffer("pos_enc", sinusoidal_positions(config.block_size, C), persistent=False)
        self.rope = RotaryEmbedding(C // config.n_head, config.block_size) if config.pos == "rope" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = make_norm(config)
        self.head = nn.Linear(C, config.vocab_size, bias=False)
        if config.tie_weights:
            self.head.weight = self.wte.weight
        init_weights(self, config.n_layer)

    @property
    def block_size(self) -> int:
        return self.config.block_size

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def num_params(self, non_embedding: bool = True) -> int:
        """Number of parameters (tied weights once); ``non_embedding`` leaves out the position embeddings
        (the token embeddings stay in: with tying they are also the head's weights), as nanoGPT counts."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.wpe is not None:
            n -= self.wpe.weight.numel()
        return n

    def embed(self, idx: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Token + position embeddings of idx (B, T) at positions pos ((T,), or (B, T) per row), after dropout."""
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(pos)  # (T, C) or (B, T, C)
        elif self.config.pos == "sinusoidal":
            x = x + self.pos_enc[pos]
        return self.drop(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next-token logits at every position of each context.

        Args:
            idx: (B, T) integer token ids w_1..w_T, T <= block_size.
            targets: optional (B, T) integer ids of the token to predict at each position (for a language
                model, idx shifted left by one); -1 marks positions left out of the loss.

        Returns:
            ``(logits, loss)``: logits (B, T, vocab_size) and, with ``targets``, the mean cross-entropy in nats over
            the positions whose target is not -1 (else None), the convention of every model in the course.
        """
        validate = not torch.compiler.is_compiling()  # the checks read values (.min()): no graph breaks when compiled
        if validate:
            check_context(idx, self.vocab_size, self.block_size)
            if targets is not None:
                check_targets(targets, idx, self.vocab_size)
        logits = self.head(self.features(idx))  # (B, T, V)
        return logits, None if targets is None else lm_loss(logits, targets)

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        """The final hidden states Norm(x_L) (B, T, n_embd) of idx (B, T), which the head turns into logits (chapter
        13 puts a task head on them instead)."""
        x = self.embed(idx, torch.arange(idx.shape[1], device=idx.device))  # (B, T, C)
        for block in self.blocks:
            x = block(x, rope=self.rope)
        return self.ln_f(x)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: decay on the weight matrices of linear layers, none on biases, norm gains
        and embeddings (a tied head weight is the embedding, so it is not decayed). Every parameter once."""
        decay, no_decay, seen = [], [], set()
        for module in self.modules():
            for name, p in module.named_parameters(recurse=False):
                if id(p) in seen or not p.requires_grad:
                    continue
                seen.add(id(p))
                (decay if isinstance(module, nn.Linear) and name == "weight" else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    @classmethod
    def from_hf(cls, hf_model: nn.Module) -> GPT:
        """A GPT with the weights of a Hugging Face ``transformers.GPT2LMHeadModel`` (same dtype, device and mode).

        HF's ``Conv1D`` layers compute x W + b with W (in, out), the transpose of ``nn.Linear``'s weight, and
        ``c_attn`` holds q, k and v side by side. Settings we do not implement raise a ValueError naming them.
        """
        config = getattr(hf_model, "config", None)
        if getattr(config, "model_type", None) != "gpt2" or not hasattr(hf_model, "lm_head"):
            raise ValueError(f"from_hf expects a transformers GPT2LMHeadModel, got {type(hf_model).__name__}")
        _check_hf_config(config)
        model = cls(GPTConfig(vocab_size=config.vocab_size, block_size=config.n_positions, n_layer=config.n_layer,
                              n_head=config.n_head, n_embd=config.n_embd, dropout=config.resid_pdrop,
                              tie_weights=config.tie_word_embeddings))
        sd, C = hf_model.state_dict(), config.n_embd
        ours = {"wte.weight": sd["transformer.wte.weight"], "wpe.weight": sd["transformer.wpe.weight"],
                "ln_f.weight": sd["transformer.ln_f.weight"], "ln_f.bias": sd["transformer.ln_f.bias"],
                "head.weight": sd["lm_head.weight"]}
        for i in range(config.n_layer):
            hf, me = f"transformer.h.{i}.", f"blocks.{i}."
            for ln in ("ln_1", "ln_2"):
                ours[f"{me}{ln}.weight"], ours[f"{me}{ln}.bias"] = sd[f"{hf}{ln}.weight"], sd[f"{hf}{ln}.bias"]
            qkv_w, qkv_b = sd[f"{hf}attn.c_attn.weight"].t().split(C), sd[f"{hf}attn.c_attn.bias"].split(C)
            for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
                ours[f"{me}attn.{proj}.weight"], ours[f"{me}attn.{proj}.bias"] = qkv_w[j], qkv_b[j]
            for hf_name, name in (("attn.c_proj", "attn.o_proj"), ("mlp.c_fc", "mlp.fc"), ("mlp.c_proj", "mlp.proj")):
                ours[f"{me}{name}.weight"] = sd[f"{hf}{hf_name}.weight"].t()
                ours[f"{me}{name}.bias"] = sd[f"{hf}{hf_name}.bias"]
        ref = next(hf_model.parameters())
        model.to(device=ref.device, dtype=ref.dtype)
        model.load_state_dict(ours)  # strict: every parameter of ours is set, shapes checked
        return model.train(hf_model.training)


# Devices on which the checks read the ids' values (min and max): the CPU, where that is free, and MPS, whose
# kernels do not check indices. On CUDA, reading a value makes the host wait until the GPU has computed it (a
# host-device sync at every training step), and the embedding and cross-entropy kernels assert on bad ids themselves.
_READ_VALUES_ON = ("cpu", "mps")


def _reads_values(ids: torch.Tensor) -> bool:
    """Whether the checks read the values of ``ids`` (a tensor on a device of ``_READ_VALUES_ON``)."""
    return isinstance(ids, torch.Tensor) and ids.device.type in _READ_VALUES_ON


def check_context(idx: torch.Tensor, vocab_size: int, block_size: int, cached: int = 0) -> None:
    """Raise a ValueError unless ``idx`` is (B, T) token ids with 1 <= cached + T <= block_size (values read on
    the devices of ``_READ_VALUES_ON`` only)."""
    check_ids(idx, vocab_size, "idx", 2, "(B, T)", read_values=_reads_values(idx))
    if idx.shape[1] < 1 or cached + idx.shape[1] > block_size:
        raise ValueError(f"the context has {cached} cached + {idx.shape[1]} new tokens but this model reads "
                         f"1..block_size={block_size}; crop it, e.g. idx[:, -{block_size}:] (and rebuild the cache)")


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy in nats of logits (B, T, V) for targets (B, T), leaving out targets of -1."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten().long(), ignore_index=-1)


def check_targets(targets: torch.Tensor, idx: torch.Tensor, vocab_size: int) -> None:
    """Raise a ValueError unless ``targets`` is an integer tensor shaped like ``idx`` with ids in -1..vocab_size-1.

    The values are read (min and max) only on the devices of ``_READ_VALUES_ON``: on CUDA that would wait for the
    GPU at every step, and the cross-entropy kernel asserts on out-of-range targets itself.
    """
    check_ids(targets, vocab_size, "targets", idx.ndim, "(B, T)", read_values=False)
    if targets.shape != idx.shape:
        raise ValueError(f"targets must have the shape of idx {tuple(idx.shape)}, got {tuple(targets.shape)}")
    if targets.numel() and _reads_values(targets) and (int(targets.min()) < -1 or int(targets.max()) >= vocab_size):
        raise ValueError(f"targets hold values from {int(targets.min())} to {int(targets.max())}; they must be ids "
                         f"in 0..{vocab_size - 1}, or -1 for positions left out of the loss")


def _check_hf_config(config) -> None:
    """Raise a ValueError for the first GPT-2 setting that our GPT does not implement."""
    problems = {
        "activation_function": (config.activation_function not in ("gelu_new", "gelu_pytorch_tanh"),
                                "only the tanh-approximate GELU of GPT-2 ('gelu_new', 'gelu_pytorch_tanh')"),
        "n_inner": (config.n_inner not in (None, 4 * config.n_embd), f"only None or 4 * n_embd = {4 * config.n_embd}"),
        "layer_norm_epsilon": (config.layer_norm_epsilon != 1e-5, "only 1e-5 (torch.nn.LayerNorm's default)"),
        "scale_attn_weights": (not config.scale_attn_weights, "only True (scores divided by sqrt(head_dim))"),
        "scale_attn_by_inverse_layer_idx": (config.scale_attn_by_inverse_layer_idx, "only False"),
        "reorder_and_upcast_attn": (config.reorder_and_upcast_attn, "only False"),
        "add_cross_attention": (getattr(config, "add_cross_attention", False), "only False"),
        "embd_pdrop/attn_pdrop": (not config.embd_pdrop == config.attn_pdrop == config.resid_pdrop,
                                  "only one dropout rate (embd_pdrop == attn_pdrop == resid_pdrop)"),
    }
    for name, (bad, supported) in problems.items():
        if bad:
            raise ValueError(f"GPT.from_hf: unsupported {name}={getattr(config, name.split('/')[0])!r}; "
                             f"our GPT implements {supported}")


def _check_config(config: GPTConfig) -> None:
    """Raise a ValueError naming the first setting of ``config`` that does not describe a GPT we can build."""
    for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
        check_positive_int(getattr(config, name), name)
    if config.n_embd % config.n_head:
        raise ValueError(f"n_embd={config.n_embd} must be divisible by n_head={config.n_head}")
    for name, allowed in _CHOICES.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {getattr(config, name)!r}")
    if config.n_kv_head is not None:
        check_positive_int(config.n_kv_head, "n_kv_head", f" (or None); a divisor of n_head={config.n_head}")
        if config.n_head % config.n_kv_head:
            raise ValueError(f"n_kv_head must be None or a divisor of n_head={config.n_head}, got {config.n_kv_head}")
    if config.window is not None:
        check_positive_int(config.window, "window", " (or None for full attention)")
    if config.window is not None and not config.causal:
        raise ValueError("window (sliding-window attention) is implemented for causal models only")
    if not is_number(config.dropout) or not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {config.dropout!r}")
    if config.pos == "rope" and (config.n_embd // config.n_head) % 2:
        raise ValueError(f"pos='rope' needs an even head size, got n_embd / n_head = {config.n_embd // config.n_head}")
    if config.pos == "sinusoidal" and config.n_embd % 2:
        raise ValueError(f"pos='sinusoidal' needs an even n_embd, got {config.n_embd}")
