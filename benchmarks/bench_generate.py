"""Benchmark: generation speed of lmcourse's GPT with and without its KV cache, and against Hugging Face ``generate``.

A random HF GPT-2 is built from a local GPT2Config (no download) and copied into our GPT with ``GPT.from_hf``,
so both hold the same weights. Each measurement generates a whole context of N tokens from a 1-token prompt
(greedy, batch 1), so the uncached loop re-reads 1, 2, ..., N - 1 tokens while the cached one feeds one token
per step and attends to the cached keys and values. It reports, per context length N:

- the KV-cache speed-up: time of ``generate(cache=False)`` / time of ``generate(CachedGPT(model))`` (its KV cache);
- tokens/s of our cached ``generate`` and of HF's ``generate`` (``use_cache=True``, greedy), and their ratio.

Runs alternate between the contenders (after an untimed warm-up on a short context) and the median of
``--rounds`` is reported, so that a change in the machine's load hits all of them. Our cached and uncached
outputs must be identical (the script stops otherwise); the share of tokens on which HF agrees with us is
printed too. ``--peer hf`` or ``--peer uncached`` times only one of the two comparisons.

    python benchmarks/bench_generate.py            # chapter 7's character model shape, contexts 128..1024
    python benchmarks/bench_generate.py --quick    # a tiny model, contexts 32 and 64: seconds
    python benchmarks/bench_generate.py --peer uncached --contexts 1024 --json r.json  # the KV cache at 1024 only
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from results import add_json_argument, row, write_json
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from lmcourse.inference import CachedGPT
from lmcourse.models import GPT
from lmcourse.runtime import set_threads
from lmcourse.sampling import generate

SHAPES = {  # n_layer, n_head, n_embd, vocab_size, block_size
    "quick": dict(n_layer=2, n_head=4, n_embd=64, vocab_size=256, block_size=64),
    "char": dict(n_layer=4, n_head=4, n_embd=128, vocab_size=65, block_size=1024),  # chapter 7's model, longer context
}


def build(shape: dict, device: torch.device) -> tuple[GPT2LMHeadModel, GPT]:
    """A random HF GPT-2 in eval mode (no dropout) and our copy of it."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=shape["vocab_size"], n_positions=shape["block_size"], n_embd=shape["n_embd"],
                        n_layer=shape["n_layer"], n_head=shape["n_head"], resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, bos_token_id=None, eos_token_id=None, pad_token_id=0)
    hf = GPT2LMHeadModel(config).to(device).eval()
    return hf, GPT.from_hf(hf)


