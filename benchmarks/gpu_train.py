"""Benchmark for one lent GPU (an H100 or H200): MFU of a GPT-2-small-shaped model and Tiny Shakespeare in 90 s.

One command measures, with :func:`lmcourse.train.train`'s own loop and logging (chapter 11):

1. **MFU.** A GPT of GPT-2 small's shape (12 layers, 12 heads, 768 wide, context 1024, vocabulary 50304 = 50257
   rounded up to a multiple of 128) trains on random token ids in bf16 autocast with ``torch.compile`` and fused
   AdamW. tokens/s and MFU are the loop's per-step numbers (``History.tokens_per_s``, ``History.mfu``), with the
   FLOPs per token of ``lmcourse.efficiency.gpt_flops_per_token`` and the device's peak looked up in
   ``lmcourse.efficiency.PEAK_FLOPS`` (or ``--peak-tflops``); the median over the steps after compilation.
2. **Tiny Shakespeare in 90 s.** A character-level GPT sized for 90 s on one GPU (nanoGPT's shakespeare-char
   shape: 6 layers, 6 heads, 384 wide, context 256, batch 64, dropout 0.2) trains, after a short calibration run
   that measures its speed (and compiles it: the 90 s exclude compilation, as nanoGPT's timings do), for the number
   of steps that fit in 90 s; then its loss on the whole held-out last 10% of the characters
   (``lmcourse.zoo.evaluate_text``, nats per character).
3. The results go to ``--out`` as JSON: date, device name, torch version, the command, settings and numbers.

    python benchmarks/gpu_train.py --out gpu_train.json                   # on a GPU: about 4 minutes
    python benchmarks/gpu_train.py --quick --out /tmp/gpu_train.json      # tiny shapes, a few steps: any CPU

A device without a known peak (a CPU, a GPU missing from the table) needs ``--peak-tflops``; with ``--quick``
on a CPU the peak defaults to a measured float32 matrix product (a rough stand-in, for smoke tests only).
On a machine without network access, set ``LMCOURSE_DATA_MIRROR`` to a folder holding ``tinyshakespeare.txt``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from lmcourse.data import load_text
from lmcourse.efficiency import gpt_flops_per_token, peak_flops
from lmcourse.models import GPT, GPTConfig
from lmcourse.runtime import get_device, set_threads
from lmcourse.tokenizers import CharTokenizer
from lmcourse.train import History, TrainConfig, sample_windows, train
from lmcourse.zoo import evaluate_text, split_held_out

SETTINGS = {  # model shape, batch (B windows of block_size tokens), steps or seconds
    "full": {
        "mfu": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304, batch=16, steps=60, skip=20),
        "char": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch=64, dropout=0.2, seconds=90.0,
                     calibration_steps=60, val_chars=None),
    },
    "quick": {
        "mfu": dict(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=512, batch=4, steps=6, skip=2),
        "char": dict(n_layer=2, n_head=2, n_embd=64, block_size=64, batch=16, dropout=0.0, seconds=5.0,
                     calibration_steps=10, val_chars=10_000),
    },
}


def measured_matmul_flops(device: torch.device, n: int = 1024, repeats: int = 10) -> float:
    """FLOP/s of an (n, n) @ (n, n) float32 product on ``device`` (2 n^3 FLOPs each), the best of ``repeats``."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats + 1):  # the first product warms up
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_peak(device: torch.device, peak_tflops: float | None, quick: bool) -> tuple[float, str]:
    """The bf16 peak FLOP/s for MFU and where it came from: --peak-tflops, the data-sheet table, or (--quick on
    a device the table does not know) a measured float32 matrix product."""
    if peak_tflops is not None:
        return peak_flops(device, "bf16", peak_tflops * 1e12), "--peak-tflops"
    try:
        return peak_flops(device, "bf16"), "data sheet (lmcourse.efficiency.PEAK_FLOPS, dense bf16)"
    except ValueError as err:
        if not quick:
            raise SystemExit(f"{err}. Run with --peak-tflops T, T = the device's dense bf16 peak in TFLOP/s.") from err
        return measured_matmul_flops(device), "measured float32 matmul (--quick smoke test, not a data sheet)"


