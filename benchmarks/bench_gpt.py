"""Benchmark: training throughput of lmcourse's GPT against Hugging Face's GPT2LMHeadModel, same shape and weights.

A random HF GPT-2 is built from a local GPT2Config (no download) and copied into our GPT with ``GPT.from_hf``.
Both then train on the same (B, T) batch with the same AdamW settings: one step is forward + backward +
optimiser step. HF runs with its GPT-2 defaults (activation "gelu_new", PyTorch's SDPA attention). The timed
steps alternate between the two models (after warm-up steps that are not timed), so that a change in the
machine's load hits both; the script reports the median tokens/s of each and their ratio. On a machine shared
with other work, use ``--threads 1``: waiting OpenMP threads make timings erratic.
It also prints both models' loss on the same batch before training, to show that they compute the same thing.

    python benchmarks/bench_gpt.py            # chapter 7's char model and a small GPT-2 on the CPU; GPT-2 small on CUDA
    python benchmarks/bench_gpt.py --quick    # a tiny one: runs in seconds
    python benchmarks/bench_gpt.py --json r.json  # also write the results for benchmarks/run.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from results import add_json_argument, row, write_json
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from lmcourse.models import GPT
from lmcourse.runtime import set_threads

LABELS = {"quick": "a tiny GPT", "char": "chapter 7's char model", "cpu": "a small GPT-2", "cuda": "GPT-2 small"}
SHAPES = {  # n_layer, n_head, n_embd, vocab_size, block_size (T), batch size (B)
    "quick": dict(n_layer=2, n_head=4, n_embd=128, vocab_size=2048, T=64, B=4),
    "char": dict(n_layer=4, n_head=4, n_embd=128, vocab_size=65, T=128, B=16),  # chapter 7's character model
    "cpu": dict(n_layer=4, n_head=4, n_embd=256, vocab_size=8192, T=128, B=8),
    "cuda": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50304, T=1024, B=8),  # GPT-2 small
}


def build(shape: dict, device: torch.device) -> tuple[GPT2LMHeadModel, GPT]:
    """A random HF GPT-2 (dropout off, so both compute the same function) and our copy of it."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=shape["vocab_size"], n_positions=shape["T"], n_embd=shape["n_embd"],
                        n_layer=shape["n_layer"], n_head=shape["n_head"], resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    hf = GPT2LMHeadModel(config).to(device).train()
    return hf, GPT.from_hf(hf)


def step_fn(model: torch.nn.Module, is_hf: bool, batch: torch.Tensor, targets: torch.Tensor):
    """``(loss, step)``: the loss of ``model`` on the (B, T) batch, and one training step (forward, backward, AdamW)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)

    def loss() -> torch.Tensor:
        # HF shifts its labels inside; our targets are the shifted ids, -1 where there is no next token
        return model(batch, labels=batch).loss if is_hf else model(batch, targets)[1]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()

    return loss, step


def measure(shape: dict, device: torch.device, warmup: int, rounds: int) -> dict:
    """Median training tokens/s of both models over ``rounds`` timed steps each, the two models taking turns."""
    hf, ours = build(shape, device)
    g = torch.Generator().manual_seed(1)
    batch = torch.randint(0, shape["vocab_size"], (shape["B"], shape["T"]), generator=g).to(device)
    targets = torch.cat([batch[:, 1:], torch.full_like(batch[:, :1], -1)], dim=1)
    runs = {"lmcourse": step_fn(ours, False, batch, targets), "transformers": step_fn(hf, True, batch, targets)}
    with torch.no_grad():
        losses = {name: loss().item() for name, (loss, _) in runs.items()}
    for _, step in runs.values():
        for _ in range(warmup):
            step()
    tokens_per_s = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (_, step) in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            tokens_per_s[name].append(batch.numel() / (time.perf_counter() - start))
    median = {name: statistics.median(v) for name, v in tokens_per_s.items()}
    return {"losses": losses, "tokens_per_s": median, "ratio": median["lmcourse"] / median["transformers"],
            "params": ours.num_params(non_embedding=False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model and few steps (seconds)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: 1 with --quick, else $LMCOURSE_THREADS or all cores)")
    parser.add_argument("--rounds", type=int, default=None, help="timed steps per model (the median is reported)")
    parser.add_argument("--no-cuda", action="store_true", help="measure on the CPU only")
    add_json_argument(parser)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    threads = set_threads(args.threads or (1 if args.quick else None))
    print(f"training throughput, forward + backward + AdamW; torch {torch.__version__}, {threads} CPU thread(s)")
    print(f"{'device':8} {'shape (layers, heads, d, |V|, T, B)':36} {'params':>10} {'loss ours':>10} {'loss HF':>10} "
          f"{'ours tok/s':>11} {'HF tok/s':>11} {'ratio':>6}")
    runs = [("cpu", "quick")] if args.quick else [("cpu", "char"), ("cpu", "cpu")]
    if torch.cuda.is_available() and not args.no_cuda:
        runs.append(("cuda", "cpu" if args.quick else "cuda"))
    rows, details = [], {}
    for device, name in runs:
        shape = SHAPES[name]
        rounds = args.rounds or (6 if args.quick else 15 if device == "cpu" else 30)
        r = measure(shape, torch.device(device), warmup=2 if device == "cpu" else 5, rounds=rounds)
        dims = ", ".join(str(shape[k]) for k in ("n_layer", "n_head", "n_embd", "vocab_size", "T", "B"))
        details[f"{device}-{name}"] = {"shape": shape, "rounds": rounds, **r}
        what = (f"GPT training, {LABELS[name]} ({r['params'] / 1e6:.2f} M params, batch {shape['B']} x "
                f"{shape['T']} tokens) on {device}")
        rows.append(row(f"gpt-train-{device}-{name}", what, "HF GPT2LMHeadModel", r["tokens_per_s"]["lmcourse"],
                        r["tokens_per_s"]["transformers"], "tokens/s", "higher", threads))
        print(f"{device:8} {dims:36} {r['params']:10,} {r['losses']['lmcourse']:10.6f} "
              f"{r['losses']['transformers']:10.6f} {r['tokens_per_s']['lmcourse']:11,.0f} "
              f"{r['tokens_per_s']['transformers']:11,.0f} {r['ratio']:5.2f}x")
        if abs(r["losses"]["lmcourse"] - r["losses"]["transformers"]) > 1e-4:
            raise AssertionError(f"the two models disagree on the loss: {r['losses']}")
    write_json(args.json, rows, details)
    print("ratio = lmcourse tokens/s / transformers tokens/s (above 1: lmcourse trains faster); "
          "loss = cross-entropy (nats) of both on the same batch before training")


if __name__ == "__main__":
    main()
