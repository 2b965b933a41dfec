"""Benchmark: the course's character-level GPT recipe against nanoGPT's CPU recipe and chapter 5's LSTM, at equal time.

Every recipe trains for the same wall-clock budget, one after the other in one process, on the same data (the
first 90% of Tiny Shakespeare's characters; the last 10% are held out), and is scored the same way: the mean
cross-entropy (nats/char) over the whole held-out text, cut into consecutive windows of each GPT's context length
(``lmcourse.zoo.evaluate_text``), or read in order with the state carried for the LSTM (``evaluate_recurrent``).
The GPTs share the model code (``lmcourse.models.GPT``); only the recipe differs:

- the course's recipe (``BEST``), found by ``benchmarks/search_char_gpt.py``: 3 layers x 192, context 128, batch
  12, Muon (``lmcourse.optim``) for the blocks' matrices and AdamW for the rest, an untied head, no biases;
- the previous course recipe (``PREVIOUS``): 3 layers x 128, context 64, AdamW, a cosine over the time budget;
- nanoGPT's README recipe for a CPU, run as its ``train.py`` runs it: 4 layers, 4 heads, 128 wide, context 64,
  batch 12, lr 1e-3 decayed to 1e-4 by a cosine over a step count (the steps that fit the budget at the speed of
  the first 5% of it), 100 warm-up steps, no dropout, no biases, weight decay 0.1, betas (0.9, 0.99), clipping at 1;
- chapter 5's LSTM (the zoo's ``char_lstm`` recipe: one layer of 320, 64-dimensional embeddings, batch 16 x 64).

``--ablation`` also trains the steps from the previous recipe to the new one, one ingredient at a time (chapter 7
shows that table from ``benchmarks/results/char_gpt.json``).

    python benchmarks/bench_char_gpt.py              # 240 s per recipe on 2 threads (about 17 minutes)
    python benchmarks/bench_char_gpt.py --ablation --json benchmarks/results/char_gpt.json  # 7 recipes, 28 min
    python benchmarks/bench_char_gpt.py --quick      # 15 s per recipe, a slice of the held-out text
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace

import torch
from results import add_json_argument, row, write_json

from lmcourse.data import load_text
from lmcourse.models import GPT, GPTConfig
from lmcourse.optim import muon_with_adamw
from lmcourse.rnn import LSTMLM
from lmcourse.tokenizers import CharTokenizer
from lmcourse.train import sample_windows
from lmcourse.zoo import evaluate_recurrent, evaluate_text


@dataclass(frozen=True)
class Recipe:
    """A model shape and its optimisation hyper-parameters.

    ``schedule`` shapes the learning rate after ``warmup_steps`` of linear warm-up: "cosine" decays to ``min_lr``
    over the time budget (the fraction of it used); "nanogpt" is nanoGPT's own cosine over a step count, the steps
    that fit the budget at the speed measured over the first steps (as a nanoGPT user sets ``max_iters``); "wsd"
    holds ``lr`` and then decays linearly to ``min_lr`` over the last ``cooldown`` of the time budget. With
    ``muon_lr``, Muon (``lmcourse.optim``) updates the blocks' weight matrices at that rate and AdamW the rest.
    """

    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    batch_size: int
    lr: float
    min_lr: float
    warmup_steps: int
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    bias: bool = True  # biases in the linear layers and LayerNorms
    schedule: str = "cosine"  # "cosine" | "nanogpt" | "wsd"
    cooldown: float = 0.5  # "wsd": the fraction of the budget spent decaying
    mlp: str = "gelu"  # "gelu" | "relu2" | "swiglu"
    qk_norm: bool = False
    tie_weights: bool = True
    pos: str = "learned"
    norm: str = "layernorm"
    muon_lr: float | None = None  # None: AdamW for every parameter
    muon_momentum: float = 0.95
    grad_clip: float | None = 1.0

    def config(self, vocab_size: int) -> GPTConfig:
        """The model's GPTConfig."""
        return GPTConfig(vocab_size=vocab_size, block_size=self.block_size, n_layer=self.n_layer, n_head=self.n_head,
                         n_embd=self.n_embd, bias=self.bias, mlp=self.mlp, qk_norm=self.qk_norm,
                         tie_weights=self.tie_weights, pos=self.pos, norm=self.norm)


NANOGPT_CPU = Recipe(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, lr=1e-3, min_lr=1e-4,
                     warmup_steps=100, bias=False, schedule="nanogpt")  # nanoGPT's train.py defaults to bias = False
