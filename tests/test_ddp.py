"""lmcourse.ddp: 2 CPU processes under torchrun (gloo) end with the parameters of 1 process on the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmcourse.ddp import main, shard

ARGS = ["--steps", "4", "--global-batch", "8", "--block-size", "16", "--n-embd", "32"]


def max_difference(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = tmp_path / "two.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lmcourse.ddp",
           *ARGS, "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = torch.load(out, weights_only=False)
    assert two["world_size"] == 2 and "backend gloo" in proc.stdout
    one = main(ARGS)  # this process, no torchrun: world size 1, the whole global batch
    assert one["world_size"] == 1
    half = main([*ARGS[:3], "4", *ARGS[4:]])  # what rank 0 alone would learn from its half of each batch
    moved = max_difference(one["model"], half["model"])
    assert moved > 1e-4  # the check below can tell a run that did not average the two halves' gradients
    assert max_difference(two["model"], one["model"]) < moved / 20


def test_shard_splits_the_global_batch_and_rejects_uneven_sizes():
    x, y = torch.arange(12).view(6, 2), torch.arange(12).view(6, 2) + 1
    parts = [shard((x, y), r, 3) for r in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    with pytest.raises(ValueError, match="must be divisible by the number of processes 4"):
        shard((x, y), 0, 4)


@pytest.mark.parametrize("rank, world_size, rows_y, message", [
    (4, 4, 8, r"rank must be an integer in 0..world_size-1 = 0..3, got 4"),
    (-1, 4, 8, "rank must be a non-negative integer, got -1"),
    (0, 0, 8, "world_size must be a positive integer, got 0"),
    (0, 2, 6, "x and y must have the same number of rows, got 8 and 6"),
])
def test_shard_rejects_a_rank_outside_the_world_and_mismatched_rows(rank, world_size, rows_y, message):
    with pytest.raises(ValueError, match=message):
        shard((torch.zeros(8, 2), torch.zeros(rows_y, 2)), rank, world_size)


def test_an_interrupted_save_of_the_result_leaves_no_half_written_file(tmp_path, monkeypatch):
    def power_cut(obj, f):
        Path(f).write_bytes(b"half a file")
        raise RuntimeError("power cut")

    monkeypatch.setattr(torch, "save", power_cut)
    out = tmp_path / "result.pt"
    with pytest.raises(RuntimeError, match="power cut"):
        main([*ARGS[:1], "1", *ARGS[2:], "--out", str(out)])
    assert list(tmp_path.iterdir()) == []