def timed(fn, device: torch.device) -> tuple[float, torch.Tensor]:
    """(seconds, output) of one call of ``fn``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def contenders(hf: GPT2LMHeadModel, ours: GPT, N: int, device: torch.device, peer: str) -> dict[str, Callable]:
    """Our cached generator and the peers named by ``peer`` ("hf", "uncached" or "both"), each a function that
    generates a whole context of N tokens from a 1-token prompt and returns the (1, N) ids."""
    prompt = torch.zeros(1, 1, dtype=torch.long, device=device)
    new = N - 1
    cached = CachedGPT(ours)  # the same weights, with the KV cache of chapter 10
    runs = {"cached": lambda: generate(cached, prompt, new, greedy=True)}
    if peer in ("uncached", "both"):
        runs["uncached"] = lambda: generate(ours, prompt, new, greedy=True, cache=False)
    if peer in ("hf", "both"):
        runs["hf"] = lambda: hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                                         do_sample=False, use_cache=True)  # no end token: always max_new_tokens
    return runs


def measure(hf: GPT2LMHeadModel, ours: GPT, N: int, device: torch.device, rounds: int, peer: str) -> dict:
    """Median seconds to generate a context of N tokens from a 1-token prompt, for each contender."""
    for fn in contenders(hf, ours, min(N, 16), device, peer).values():
        fn()  # warm-up on a short context, so that lazy initialisation is not timed
    runs = contenders(hf, ours, N, device, peer)
    seconds, outs = {name: [] for name in runs}, {}
    for _ in range(rounds):
        for name, fn in runs.items():
            s, outs[name] = timed(fn, device)
            seconds[name].append(s)
    median = {name: statistics.median(v) for name, v in seconds.items()}
    result = {"seconds": median}
    if "uncached" in runs:
        if not torch.equal(outs["cached"], outs["uncached"]):
            raise AssertionError(f"cached and uncached generation disagree at context {N}")
        result["speedup"] = median["uncached"] / median["cached"]
    if "hf" in runs:
        result["agree"] = (outs["hf"][0, :N] == outs["cached"][0]).float().mean().item()
        result["vs_hf"] = median["hf"] / median["cached"]
    return result


def rows(results: dict[int, dict], model: str, device: torch.device, threads: int) -> list[dict]:
    """The suite's rows: per context N, ours against HF generate and/or the KV-cache speed-up (tokens/s)."""
    out = []
    for N, r in results.items():
        s, what = r["seconds"], f"generation of {N} tokens, {model}, on {device.type}"
        if "vs_hf" in r:
            out.append(row(f"generate-hf-{N}", what, "HF generate", (N - 1) / s["cached"], (N - 1) / s["hf"],
                           "tokens/s", "higher", threads))
        if "speedup" in r:
            out.append(row(f"kv-cache-{N}", f"{what}: with the KV cache against without", "lmcourse, no KV cache",
                           (N - 1) / s["cached"], (N - 1) / s["uncached"], "tokens/s", "higher", threads))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model and short contexts (seconds)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: steadier timings)")
    parser.add_argument("--rounds", type=int, default=None, help="timed runs per contender (the median is reported)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--peer", choices=("both", "hf", "uncached"), default="both",
                        help="what our cached generator is timed against (default both)")
    parser.add_argument("--contexts", type=int, nargs="+", default=None,
                        help="context lengths N (default 128 256 512 1024; 32 64 with --quick)")
    add_json_argument(parser)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    threads = set_threads(args.threads)
    device = torch.device(args.device)
    shape = SHAPES["quick" if args.quick else "char"]
    contexts = args.contexts or ((32, 64) if args.quick else (128, 256, 512, 1024))
    if max(contexts) > shape["block_size"] or min(contexts) < 2:
        raise ValueError(f"contexts must lie in 2..{shape['block_size']} (the model's block size), got {contexts}")
    rounds = args.rounds or 3
    hf, ours = build(shape, device)
    dims = "(" + ", ".join(str(shape[k]) for k in ("n_layer", "n_head", "n_embd", "vocab_size", "block_size")) + ")"
    print(f"greedy generation of a whole context from a 1-token prompt, batch 1; torch {torch.__version__}, "
          f"{device}, {threads} CPU thread(s); shape (layers, heads, d, |V|, block_size) = {dims}")
    print(f"{'context N':>9} {'uncached s':>11} {'cached s':>9} {'KV speed-up':>12} {'ours tok/s':>11} "
          f"{'HF tok/s':>9} {'ours/HF':>8} {'HF agrees':>10}")
    results = {}
    for N in contexts:
        results[N] = r = measure(hf, ours, N, device, rounds, args.peer)
        s = r["seconds"]
        uncached = f"{s['uncached']:11.3f} {s['cached']:9.3f} {r['speedup']:11.1f}x" if "speedup" in r else \
            f"{'-':>11} {s['cached']:9.3f} {'-':>12}"
        hf_cols = f"{(N - 1) / s['hf']:9,.0f} {r['vs_hf']:7.2f}x {r['agree']:10.1%}" if "vs_hf" in r else \
            f"{'-':>9} {'-':>8} {'-':>10}"
        print(f"{N:9d} {uncached} {(N - 1) / s['cached']:11,.0f} {hf_cols}")
    print("KV speed-up = uncached time / cached time (same tokens, checked); ours/HF = HF generate time / our cached "
          "time (above 1: ours is faster); HF agrees = share of positions where HF's greedy tokens equal ours")
    model = "a tiny GPT" if args.quick else "chapter 7's char model"
    details = {"shape": shape, "rounds": rounds, "device": str(device),
               "contexts": {str(N): r for N, r in results.items()}}
    write_json(args.json, rows(results, model, device, threads), details)


if __name__ == "__main__":
    main()
