"""The course's training loop, shared by every chapter that trains a neural language model.

A model is any ``torch.nn.Module`` whose ``model(x, targets)`` returns ``(logits, loss)`` with the
mean cross-entropy in nats (the nanoGPT convention). Batches come from callables that return
``(x, y)`` pairs of token ids, e.g. :func:`sample_windows` over a long id tensor.

The loop: AdamW, linear warm-up then cosine decay of the learning rate, gradient-norm clipping,
periodic evaluation on held-out batches, a progress bar, and checkpoints written atomically.
"""

from __future__ import annotations

import math
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

__all__ = ["TrainConfig", "History", "sample_windows", "lr_at", "evaluate", "train", "save_checkpoint",
           "load_checkpoint"]

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train`. ``lr`` is the peak learning rate reached after warm-up."""

    max_steps: int
    lr: float = 3e-3
    min_lr: float | None = None  # end of the cosine decay; default lr / 10
    warmup_steps: int = 0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float | None = 1.0  # max global gradient norm; None disables clipping
    eval_interval: int = 100  # evaluate every this many steps (and at the end)
    eval_batches: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.lr <= 0 or (self.min_lr is not None and not 0 <= self.min_lr <= self.lr):
            raise ValueError(f"need lr > 0 and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if not 0 <= self.warmup_steps <= self.max_steps:
            raise ValueError(f"warmup_steps must be in [0, max_steps={self.max_steps}], got {self.warmup_steps}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip}")
        if self.eval_interval < 1 or self.eval_batches < 1:
            raise ValueError("eval_interval and eval_batches must be at least 1")


@dataclass
class History:
    """What a run measured: per-step training loss and learning rate, periodic validation loss."""

    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    tokens: int = 0


def sample_windows(ids: torch.Tensor, block_size: int, batch_size: int,
                   generator: torch.Generator | None = None) -> Batch:
    """``batch_size`` random windows of a 1-D id tensor: inputs x (B, T) and next-token targets y (B, T)."""
    if ids.dim() != 1:
        raise ValueError(f"ids must be a 1-D tensor of token ids, got shape {tuple(ids.shape)}")
    if len(ids) <= block_size:
        raise ValueError(f"a window needs block_size + 1 = {block_size + 1} tokens, the data has only {len(ids)}")
    starts = torch.randint(len(ids) - block_size, (batch_size,), generator=generator)
    offsets = torch.arange(block_size)
    x = ids[starts[:, None] + offsets]  # (B, T)
    y = ids[starts[:, None] + offsets + 1]  # (B, T)
    return x, y


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The learning rate at ``step`` (0-based): linear warm-up to ``lr``, then cosine decay to ``min_lr``."""
    min_lr = cfg.lr / 10 if cfg.min_lr is None else cfg.min_lr
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return min_lr + 0.5 * (cfg.lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Callable[[], Batch], n_batches: int,
             device: torch.device | str = "cpu") -> float:
    """Mean loss of ``model`` over ``n_batches`` batches (in eval mode; the mode is restored after)."""
    was_training = model.training
    model.eval()
    losses = []
    for _ in range(n_batches):
        x, y = (t.to(device) for t in batches())
        losses.append(model(x, y)[1].item())
    model.train(was_training)
    return sum(losses) / len(losses)


def train(model: torch.nn.Module, train_batches: Callable[[], Batch], cfg: TrainConfig,
          val_batches: Callable[[], Batch] | None = None, device: torch.device | str = "cpu",
          checkpoint: str | os.PathLike | None = None, progress: bool = True) -> History:
    """Train ``model`` in place for ``cfg.max_steps`` AdamW steps; returns the :class:`History`.

    Weight decay, if any, applies to the groups of ``model.param_groups(weight_decay)`` when the model defines
    it (e.g. GPT: linear weights only), otherwise to matrices (``dim >= 2``), not to biases or norm gains.
    With ``checkpoint``, the model, optimiser and config are saved there at the end.
    """
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    if hasattr(model, "param_groups"):
        groups = model.param_groups(cfg.weight_decay)
    else:
        decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    history = History()
    start = time.perf_counter()
    bar = tqdm(range(cfg.max_steps), desc="training", disable=not progress)
    for step in bar:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = (t.to(device) for t in train_batches())
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = cfg.grad_clip if cfg.grad_clip is not None else math.inf
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        history.train_loss.append(loss.item())
        history.lr.append(lr)
        history.grad_norm.append(norm.item())
        history.tokens += y.numel()
        last = step == cfg.max_steps - 1
        if val_batches is not None and ((step + 1) % cfg.eval_interval == 0 or last):
            history.val_step.append(step + 1)
            history.val_loss.append(evaluate(model, val_batches, cfg.eval_batches, device))
            bar.set_postfix(train=f"{loss.item():.3f}", val=f"{history.val_loss[-1]:.3f}")
    history.seconds = time.perf_counter() - start
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, optimizer, step=cfg.max_steps, config=asdict(cfg))
    return history


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, **extra) -> None:
    """Save the model's (and optimiser's) state and any ``extra`` values, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict() if optimizer else None, **extra}
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, device: torch.device | str = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` (and ``optimizer``); returns it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path} is not a checkpoint of this model ({err}); delete it to retrain") from err
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    return state
