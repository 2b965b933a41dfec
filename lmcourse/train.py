"""The course's training loop, shared by every chapter that trains a neural language model.

A model is any ``torch.nn.Module`` whose ``model(x, targets)`` returns ``(logits, loss)`` with the
mean cross-entropy in nats (the nanoGPT convention). Batches come from callables that return
``(x, y)`` pairs of token ids, e.g. :func:`sample_windows` over a long id tensor. A callable that takes
one argument gets the loop's own ``torch.Generator`` (seeded from ``cfg.seed``), which makes the batch
stream part of the checkpoint, so that a resumed run draws exactly the batches the uninterrupted one would.

The loop: AdamW (fused on CUDA), linear warm-up then cosine decay of the learning rate, gradient-norm
clipping, gradient accumulation, automatic mixed precision (bf16, or fp16 with a gradient scaler), optional
``torch.compile``, periodic evaluation on held-out batches, a progress bar, tokens/s (and MFU) per step,
and checkpoints written atomically from which :func:`train` can resume (chapter 11).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import os
import pickle
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lmcourse.core import check_id_stream, check_positive_int, is_number

__all__ = ["TrainConfig", "History", "sample_windows", "lr_at", "evaluate", "mean_loss", "train", "save_checkpoint",
           "save_atomic", "load_checkpoint"]

Batch = tuple[torch.Tensor, torch.Tensor]
BatchFn = Callable[[], Batch] | Callable[[torch.Generator], Batch]


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train`. ``lr`` is the peak learning rate reached after warm-up.

    One optimiser step sums the gradients of ``grad_accum_steps`` batches (an effective batch that many times
    larger). ``amp`` = "bf16" or "fp16" runs the forward pass under autocast in that precision (fp16 with a
    ``torch.amp.GradScaler``); ``compile`` wraps the model in ``torch.compile``; ``fused`` picks the fused AdamW
    kernel (default: on CUDA). With ``flops_per_token`` (e.g. ``lmcourse.efficiency.gpt_flops_per_token``) and
    ``peak_flops`` (FLOP/s, e.g. ``lmcourse.efficiency.peak_flops(device, "bf16")``), the history records the MFU
    of each step.
    ``checkpoint_interval`` also writes the checkpoint every that many steps (to resume after a crash).
    """

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
    grad_accum_steps: int = 1
    amp: str | None = None  # None (float32) | "bf16" | "fp16"
    compile: bool = False
    fused: bool | None = None  # fused AdamW; None = on CUDA only
    checkpoint_interval: int | None = None
    flops_per_token: float | None = None
    peak_flops: float | None = None

    def __post_init__(self) -> None:
        check_positive_int(self.max_steps, "max_steps")
        if not (is_number(self.lr) and 0 < self.lr < math.inf) \
                or (self.min_lr is not None and not 0 <= self.min_lr <= self.lr):
            raise ValueError(f"need lr > 0 and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if not 0 <= self.warmup_steps <= self.max_steps:
            raise ValueError(f"warmup_steps must be in [0, max_steps={self.max_steps}], got {self.warmup_steps}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip}")
        for name in ("eval_interval", "eval_batches", "grad_accum_steps"):
            check_positive_int(getattr(self, name), name)
        if self.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {self.amp!r}")
        if self.checkpoint_interval is not None:
            check_positive_int(self.checkpoint_interval, "checkpoint_interval", " (or None)")
        if self.peak_flops is not None and not (is_number(self.peak_flops) and self.peak_flops > 0):
            raise ValueError(f"peak_flops must be positive FLOP/s (or None), got {self.peak_flops!r}")


@dataclass
class History:
    """What a run measured: per-step training loss, learning rate, gradient norm, throughput (and MFU),
    and periodic validation loss."""

    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    tokens: int = 0
    tokens_per_s: list[float] = field(default_factory=list)
    mfu: list[float] = field(default_factory=list)


def sample_windows(ids: torch.Tensor, block_size: int, batch_size: int,
                   generator: torch.Generator | None = None) -> Batch:
    """``batch_size`` random windows of a 1-D id tensor: inputs x (B, T) and next-token targets y (B, T)."""
    check_id_stream(ids)
    check_positive_int(block_size, "block_size")
    check_positive_int(batch_size, "batch_size")
    if len(ids) <= block_size:
        raise ValueError(f"a window needs block_size + 1 = {block_size + 1} tokens, the data has only {len(ids)}")
    starts = torch.randint(len(ids) - block_size, (batch_size,), generator=generator)
    offsets = torch.arange(block_size)
    x = ids[starts[:, None] + offsets]  # (B, T)
    y = ids[starts[:, None] + offsets + 1]  # (B, T)
    return x, y


def lr_at(step: int, cfg: TrainConfig, peak: float | None = None) -> float:
    """The learning rate at ``step`` (0-based): linear warm-up to ``lr``, then cosine decay to ``min_lr``.

    ``peak`` replaces ``lr`` for a parameter group with its own rate (``min_lr`` scales with it)."""
    peak = cfg.lr if peak is None else peak
    min_lr = cfg.lr / 10 if cfg.min_lr is None else cfg.min_lr
    if peak != cfg.lr:  # subtle: only then, so that lr * (lr / lr) never rounds the single-rate schedule
        min_lr *= peak / cfg.lr
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return min_lr + 0.5 * (peak - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def _takes_generator(batches: Callable) -> bool:
    """Whether the batch callable takes the loop's generator: a required positional argument, or a positional
    ``generator`` (e.g. ``functools.partial(sample_windows, ids, T, B)``); zero-argument callables do not."""
    try:
        params = inspect.signature(batches).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(p.kind in positional and (p.default is p.empty or p.name == "generator") for p in params)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: BatchFn, n_batches: int, device: torch.device | str = "cpu",
             seed: int = 0) -> float:
    """Mean loss of ``model`` over ``n_batches`` batches (in eval mode; the mode is restored after).

    A callable that takes a generator gets a fresh one seeded with ``seed``: every evaluation sees the same batches.
    """
    check_positive_int(n_batches, "n_batches")
    gen = torch.Generator().manual_seed(seed)
    draw = (lambda: batches(gen)) if _takes_generator(batches) else batches
    return mean_loss(model, (draw() for _ in range(n_batches)), device)


@torch.no_grad()
def mean_loss(model: torch.nn.Module, batches: Iterable[Batch], device: torch.device | str = "cpu",
              cache: object | None = None) -> float:
    """The mean loss per target of ``model(x, y)`` over every batch (x, y), weighted by the targets each holds.

    The one place where the course turns a model's losses into a held-out number: training's validation, the zoo's
    evaluations and the recurrent models' stream reading all call it. With a ``cache`` (a recurrent model's
    ``new_cache(B)``), each batch continues the streams where the previous one ended. Runs in eval mode (no dropout)
    without gradients and restores the model's mode. Targets of -1 (left out of the loss) are not counted.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for batch in batches:
            x, y = _to_device(batch, device)
            n = int((y != -1).sum())
            total += _loss(model(x, y) if cache is None else model(x, y, cache=cache)).item() * n
            count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("no targets to score: pass at least one batch with a target that is not -1")
    return total / count


def _to_device(batch: Batch, device: torch.device | str) -> Batch:
    """A batch function's ``(x, y)`` moved to ``device``; a ValueError if it returned anything else."""
    if not (isinstance(batch, tuple | list) and len(batch) == 2 and all(isinstance(t, torch.Tensor) for t in batch)):
        raise ValueError(f"a batch function must return a pair (x, y) of tensors, got {_describe(batch)}; "
                         "e.g. lambda: sample_windows(ids, block_size, batch_size)")
    return batch[0].to(device), batch[1].to(device)


def _loss(out: object) -> torch.Tensor:
    """The loss of a model's ``(logits, loss, ...)``; a ValueError if the model does not follow that convention."""
    if not (isinstance(out, tuple | list) and len(out) >= 2 and isinstance(out[1], torch.Tensor)
            and out[1].numel() == 1):
        raise ValueError(f"model(x, targets) must return (logits, loss) with the mean loss a one-number tensor, got "
                         f"{_describe(out)}; compute the loss inside forward when targets are given")
    return out[1]


def _describe(value: object) -> str:
    """A short description of a value for an error message: shapes of tensors, type names otherwise."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)}: ({', '.join(_describe(v) for v in value)})"
    return type(value).__name__


def _optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``model.param_groups(weight_decay)`` when defined, else decay on matrices only."""
    if hasattr(model, "param_groups"):
        groups = model.param_groups(cfg.weight_decay)
    else:
        decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type == "cuda" if cfg.fused is None else cfg.fused
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, **({"fused": True} if fused else {}))