# The course's recipe before the search of benchmarks/results/char_gpt_search.jsonl (240 s each on 2 quiet cores,
# held-out nats/char): nanoGPT's shape with lr 4e-3 1.678 (biases) and 1.661 (none); batch 16 at lr 5e-3 1.664;
# 3 layers at lr 5e-3 1.632 -- at this budget a smaller, faster model that sees more tokens wins.
PREVIOUS = Recipe(n_layer=3, n_head=4, n_embd=128, block_size=64, batch_size=12, lr=5e-3, min_lr=5e-4,
                  warmup_steps=100, bias=False)
# The search (benchmarks/search_char_gpt.py, every trial in benchmarks/results/char_gpt_search.jsonl) found, in
# order of what each bought: Muon for the blocks' matrices, an untied head, a context of 128 characters in batches
# of 12 (more characters per step), and a width of 192.
_MUON = replace(PREVIOUS, muon_lr=0.02, lr=8e-3, min_lr=0.0, weight_decay=0.0)  # cosine to 0
BEST = replace(_MUON, tie_weights=False, block_size=128, n_embd=192, n_head=6)


def _optimizer(model: GPT, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW for every parameter, or Muon for the blocks' matrices and AdamW for the rest."""
    if recipe.muon_lr is None:
        return torch.optim.AdamW(model.param_groups(recipe.weight_decay), lr=recipe.lr, betas=recipe.betas)
    return muon_with_adamw(model, recipe.muon_lr, recipe.lr, recipe.weight_decay, recipe.betas, recipe.muon_momentum)


def lr_factor(recipe: Recipe, step: int, progress: float, total_steps: int | None) -> float:
    """The learning rate as a fraction of its peak, at ``step`` and ``progress`` (the fraction of the time used)."""
    floor = recipe.min_lr / recipe.lr
    if step < recipe.warmup_steps:
        return (step + 1) / recipe.warmup_steps
    if recipe.schedule == "wsd":
        return 1.0 - (1.0 - floor) * max(0.0, (progress - 1 + recipe.cooldown) / recipe.cooldown)
    if recipe.schedule == "nanogpt":
        if total_steps is None:  # still measuring the speed: the decay has not started
            return 1.0
        progress = (step - recipe.warmup_steps) / max(1, total_steps - recipe.warmup_steps)
    return floor + 0.5 * (1.0 - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass(frozen=True)
class LSTMRecipe:
    """Chapter 5's LSTM recipe (the zoo's ``char_lstm``): one layer of 320, 64-dimensional embeddings, AdamW."""

    hidden_size: int = 320
    n_embd: int = 64
    block_size: int = 64
    batch_size: int = 16
    lr: float = 5e-3
    min_lr: float = 5e-4
    warmup_steps: int = 50
    weight_decay: float = 0.0
    schedule: str = "cosine"
    cooldown: float = 0.5
    grad_clip: float | None = 1.0


LSTM = LSTMRecipe()
# The four recipes the benchmark compares, in this order, one after the other at the same budget.
RECIPES: dict[str, Recipe | LSTMRecipe] = {"course recipe": BEST, "previous course recipe": PREVIOUS,
                                           "nanoGPT CPU recipe": NANOGPT_CPU, "chapter 5 LSTM": LSTM}
# --ablation adds the steps from the previous recipe to the new one, one ingredient at a time (chapter 7's table).
ABLATION: dict[str, Recipe] = {
    "+ Muon for the matrices": _MUON,
    "+ untied head": replace(_MUON, tie_weights=False),
    "+ context 128": replace(_MUON, tie_weights=False, block_size=128),
}


def train_for(model: torch.nn.Module, optimizer: torch.optim.Optimizer, recipe: Recipe | LSTMRecipe,
              train_ids: torch.Tensor, budget_s: float, seed: int = 0) -> tuple[int, float]:
    """Train on random windows for ``budget_s`` seconds of wall time; returns (steps, seconds)."""
    peaks = [group["lr"] for group in optimizer.param_groups]
    gen = torch.Generator().manual_seed(seed)
    step, start, total_steps = 0, time.perf_counter(), None
    while (elapsed := time.perf_counter() - start) < budget_s and (total_steps is None or step < total_steps):
        if recipe.schedule == "nanogpt" and total_steps is None and elapsed > 0.05 * budget_s:
            total_steps = int(step * budget_s / elapsed)  # the steps that fit the budget at this speed
        factor = lr_factor(recipe, step, elapsed / budget_s, total_steps)
        for group, peak in zip(optimizer.param_groups, peaks, strict=True):
            group["lr"] = peak * factor
        x, y = sample_windows(train_ids, recipe.block_size, recipe.batch_size, gen)  # (B, T) each
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        step += 1
    return step, time.perf_counter() - start


def _summary(model: torch.nn.Module, recipe: Recipe | LSTMRecipe, steps: int, seconds: float, val: float) -> dict:
    return {"steps": steps, "seconds": seconds, "ms_per_step": 1000 * seconds / steps, "val": val,
            "params": sum(p.numel() for p in model.parameters()),
            "tokens": steps * recipe.batch_size * recipe.block_size}


def run(recipe: Recipe, train_ids: torch.Tensor, val_ids: torch.Tensor, vocab_size: int, budget_s: float,
        seed: int = 0) -> dict:
    """Train the GPT of ``recipe`` for ``budget_s`` seconds; returns steps, seconds and held-out loss (nats/char)."""
    torch.manual_seed(seed)
    model = GPT(recipe.config(vocab_size))
    steps, seconds = train_for(model, _optimizer(model, recipe), recipe, train_ids, budget_s, seed)
    return _summary(model, recipe, steps, seconds, evaluate_text(model, val_ids, recipe.block_size))


def run_lstm(recipe: LSTMRecipe, train_ids: torch.Tensor, val_ids: torch.Tensor, vocab_size: int, budget_s: float,
             seed: int = 0) -> dict:
    """The same for chapter 5's LSTM, scored on the held-out text read in order with the state carried."""
    torch.manual_seed(seed)
    model = LSTMLM(vocab_size, recipe.hidden_size, n_embd=recipe.n_embd, fused=True, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps, seconds = train_for(model, optimizer, recipe, train_ids, budget_s, seed)
    return _summary(model, recipe, steps, seconds, evaluate_recurrent(model, val_ids, recipe.block_size))


def tiny_shakespeare() -> tuple[torch.Tensor, torch.Tensor, int]:
    """Tiny Shakespeare's characters as ids: (the first 90%, the last 10%, the vocabulary size)."""
    text = load_text("tinyshakespeare")
    tok = CharTokenizer().train(text)
    ids = torch.tensor(tok.encode(text))
    n_train = int(0.9 * len(ids))
    return ids[:n_train], ids[n_train:], tok.vocab_size


def warm_up(vocab_size: int) -> None:
    """One training step of a throwaway model, so that PyTorch's lazy imports (the optimiser's first use takes
    seconds) are not charged to the first recipe's budget."""
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8))
    optimizer = torch.optim.AdamW(model.param_groups(0.1), lr=1e-3)
    x = torch.zeros(1, 8, dtype=torch.long)
    model(x, x)[1].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of training per recipe (default 240; 15 with --quick)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="15 s per recipe and 10,000 held-out characters")
    parser.add_argument("--ablation", action="store_true",
                        help="also train the recipes between the previous and the new one (chapter 7's table)")
    add_json_argument(parser)
    args = parser.parse_args()
    budget = args.budget or (15.0 if args.quick else 240.0)
    torch.set_num_threads(args.threads)
    train_ids, val_ids, vocab_size = tiny_shakespeare()
    if args.quick:
        val_ids = val_ids[:10_000]
    print(f"{budget:.0f} s per recipe, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}; "
          f"held-out loss over {len(val_ids):,} characters")
    warm_up(vocab_size)
    results = {}
    order = RECIPES
    if args.ablation:  # the old recipe, each ingredient added in turn, the new recipe, then the peers
        order = {"previous course recipe": PREVIOUS, **ABLATION, **RECIPES}
    for name, recipe in order.items():
        go = run_lstm if isinstance(recipe, LSTMRecipe) else run
        results[name] = r = go(recipe, train_ids, val_ids, vocab_size, budget)
        print(f"{name:24s} {r['params']:>9,} params  {r['steps']:>6,} steps  {r['ms_per_step']:6.1f} ms/step  "
              f"{r['tokens'] / 1e6:5.2f}M tokens  val {r['val']:.4f} nats/char "
              f"({r['val'] / math.log(2):.4f} bits/char)",
              flush=True)
    ours = results["course recipe"]["val"]
    rows = []
    for peer, key in (("nanoGPT CPU recipe", "char-gpt-recipe"), ("chapter 5 LSTM", "char-gpt-vs-lstm"),
                      ("previous course recipe", "char-gpt-vs-previous")):
        theirs = results[peer]["val"]
        print(f"held-out loss ratio course / {peer} = {ours / theirs:.3f} (< 1: the course recipe is better)")
        rows.append(row(key, f"char-GPT recipe: held-out loss after {budget:g} s of training", peer, ours, theirs,
                        "nats/char", "lower", args.threads))
    print(f"load average {os.getloadavg()[0]:.1f}")
    recipes = {name: asdict(r) for name, r in (RECIPES | ABLATION).items() if name in results}
    write_json(args.json, rows, {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                 "command": " ".join(["python benchmarks/bench_char_gpt.py", *sys.argv[1:]]),
                                 "budget_s": budget, "threads": args.threads, "held_out_chars": len(val_ids),
                                 "recipes": recipes, "results": results})

if __name__ == "__main__":
    main()
