"""Smoke test of the code paths that only a GPU exercises fully: one command, one line per check, exit 1 on a failure.

CI has no GPU, so the package's CUDA paths (fp16 with the gradient scaler, bf16, Inductor compilation, fused AdamW,
the KV cache on the device, NCCL) are tested there only through their CPU variants. On a lent GPU, run this first
(about a minute), then ``benchmarks/gpu_train.py``. On a CPU the same checks run with the CPU's variants
(tests/test_bench.py runs it so), which keeps the script itself tested.

    python benchmarks/gpu_smoke.py                 # on a GPU
    python benchmarks/gpu_smoke.py --no-compile    # skip Inductor (on a CPU it compiles for ~10 s per shape)
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from lmcourse.efficiency import gpt_flops_per_token
from lmcourse.inference import CachedGPT
from lmcourse.models import GPT, GPTConfig
from lmcourse.runtime import get_device, set_threads
from lmcourse.sampling import generate
from lmcourse.train import TrainConfig, sample_windows, train

CONFIG = GPTConfig(vocab_size=32, block_size=32, n_layer=2, n_head=2, n_embd=64)
IDS = torch.arange(20_000) * 7 % 32  # a sequence with a learnable rule: each id predicts the next exactly


def _run(device: torch.device, steps: int, **kwargs) -> tuple[GPT, list[float], list[float]]:
    """Train a fresh seeded GPT for ``steps`` steps: (model, training losses, MFUs)."""
    torch.manual_seed(0)
    model = GPT(CONFIG)
    cfg = TrainConfig(max_steps=steps, lr=3e-3, **kwargs)
    history = train(model, lambda g: sample_windows(IDS, CONFIG.block_size, 16, g), cfg, device=device,
                    progress=False)
    return model, history.train_loss, history.mfu


def check_precision(device: torch.device, amp: str | None) -> str:
    """Training under autocast (fp16 with the gradient scaler) learns: the loss falls and stays finite."""
    model, losses, _ = _run(device, 40, amp=amp)
    assert all(math.isfinite(x) for x in losses), f"non-finite loss: {losses}"
    assert all(torch.isfinite(p).all() for p in model.parameters()), "non-finite parameters"
    assert losses[-1] < 0.5 * losses[0], f"the loss did not fall: {losses[0]:.3f} -> {losses[-1]:.3f}"
    return f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def _largest_loss_gap(device: torch.device, reference: dict, variant: dict, steps: int = 10) -> float:
    """The largest difference between the training losses of two seeded runs that differ only in settings."""
    _, a, _ = _run(device, steps, **reference)
    _, b, _ = _run(device, steps, **variant)
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def check_compile(device: torch.device) -> str:
    """torch.compile (Inductor) trains the same model to the same losses as eager mode, up to rounding."""
    worst = _largest_loss_gap(device, {}, {"compile": True})
    assert worst < 1e-2, f"compiled losses differ from eager ones by {worst:.2e}"
    return f"largest loss difference to eager {worst:.1e} over 10 steps"


def check_fused_adamw(device: torch.device) -> str:
    """The fused AdamW kernel gives the losses of the for-loop one, up to rounding."""
    worst = _largest_loss_gap(device, {"fused": False}, {"fused": True})
    assert worst < 1e-3, f"fused AdamW differs from the plain one by {worst:.2e}"
    return f"largest loss difference to the plain AdamW {worst:.1e}"


def check_mfu(device: torch.device) -> str:
    """With FLOPs per token given, each step logs an MFU in (0, 1] (the peak looked up, or measured on a CPU)."""
    peak = None if device.type == "cuda" else 1e12  # CPUs have no table entry: any positive peak will do here
    _, _, mfu = _run(device, 5, flops_per_token=gpt_flops_per_token(CONFIG), peak_flops=peak)
    assert len(mfu) == 5 and all(0 < m <= 1 for m in mfu), f"MFU per step: {mfu}"
    return f"MFU logged per step (last {mfu[-1]:.2%})"


def check_generation(device: torch.device) -> str:
    """On the device, KV-cached generation gives the uncached tokens (greedy and seeded sampling)."""
    model, _, _ = _run(device, 20)
    model.eval()
    prompt = torch.tensor([[1, 8, 15]], device=device)
    for kwargs in ({"greedy": True}, {"top_k": 5}):
        runs = [generate(net, prompt, 40, generator=torch.Generator(device).manual_seed(0), **kwargs)
                for net in (CachedGPT(model), model)]  # with the KV cache, and re-reading the context
        assert torch.equal(*runs), f"cached and uncached generation differ with {kwargs}"
    return "cached == uncached, greedy and top-k"


def check_ddp(device: torch.device) -> str:
    """Two processes (NCCL on two GPUs, else gloo on the CPU) run lmcourse.ddp to the end."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "lmcourse.ddp", "--steps", "5", "--global-batch", "8", "--block-size", "32",
               "--out", str(Path(tmp) / "ddp.pt")]
        env = None if torch.cuda.device_count() >= 2 else {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
    backend = "nccl" if torch.cuda.device_count() >= 2 else "gloo (fewer than 2 GPUs)"
    return f"2 processes, {backend}: {done.stdout.strip().splitlines()[-1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile check")
    parser.add_argument("--no-ddp", action="store_true", help="skip the two-process DDP check")
    args = parser.parse_args(argv)
    device = get_device()
    if device.type == "cpu":
        set_threads()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    print(f"device {device} ({name}), torch {torch.__version__}")
    checks: list[tuple[str, Callable[[], str]]] = [
        ("float32 training", lambda: check_precision(device, None)),
        ("bf16 autocast training", lambda: check_precision(device, "bf16")),
        ("fp16 autocast + GradScaler training", lambda: check_precision(device, "fp16")),
        ("fused AdamW", lambda: check_fused_adamw(device)),
        ("MFU logging", lambda: check_mfu(device)),
        ("KV-cached generation", lambda: check_generation(device)),
    ]
    if not args.no_compile:
        checks.append(("torch.compile (Inductor)", lambda: check_compile(device)))
    if not args.no_ddp:
        checks.append(("DDP", lambda: check_ddp(device)))
    failed = 0
    for label, check in checks:
        try:
            print(f"ok    {label}: {check()}", flush=True)
        except Exception as err:  # report every check, then fail
            failed += 1
            print(f"FAIL  {label}: {type(err).__name__}: {err}", flush=True)
    print(f"{len(checks) - failed} of {len(checks)} checks passed on {device}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
