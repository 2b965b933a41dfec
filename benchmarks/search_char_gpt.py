"""The search for the chapter-7 GPT's CPU recipe: each trial trains one recipe for a time budget and appends a line
to ``benchmarks/results/char_gpt_search.jsonl`` (the recipe, steps, ms/step, held-out nats/char, the machine's load).

Trials are variations of a base recipe (``bench_char_gpt.Recipe``), named in :data:`TRIALS`; the file keeps every
measurement, in order, so that the search can be re-read. Timings vary by about 10% between runs on a shared machine,
so compare recipes measured in one invocation, one after the other.

The search so far, in rounds (each a base recipe and its variations, 120 s each unless the log says 240): AdamW
recipes and Muon (round 1, ``muon-*``; Muon's Newton-Schulz iteration then ran in float32, one matrix at a time,
about a third slower per step than the bfloat16 stacks of ``lmcourse.optim`` used from round 2 on); an untied head
and longer contexts (``mu2-*``); more characters per step, depth and width (``mu3-*``); width at 240 s (``mu4-*``).
``bench_char_gpt.py`` runs the winner against its peers.

    python benchmarks/search_char_gpt.py --budget 240 base muon relu2   # three trials, 240 s each on 2 threads
    python benchmarks/search_char_gpt.py --list                          # the trials' names
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from bench_char_gpt import NANOGPT_CPU, PREVIOUS, Recipe, run, tiny_shakespeare, warm_up

LOG = Path(__file__).resolve().parent / "results" / "char_gpt_search.jsonl"

_B = PREVIOUS  # 3 x 128, context 64, batch 12, AdamW 5e-3, cosine over the budget
_M = replace(_B, muon_lr=0.02, lr=8e-3, min_lr=0.0, schedule="wsd", cooldown=0.5, weight_decay=0.0)
_M2 = replace(_M, tie_weights=False)
_M3 = replace(_M2, block_size=128)
_M4 = replace(_M3, n_embd=192, n_head=6)

TRIALS: dict[str, Recipe] = {
    "previous": _B,
    "nanogpt": NANOGPT_CPU,
    # the schedule: linear decay to zero over the last half (warm-up, stable, decay)
    "wsd": replace(_B, schedule="wsd", min_lr=0.0),
    # Muon for the blocks' matrices, AdamW for embeddings and gains
    "muon": _M,
    "muon-lr0.04": replace(_M, muon_lr=0.04),
    "muon-lr0.01": replace(_M, muon_lr=0.01),
    "muon-relu2": replace(_M, mlp="relu2"),
    "muon-qknorm": replace(_M, qk_norm=True),
    "muon-untied": replace(_M, tie_weights=False),
    "muon-T128": replace(_M, block_size=128, batch_size=6),
    "muon-T256": replace(_M, block_size=256, batch_size=3),
    "muon-B24": replace(_M, batch_size=24),
    "muon-4L": replace(_M, n_layer=4),
    "muon-2L": replace(_M, n_layer=2),
    # round 2: Newton-Schulz in bfloat16 on stacks of same-shaped matrices (a third less time per step), untied head
    "mu2": _M2,
    "mu2-T128": replace(_M2, block_size=128, batch_size=6),
    "mu2-T128-B12": replace(_M2, block_size=128),
    "mu2-B24": replace(_M2, batch_size=24),
    "mu2-4L": replace(_M2, n_layer=4),
    "mu2-w192": replace(_M2, n_embd=192, n_head=6),
    "mu2-adam0.016": replace(_M2, lr=0.016),
    "mu2-muon0.03": replace(_M2, muon_lr=0.03),
    # round 3 (round 2 stopped here): from context 128, batch 12 -- more characters per step amortise Muon's cost
    "mu3": _M3,
    "mu3-T256-B6": replace(_M3, block_size=256, batch_size=6),
    "mu3-T256-B12": replace(_M3, block_size=256),
    "mu3-B24": replace(_M3, batch_size=24),
    "mu3-4L": replace(_M3, n_layer=4),
    "mu3-w192": replace(_M3, n_embd=192, n_head=6),
    "mu3-adam0.016": replace(_M3, lr=0.016),
    "mu3-muon0.03": replace(_M3, muon_lr=0.03),
    "mu3-cosine": replace(_M3, schedule="cosine"),
    # round 4 (round 3 stopped here), at 240 s: width pays at this budget
    "mu4": _M4,
    "mu4-w256": replace(_M4, n_embd=256, n_head=8),
    "mu4-cosine": replace(_M4, schedule="cosine"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trials", nargs="*", help="names in TRIALS, run one after the other")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds of training per trial")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--list", action="store_true", help="print the trials' names and exit")
    parser.add_argument("--log", type=Path, default=LOG, help="the JSON-lines file to append to")
    args = parser.parse_args()
    if args.list or not args.trials:
        print("\n".join(TRIALS))
        return
    unknown = [t for t in args.trials if t not in TRIALS]
    if unknown:
        parser.error(f"unknown trials {unknown}; --list shows them")
    torch.set_num_threads(args.threads)
    train_ids, val_ids, vocab_size = tiny_shakespeare()
    warm_up(vocab_size)
    session = time.strftime("%Y-%m-%dT%H:%M:%S")
    for name in args.trials:
        load = os.getloadavg()[0]
        r = run(TRIALS[name], train_ids, val_ids, vocab_size, args.budget)
        line = {"trial": name, "session": session, "budget_s": args.budget, "threads": args.threads,
                "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
                **{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()},
                "recipe": asdict(TRIALS[name])}
        with open(args.log, "a") as f:
            f.write(json.dumps(line) + "\n")
        print(f"{name:16s} {r['steps']:>6,} steps {r['ms_per_step']:6.1f} ms/step  {r['tokens'] / 1e6:5.2f}M tokens  "
              f"val {r['val']:.4f} nats/char", flush=True)


if __name__ == "__main__":
    main()