def bench_mfu(s: dict, device: torch.device, compile_: bool, peak: float, seed: int) -> dict:
    """Train a GPT of shape ``s`` on random ids; the median tokens/s and MFU of the steps after ``s['skip']``."""
    config = GPTConfig(vocab_size=s["vocab_size"], block_size=s["block_size"], n_layer=s["n_layer"],
                       n_head=s["n_head"], n_embd=s["n_embd"])
    ids = torch.randint(0, s["vocab_size"], (1_000_000,), generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    model = GPT(config)
    flops_per_token = gpt_flops_per_token(config)
    cfg = TrainConfig(max_steps=s["steps"], lr=6e-4, warmup_steps=0, weight_decay=0.1, betas=(0.9, 0.95),
                      amp="bf16", compile=compile_, flops_per_token=flops_per_token, peak_flops=peak, seed=seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    history = train(model, lambda g: sample_windows(ids, s["block_size"], s["batch"], g), cfg, device=device)
    steady = slice(s["skip"], None)
    return {"model": {**{k: s[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")},
                      "params": model.num_params(non_embedding=False)},
            "batch_windows": s["batch"], "tokens_per_step": s["batch"] * s["block_size"], "steps": s["steps"],
            "steps_measured": s["steps"] - s["skip"], "flops_per_token": flops_per_token,
            "tokens_per_s": statistics.median(history.tokens_per_s[steady]),
            "mfu": statistics.median(history.mfu[steady]),
            "first_step_s": s["batch"] * s["block_size"] / history.tokens_per_s[0],  # includes compilation
            "loss_first_last": [history.train_loss[0], history.train_loss[-1]],
            "max_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def _char_run(s: dict, vocab_size: int, train_ids: torch.Tensor, steps: int, device: torch.device, compile_: bool,
              seed: int) -> tuple[GPT, History]:
    """Train a fresh character-level GPT of shape ``s`` (same seed, same initial weights) for ``steps`` steps."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=s["block_size"], n_layer=s["n_layer"], n_head=s["n_head"],
                          n_embd=s["n_embd"], dropout=s["dropout"]))
    cfg = TrainConfig(max_steps=steps, lr=1e-3, min_lr=1e-4, warmup_steps=min(100, steps // 10), weight_decay=0.1,
                      betas=(0.9, 0.99), amp="bf16", compile=compile_, seed=seed)
    history = train(model, lambda g: sample_windows(train_ids, s["block_size"], s["batch"], g), cfg, device=device)
    return model, history


def bench_char(s: dict, device: torch.device, compile_: bool, seed: int) -> dict:
    """Calibrate the step time, train for the steps that fit in s['seconds'], and evaluate on the held-out 10%."""
    text = load_text("tinyshakespeare")
    tok = CharTokenizer().train(text)
    ids = torch.tensor(tok.encode(text))
    train_ids, val_ids = split_held_out(ids)
    if s["val_chars"] is not None:
        val_ids = val_ids[:s["val_chars"]]
    tokens_per_step = s["batch"] * s["block_size"]
    _, calibration = _char_run(s, tok.vocab_size, train_ids, s["calibration_steps"], device, compile_, seed)
    step_s = statistics.median(tokens_per_step / t for t in calibration.tokens_per_s[s["calibration_steps"] // 2:])
    steps = max(1, int(s["seconds"] / step_s))
    start = time.perf_counter()
    model, history = _char_run(s, tok.vocab_size, train_ids, steps, device, compile_, seed)
    wall = time.perf_counter() - start
    val = evaluate_text(model, val_ids, s["block_size"], device=device)
    return {"model": {k: s[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "dropout")} |
            {"params": model.num_params(non_embedding=False), "vocab_size": tok.vocab_size},
            "batch_windows": s["batch"], "budget_s": s["seconds"], "calibrated_step_ms": 1000 * step_s,
            "steps": steps, "tokens": history.tokens,
            "calibration_first_step_s": tokens_per_step / calibration.tokens_per_s[0],  # includes compilation
            "first_step_s": tokens_per_step / history.tokens_per_s[0],  # reuses the calibration run's compiled code
            "seconds_after_first_step": sum(tokens_per_step / t for t in history.tokens_per_s[1:]),
            "wall_seconds": wall, "final_train_loss": history.train_loss[-1],
            "val_chars": len(val_ids), "val_loss_nats_per_char": val}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="where to write the results (JSON)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and a few steps (a smoke test, any CPU)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense bf16 peak in TFLOP/s, when the table does not know it")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the models (default: on CUDA only; on a CPU it takes minutes)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    device = get_device()
    if device.type == "cpu":
        set_threads()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 work outside autocast (the evaluation) uses TF32
    compile_ = device.type == "cuda" if args.compile is None else args.compile
    settings = SETTINGS["quick" if args.quick else "full"]
    peak, peak_source = resolve_peak(device, args.peak_tflops, args.quick)
    print(f"device {device} ({_device_name(device)}), torch {torch.__version__}, compile {compile_}, "
          f"peak {peak / 1e12:.3g} TFLOP/s from {peak_source}", flush=True)
    start = time.perf_counter()
    mfu = bench_mfu(settings["mfu"], device, compile_, peak, args.seed)
    print(f"MFU model ({mfu['model']['params']:,} parameters): {mfu['tokens_per_s']:,.0f} tokens/s, "
          f"MFU {mfu['mfu']:.1%}", flush=True)
    char = bench_char(settings["char"], device, compile_, args.seed)
    print(f"Tiny Shakespeare: calibration's first step {char['calibration_first_step_s']:.1f} s"
          f"{' (compiling)' if compile_ else ''}; then {char['steps']} steps in {char['wall_seconds']:.1f} s, "
          f"held-out loss {char['val_loss_nats_per_char']:.4f} nats/char", flush=True)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": _device_name(device), "device_type": device.type, "torch": torch.__version__,
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "quick": args.quick, "compile": compile_,
              "amp": "bf16", "peak_flops": peak, "peak_source": peak_source, "mfu_benchmark": mfu,
              "tinyshakespeare_benchmark": char, "total_seconds": time.perf_counter() - start}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return result


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or device.type


if __name__ == "__main__":
    main()
