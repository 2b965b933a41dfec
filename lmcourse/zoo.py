"""Trained models for the chapters that need one: train on first use, then load from a checkpoint.

``get("char_gpt")`` returns the chapter-7 GPT trained on Tiny Shakespeare characters; ``"char_lstm"`` is
chapter 5's LSTM, and ``"char_mlp"`` and ``"char_rnn"`` are the MLP (chapter 3) and plain RNN (chapter 4)
of the capstone's ladder. Every model reads characters, trains on the first 90% of the text and is
scored on the last 10% by its recipe's ``evaluate`` (``info["val_loss_nats"]``). The first call
trains it (seeded, with a progress bar) and saves it under ``cache_dir() / "checkpoints"``; later calls,
in this process or another, load the checkpoint. An exclusive lock on a ``.lock`` file next to the
checkpoint makes a second process that asks at the same time wait for the first and then load.

A checkpoint that cannot be read, or that was trained by a different recipe (a changed hyper-parameter,
an older version of the course), is **retrained with a warning**: the zoo is a cache, never the only
copy of a result.

Each name is a :class:`Recipe` in :data:`RECIPES`; later chapters add theirs with :func:`register`.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from lmcourse.core import check_id_stream, check_positive_int
from lmcourse.data import cache_dir, load_text
from lmcourse.runtime import get_device
from lmcourse.tokenizers.char import CharTokenizer
from lmcourse.train import Batch, History, TrainConfig, mean_loss, sample_windows, save_checkpoint, train

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; two processes may then both train
    fcntl = None

__all__ = ["Recipe", "Pretrained", "RECIPES", "register", "names", "get", "checkpoint_path", "evaluate_text",
           "evaluate_windows", "evaluate_recurrent", "context_windows", "split_held_out"]


@dataclass(frozen=True)
class Recipe:
    """How to make one trained model: the model (its config dict and builder), the data and the training run.

    ``build(config)`` returns the model from ``config`` plus ``vocab_size`` (filled in from the tokenizer),
    so the checkpoint can rebuild it from the stored dict alone. The model follows the course convention
    ``model(x, targets) -> (logits, loss)``. ``batches(train_ids, block_size, batch_size, generator)`` draws
    one training batch (default: random windows x, y of shape (B, T)); ``evaluate(model, val_ids, block_size,
    device=...)`` returns the mean loss in nats per predicted token of the whole held-out text.
    """

    description: str
    build: Callable[[dict], torch.nn.Module]
    config: dict
    train: TrainConfig
    block_size: int
    batch_size: int
    corpus: str = "tinyshakespeare"
    held_out: float = 0.1  # the last fraction of the text is the validation split
    batches: Callable[[torch.Tensor, int, int, torch.Generator], Batch] = sample_windows
    evaluate: Callable[..., float] | None = None  # None: evaluate_text (consecutive windows of block_size)
    muon_lr: float | None = None  # Muon at this rate for a GPT's block matrices, AdamW at train.lr for the rest

    def fingerprint(self) -> dict:
        """Everything that determines the trained weights; a checkpoint with another fingerprint is stale."""
        fingerprint = {"config": self.config, "train": asdict(self.train), "block_size": self.block_size,
                       "batch_size": self.batch_size, "corpus": self.corpus, "held_out": self.held_out}
        if self.batches is not sample_windows:  # only then, so that older checkpoints of char_gpt stay valid
            fingerprint["batches"] = f"{self.batches.__module__}.{self.batches.__qualname__}"
        if self.muon_lr is not None:
            fingerprint["muon_lr"] = self.muon_lr
        return fingerprint


@dataclass
class Pretrained:
    """A trained model (in eval mode, on its device) with its tokenizer, training history and summary."""

    model: torch.nn.Module
    tokenizer: CharTokenizer
    history: History
    info: dict = field(default_factory=dict)  # recipe, val_loss_nats, seconds, tokens, params, device


def _gpt(config: dict) -> torch.nn.Module:
    from lmcourse.models.gpt import GPT, GPTConfig  # imported here: the zoo must not import every model up front

    return GPT(GPTConfig(**config))


def _mlp(config: dict) -> torch.nn.Module:
    from lmcourse.models.mlp import MLPLM

    return MLPLM(**config)


def _rnn(config: dict) -> torch.nn.Module:
    from lmcourse.rnn import RNNLM

    return RNNLM(**config, cell="rnn", fused=True)


def _lstm(config: dict) -> torch.nn.Module:
    from lmcourse.rnn import LSTMLM

    return LSTMLM(**config, fused=True)


def split_held_out(seq: Sequence, held_out: float = 0.1) -> tuple[Sequence, Sequence]:
    """(training part, held-out part) of a text or 1-D id tensor: the first ``1 - held_out`` and the rest."""
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be a fraction in (0, 1), got {held_out}")
    n_train = int((1 - held_out) * len(seq))
    return seq[:n_train], seq[n_train:]


def context_windows(ids: torch.Tensor, block_size: int, batch_size: int,
                    generator: torch.Generator | None = None) -> Batch:
    """``batch_size`` random contexts of a fixed-window model: x (B, block_size) and the next ids y (B,)."""
    x, y = sample_windows(ids, block_size, batch_size, generator)
    return x, y[:, -1]


def evaluate_windows(model: torch.nn.Module, ids: torch.Tensor, block_size: int, batch_size: int = 8192,
                     device: torch.device | str = "cpu") -> float:
    """Mean loss (nats/token) of a fixed-window model over ids[block_size:] (1-D), each from the block_size before."""
    from lmcourse.models.mlp import make_windows

    x, y = make_windows(ids, block_size)  # (N, block_size), (N,)
    return mean_loss(model, _rows(x, y, batch_size), device)


def evaluate_recurrent(model: torch.nn.Module, ids: torch.Tensor, block_size: int,
                       device: torch.device | str = "cpu") -> float:
    """Mean loss (nats/token) of a recurrent model over ids (1-D), read in order as 32 streams with the state
    carried (:func:`lmcourse.rnn.evaluate_stream`, 256 tokens at a time; ``block_size`` is the training length)."""
    from lmcourse.rnn import evaluate_stream

    return evaluate_stream(model.to(device), ids, batch_size=32, block_size=256)


RECIPES: dict[str, Recipe] = {}


def register(name: str, recipe: Recipe) -> None:
    """Add (or replace) a named recipe."""
    if not name.isidentifier():
        raise ValueError(f"a recipe name must be a plain identifier such as 'char_gpt', got {name!r}")
    RECIPES[name] = recipe


def names() -> list[str]:
    """The names :func:`get` knows."""
    return sorted(RECIPES)


# The chapter-7 model, sized for the notebook's budget (about three minutes on one CPU thread): the benchmark's
# recipe (benchmarks/bench_char_gpt.py: Muon for the blocks' matrices, an untied head, context 128 in batches of
# 12, a cosine to 0) at width 128, which learns faster than the benchmark's 192 with a third of its compute.
register("char_gpt", Recipe(
    description="GPT, 3 layers x 128 wide, context 128, Muon + AdamW, untied head, on Tiny Shakespeare characters",
    build=_gpt,
    config=dict(block_size=128, n_layer=3, n_head=4, n_embd=128, dropout=0.0, bias=False, tie_weights=False),
    train=TrainConfig(max_steps=2000, lr=8e-3, min_lr=0.0, warmup_steps=100, weight_decay=0.0, betas=(0.9, 0.99),
                      grad_clip=1.0, eval_interval=250, eval_batches=10, seed=0),
    block_size=128, batch_size=12, muon_lr=0.02,
))


# Chapter 5's character LSTM: one layer of 320 with 64-dimensional embeddings, many small steps (see 5.7).
register("char_lstm", Recipe(
    description="LSTM, 1 layer x 320 with 64-dim embeddings, on Tiny Shakespeare characters",
    build=_lstm,
    config=dict(hidden_size=320, n_layers=1, n_embd=64),
    train=TrainConfig(max_steps=2400, lr=5e-3, warmup_steps=50, weight_decay=0.0, grad_clip=1.0,
                      eval_interval=300, eval_batches=25, seed=0),
    block_size=64, batch_size=16, evaluate=evaluate_recurrent,
))

# The capstone's MLP (chapter 3's shape, k = 8) and plain RNN (chapter 4's tanh RNN with an embedding), sized
# to train in about a minute each on one CPU thread (chapter 12 trains them on first use).
register("char_mlp", Recipe(
    description="MLP LM (Bengio et al.), k = 8 characters, 16-dim embeddings, 256 tanh units",
    build=_mlp,
    config=dict(context_size=8, n_embd=16, n_hidden=256),
    train=TrainConfig(max_steps=3000, lr=5e-3, warmup_steps=50, weight_decay=0.0, grad_clip=1.0,
                      eval_interval=500, eval_batches=10, seed=0),
    block_size=8, batch_size=512, batches=context_windows, evaluate=evaluate_windows,
))

register("char_rnn", Recipe(
    description="tanh RNN, 1 layer x 256 with 64-dim embeddings, on Tiny Shakespeare characters",
    build=_rnn,
    config=dict(hidden_size=256, n_layers=1, n_embd=64),
    train=TrainConfig(max_steps=1500, lr=3e-3, warmup_steps=50, weight_decay=0.0, grad_clip=1.0,
                      eval_interval=300, eval_batches=10, seed=0),
    block_size=64, batch_size=16, evaluate=evaluate_recurrent,
))


def checkpoint_path(name: str) -> Path:
    """Where the checkpoint of ``name`` lives: ``cache_dir() / "checkpoints" / f"{name}.pt"``."""
    return cache_dir() / "checkpoints" / f"{name}.pt"


def evaluate_text(model: torch.nn.Module, ids: torch.Tensor, block_size: int, batch_size: int = 64,
                  device: torch.device | str = "cpu") -> float:
    """Mean loss (nats/token) over all of ``ids`` (1-D), cut into consecutive windows of ``block_size``.

    Deterministic: every token after the first is predicted once, from the tokens before it in its window.
    """
    check_id_stream(ids)
    check_positive_int(block_size, "block_size")
    check_positive_int(batch_size, "batch_size")
    n = (len(ids) - 1) // block_size
    if n < 1:
        raise ValueError(f"need more than block_size = {block_size} tokens to evaluate, got {len(ids)}")
    x = ids[: n * block_size].view(n, block_size)  # (n, T)
    y = ids[1: n * block_size + 1].view(n, block_size)  # (n, T)
    return mean_loss(model, _rows(x, y, batch_size), device)


def _rows(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterator[Batch]:
    """The rows of x (N, ...) and y (N, ...) as batches of ``batch_size`` rows, in order."""
    for i in range(0, len(y), batch_size):
        yield x[i:i + batch_size], y[i:i + batch_size]


def get(name: str, device: torch.device | str | None = None, progress: bool = True) -> Pretrained:
    """The trained model ``name``: loaded from its checkpoint, or trained (and saved) on first use."""
    if name not in RECIPES:
        raise ValueError(f"unknown model {name!r}; the zoo has: {', '.join(names())}")
    device = torch.device(device) if device is not None else get_device()
    recipe, path = RECIPES[name], checkpoint_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        pretrained = _load(name, recipe, path, device) if path.exists() else None
        if pretrained is None:
            pretrained = _train(name, recipe, path, device, progress)
    pretrained.model.to(device).eval()
    return pretrained


def _load(name: str, recipe: Recipe, path: Path, device: torch.device) -> Pretrained | None:
    """The checkpoint at ``path``, or None (with a warning) when it is unreadable or from another recipe."""
    try:
        state = torch.load(path, map_location=device, weights_only=False)
        if state.get("recipe") != recipe.fingerprint():
            warnings.warn(f"{path} was trained by another version of the {name!r} recipe; retraining it",
                          stacklevel=3)
            return None
        model = recipe.build(state["model_config"])
        model.load_state_dict(state["model"])
        tokenizer = CharTokenizer(state["itos"])
        return Pretrained(model, tokenizer, History(**state["history"]), state["info"])
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, EOFError, pickle.UnpicklingError) as err:
        warnings.warn(f"cannot read the checkpoint {path} ({type(err).__name__}: {err}); retraining {name!r}",
                      stacklevel=3)
        return None


def _train(name: str, recipe: Recipe, path: Path, device: torch.device, progress: bool) -> Pretrained:
    """Train ``recipe`` from its seed, save the checkpoint atomically, and return the result."""
    text = load_text(recipe.corpus)
    tokenizer = CharTokenizer().train(text)
    ids = torch.tensor(tokenizer.encode(text))
    train_ids, val_ids = split_held_out(ids, recipe.held_out)
    seed = recipe.train.seed
    torch.manual_seed(seed)
    model_config = {**recipe.config, "vocab_size": tokenizer.vocab_size}
    model = recipe.build(model_config).to(device)
    gen, val_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    optimizer = None
    if recipe.muon_lr is not None:
        from lmcourse.optim import muon_with_adamw

        optimizer = muon_with_adamw(model, recipe.muon_lr, recipe.train.lr, recipe.train.weight_decay,
                                    recipe.train.betas)
    history = train(model, lambda: recipe.batches(train_ids, recipe.block_size, recipe.batch_size, gen),
                    recipe.train, lambda: recipe.batches(val_ids, recipe.block_size, recipe.batch_size, val_gen),
                    device=device, progress=progress, optimizer=optimizer)
    evaluate = recipe.evaluate or evaluate_text
    info = {"recipe": name, "description": recipe.description,
            "val_loss_nats": evaluate(model, val_ids, recipe.block_size, device=device),
            "seconds": history.seconds, "tokens": history.tokens,
            "params": sum(p.numel() for p in model.parameters()), "device": str(device)}
    save_checkpoint(path, model, model_config=model_config, itos=list(tokenizer.itos), history=asdict(history),
                    info=info, recipe=recipe.fingerprint())
    return Pretrained(model, tokenizer, history, info)
