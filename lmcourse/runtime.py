"""The machine a notebook runs on: device selection, CPU threads, seeding, and timing that waits for the device."""

from __future__ import annotations

import os
import platform
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lmcourse.core import check_positive_int

__all__ = ["get_device", "set_threads", "usable_cores", "seed_everything", "environment_report", "synchronize",
           "time_calls"]

_DEVICES = ("cuda", "mps", "cpu")


def get_device(prefer: str | None = None) -> torch.device:
    """The best available device: CUDA, then Apple MPS, then the CPU.

    ``prefer`` (or the ``LMCOURSE_DEVICE`` variable) forces one of ``"cuda"``, ``"mps"``, ``"cpu"``;
    asking for one that is not present raises ``RuntimeError`` rather than silently falling back.
    """
    prefer = prefer or os.environ.get("LMCOURSE_DEVICE") or None
    if prefer is not None:
        if prefer not in _DEVICES:
            raise ValueError(f"unknown device {prefer!r}: choose one of {', '.join(_DEVICES)}")
        if not _available(prefer):
            raise RuntimeError(f"device {prefer!r} was requested but is not available on this machine")
        return torch.device(prefer)
    return torch.device(next(d for d in _DEVICES if _available(d)))


def _available(device: str) -> bool:
    if device == "cuda":
        return torch.cuda.is_available()
    if device == "mps":
        return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    return True


def set_threads(n: int | None = None) -> int:
    """Use ``n`` CPU threads in PyTorch; returns n.

    The default is ``$LMCOURSE_THREADS`` if set (``make nbval`` sets 1, since it runs notebooks side by
    side), else every core this process may run on.
    """
    if n is None:
        n = int(os.environ.get("LMCOURSE_THREADS", "0")) or usable_cores()
    check_positive_int(n, "the number of threads")
    torch.set_num_threads(n)
    return n


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's generators (every device); returns a seeded CPU generator."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS
    return torch.Generator().manual_seed(seed)


def environment_report() -> dict[str, str]:
    """Versions and hardware, as the setup chapter prints them."""
    device = get_device()
    report = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "cpu threads": str(torch.get_num_threads()),
    }
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    return report


def synchronize(device: torch.device | str) -> None:
    """Wait until ``device`` has finished the work queued so far (nothing to wait for on a CPU).

    A GPU runs asynchronously: a call returns once its work is queued, so a clock read right after it measures
    the queueing, not the work.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_calls(fn: Callable[..., Any], *args: Any, repeats: int = 3, warmup: int = 0,
               device: torch.device | str = "cpu", reduce: Callable[[list[float]], float] = min,
               clock: Callable[[], float] = time.perf_counter, **kwargs: Any) -> tuple[float, Any]:
    """``(reduce(seconds of each of repeats calls), the last result)`` of ``fn(*args, **kwargs)``.

    ``warmup`` untimed calls come first (compilation, caches, lazy allocation); each timed call is bracketed by
    :func:`synchronize` on ``device``. The default ``reduce=min`` keeps the fastest call, the one least disturbed by
    whatever else the machine was doing; ``statistics.median`` is the other common choice.
    """
    check_positive_int(repeats, "repeats")
    for _ in range(warmup):
        fn(*args, **kwargs)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = clock()
        out = fn(*args, **kwargs)
        synchronize(device)
        times.append(clock() - start)
    return reduce(times), out