def train(model: torch.nn.Module, train_batches: BatchFn, cfg: TrainConfig, val_batches: BatchFn | None = None,
          device: torch.device | str = "cpu", checkpoint: str | os.PathLike | None = None, progress: bool = True,
          resume: str | os.PathLike | None = None, optimizer: torch.optim.Optimizer | None = None) -> History:
    """Train ``model`` in place for ``cfg.max_steps`` AdamW steps; returns the :class:`History`.

    Weight decay, if any, applies to the groups of ``model.param_groups(weight_decay)`` when the model defines
    it (e.g. GPT: linear weights only), otherwise to matrices (``dim >= 2``), not to biases or norm gains.
    ``optimizer`` replaces AdamW (e.g. chapter 7's Muon, built on ``model``'s parameters): the schedule then scales
    each parameter group's own learning rate, the one it was built with, as it scales ``cfg.lr``.
    With ``checkpoint``, the model, optimiser, gradient scaler, step, random states (torch CPU/CUDA and the
    batch generator), history, the config and ``model.config`` (if the model has one) are saved there at the
    end (and every ``cfg.checkpoint_interval`` steps). ``resume`` = such a checkpoint: training continues from
    its step, and with a batch callable that takes the generator, it gives exactly the losses of an
    uninterrupted run (the returned history covers all steps).
    """
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    optimizer = _optimizer(model, cfg, device) if optimizer is None else optimizer
    peaks = [group["lr"] for group in optimizer.param_groups]  # before a resumed state sets the current rates
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)
                if cfg.amp else contextlib.nullcontext())
    forward = torch.compile(model) if cfg.compile else model
    gen = torch.Generator().manual_seed(cfg.seed)  # the batch stream's random state
    draw = (lambda: train_batches(gen)) if _takes_generator(train_batches) else train_batches
    history, first = History(), 0
    if resume is not None:
        state = load_checkpoint(resume, model, optimizer, device)
        missing = {"step", "history", "scaler", "rng"} - set(state)
        if missing:
            raise ValueError(f"{resume} has no {sorted(missing)}: only checkpoints written by train(checkpoint=...) "
                             "can be resumed")
        first, history = state["step"], History(**state["history"])
        scaler.load_state_dict(state["scaler"])
        gen.set_state(state["rng"]["batches"])
        torch.set_rng_state(state["rng"]["torch"])
        if torch.cuda.is_available() and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    peak = cfg.peak_flops if cfg.flops_per_token is not None else None

    def save(step: int) -> None:
        rng = {"torch": torch.get_rng_state(), "batches": gen.get_state(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        model_config = getattr(model, "config", None)
        extra = {"model_config": asdict(model_config)} if dataclasses.is_dataclass(model_config) else {}
        save_checkpoint(checkpoint, model, optimizer, step=step, config=asdict(cfg), scaler=scaler.state_dict(),
                        rng=rng, history=asdict(history), **extra)

    start = time.perf_counter() - history.seconds
    bar = tqdm(range(first, cfg.max_steps), desc="training", disable=not progress)
    for step in bar:
        step_start = time.perf_counter()
        lr = lr_at(step, cfg)
        for group, group_peak in zip(optimizer.param_groups, peaks, strict=True):
            group["lr"] = lr_at(step, cfg, group_peak)
        optimizer.zero_grad(set_to_none=True)
        loss_sum, tokens = 0.0, 0
        for _ in range(cfg.grad_accum_steps):  # gradients add up over the micro-batches
            x, y = _to_device(draw(), device)
            with autocast:
                loss = _loss(forward(x, y))
            scaler.scale(loss / cfg.grad_accum_steps).backward()
            loss_sum, tokens = loss_sum + loss.item(), tokens + y.numel()
        scaler.unscale_(optimizer)  # true gradients for clipping (a no-op without fp16)
        max_norm = cfg.grad_clip if cfg.grad_clip is not None else math.inf
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        scaler.step(optimizer)
        scaler.update()
        tokens_per_s = tokens / (time.perf_counter() - step_start)
        history.train_loss.append(loss_sum / cfg.grad_accum_steps)
        history.lr.append(lr)
        history.grad_norm.append(norm.item())
        history.tokens += tokens
        history.tokens_per_s.append(tokens_per_s)
        if peak is not None:
            history.mfu.append(tokens_per_s * cfg.flops_per_token / peak)
        last = step == cfg.max_steps - 1
        if val_batches is not None and ((step + 1) % cfg.eval_interval == 0 or last):
            history.val_step.append(step + 1)
            history.val_loss.append(evaluate(model, val_batches, cfg.eval_batches, device, cfg.seed + 1))
            bar.set_postfix(train=f"{history.train_loss[-1]:.3f}", val=f"{history.val_loss[-1]:.3f}")
        history.seconds = time.perf_counter() - start
        if checkpoint is not None and cfg.checkpoint_interval and (step + 1) % cfg.checkpoint_interval == 0:
            save(step + 1)
    if checkpoint is not None:
        save(cfg.max_steps)
    return history


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, **extra) -> None:
    """Save the model's (and optimiser's) state and any ``extra`` values, atomically (temp file + rename)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict() if optimizer else None, **extra}
    save_atomic(state, path)


def save_atomic(obj: object, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` through a temporary file renamed into place: an interrupted write leaves
    ``path`` as it was (absent, or the previous file), never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, device: torch.device | str = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` (and ``optimizer``); returns it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        state = torch.load(path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path} is not a checkpoint of this model ({err}); delete it to retrain") from err
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    return state
