"""Data-parallel training of a small GPT with PyTorch's DistributedDataParallel (chapter 11).

Each of the W processes (ranks) holds a full copy of the model. At every step all ranks draw the same global
batch of B windows (the same seeded generator) and each takes its own B / W rows; after ``backward`` DDP
averages the gradients over the ranks (an all-reduce), so every copy takes the same AdamW step that one
process would take on the whole batch: the copies stay identical. The loop is :func:`lmcourse.train.train`.

Launch with ``torchrun`` (it starts the processes and sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous):

    torchrun --standalone --nproc_per_node=2 -m lmcourse.ddp --steps 20 --out /tmp/ddp.pt   # 2 processes
    python -m lmcourse.ddp --steps 20 --out /tmp/one.pt                                     # 1 process, same result

The backend is NCCL when CUDA is available (one GPU per rank) and gloo on CPUs, so the same command runs
as 2 CPU processes on a laptop. Rank 0 saves the final parameters (and the world size) to ``--out``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from lmcourse.core import check_non_negative_int, check_positive_int
from lmcourse.models.gpt import GPT, GPTConfig
from lmcourse.train import TrainConfig, sample_windows, save_atomic, train

__all__ = ["shard", "main"]


def shard(batch: tuple[torch.Tensor, torch.Tensor], rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows rank * B/W .. (rank + 1) * B/W of a global batch (x, y), each (B, T); B must be divisible by W."""
    x, y = batch
    B = x.shape[0]
    check_positive_int(world_size, "world_size")
    check_non_negative_int(rank, "rank")
    if rank >= world_size:
        raise ValueError(f"rank must be an integer in 0..world_size-1 = 0..{world_size - 1}, got {rank!r}")
    if y.shape[0] != B:
        raise ValueError(f"x and y must have the same number of rows, got {B} and {y.shape[0]}")
    if B % world_size:
        raise ValueError(f"the global batch of {B} rows must be divisible by the number of processes {world_size}")
    n = B // world_size
    return x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]


def _data(name: str | None, vocab_size: int, seed: int) -> tuple[torch.Tensor, int]:
    """A 1-D id tensor and its vocabulary size: a corpus from lmcourse.data (characters), or random ids."""
    if name is None:
        return torch.randint(0, vocab_size, (20_000,), generator=torch.Generator().manual_seed(seed)), vocab_size
    from lmcourse.data import load_text
    from lmcourse.tokenizers.char import CharTokenizer

    text = load_text(name)
    tokenizer = CharTokenizer().train(text)
    return torch.tensor(tokenizer.encode(text)), tokenizer.vocab_size


def main(argv: Sequence[str] | None = None) -> dict:
    """Train a small GPT on 1 process, or on WORLD_SIZE processes under torchrun; returns what rank 0 saves."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--global-batch", type=int, default=8, help="windows per step, over all processes")
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--data", default=None, help="a corpus of lmcourse.data, e.g. tinyshakespeare (default: "
                                                     "random ids, no download)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="where rank 0 saves the final parameters")
    args = parser.parse_args(argv)

    distributed = "WORLD_SIZE" in os.environ  # set by torchrun
    if distributed:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        rank, world_size = dist.get_rank(), dist.get_world_size()
    else:
        rank, world_size = 0, 1
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    try:
        ids, vocab_size = _data(args.data, 64, args.seed)
        torch.manual_seed(args.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        model = GPT(GPTConfig(vocab_size=vocab_size, block_size=args.block_size, n_layer=args.n_layer, n_head=4,
                              n_embd=args.n_embd)).to(device)
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
            if distributed else model

        def batches(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            return shard(sample_windows(ids, args.block_size, args.global_batch, generator), rank, world_size)

        shard(sample_windows(ids, args.block_size, args.global_batch), rank, world_size)  # fail early on bad sizes
        # weight_decay=0: DDP hides GPT.param_groups, and the 1-process run must use the same optimiser groups
        cfg = TrainConfig(max_steps=args.steps, lr=args.lr, weight_decay=0.0, seed=args.seed)
        history = train(wrapped, batches, cfg, device=device, progress=rank == 0)
        result = {"model": {k: v.cpu() for k, v in model.state_dict().items()}, "world_size": world_size,
                  "train_loss_rank0": history.train_loss}
        if rank == 0:
            print(f"{world_size} process(es), backend {dist.get_backend() if distributed else 'none'}: rank 0's loss "
                  f"on its {args.global_batch // world_size} of {args.global_batch} windows per step "
                  f"{history.train_loss[0]:.4f} -> {history.train_loss[-1]:.4f} in {args.steps} steps")
            if args.out:
                save_atomic(result, args.out)
        return result
    finally:
        if distributed:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
