"""What each benchmark script hands to the suite (``benchmarks/run.py``): rows of "ours against a peer", as JSON.

A row holds one comparison: our number and the peer's, in the same units, and which direction is better. The
suite adds the ratio (ours / peer) and the course's goal; the scripts only measure.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--json PATH`` option every benchmark script takes."""
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the results (rows of ours against the peer) as JSON to PATH")


def row(key: str, benchmark: str, peer: str, ours: float, theirs: float, units: str, better: str,
        threads: int) -> dict:
    """One comparison. ``better`` is "lower" (times, losses) or "higher" (throughputs); ``threads`` is the CPU
    thread limit the process ran under."""
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    if not (math.isfinite(ours) and math.isfinite(theirs) and ours > 0 and theirs > 0):
        raise ValueError(f"{key}: both numbers must be finite and positive, got ours={ours!r}, peer={theirs!r}")
    return {"key": key, "benchmark": benchmark, "peer": peer, "ours": ours, "theirs": theirs, "units": units,
            "better": better, "threads": threads}


def write_json(path: Path | None, rows: list[dict], details: dict) -> None:
    """Write ``{"rows": rows, "details": details}`` to ``path`` (nothing when ``path`` is None)."""
    if path is not None:
        path.write_text(json.dumps({"rows": rows, "details": details}, indent=1) + "\n")
