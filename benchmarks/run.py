"""The course's benchmark suite: every peer comparison in a fresh process, one table of ratios ours / peer.

Each pair below runs one benchmark script (``benchmarks/bench_*.py``, each also runnable alone) in its own
Python interpreter, which measures and writes its rows as JSON (``--json``). This script adds the ratio
ours / peer and the course's goal, and writes the table as a book page (markdown) and as JSON, with the date,
the machine and the command, so that the book shows measured numbers, never typed ones.

    python benchmarks/run.py             # the full suite (<= 15 min on 2 cores) -> book/benchmarks.md and .json
    python benchmarks/run.py --quick     # seconds per pair, 1 thread -> .build/bench-quick/benchmarks.md and .json
    python benchmarks/run.py --render book/benchmarks.json  # rewrite the page from recorded numbers (no measuring)
    make bench                           # the full suite; `make bench BENCH_ARGS=--quick` for the quick one
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import page

from lmcourse.runtime import usable_cores

ROOT = Path(__file__).resolve().parents[1]
CHAR_GPT_BUDGET_S = 60  # seconds of training per recipe in the suite (the script's own default is 240)


@dataclass(frozen=True)
class Pair:
    """One peer comparison: a benchmark script and its arguments, run in a fresh interpreter."""

    name: str
    script: str
    args: tuple[str, ...]  # the full run
    quick_args: tuple[str, ...]  # the smoke run
    threads: int | None = None  # CPU threads in the full run (None: every core); the quick run uses 1
    takes_threads: bool = True  # False for single-threaded pure-Python scripts


PAIRS = (
    Pair("ngram", "bench_ngram.py", (), ("--quick",), takes_threads=False),
    Pair("bpe-train", "bench_bpe.py", ("--part", "train"), ("--quick", "--part", "train")),
    Pair("bpe-encode", "bench_bpe.py", ("--part", "encode"), ("--quick", "--part", "encode")),
    Pair("gpt-train", "bench_gpt.py", (), ("--quick",)),
    Pair("generate-hf", "bench_generate.py", ("--peer", "hf", "--contexts", "256", "1024", "--rounds", "5"),
         ("--quick", "--peer", "hf"), threads=1),
    Pair("kv-cache", "bench_generate.py", ("--peer", "uncached", "--contexts", "256", "1024", "--rounds", "3"),
         ("--quick", "--peer", "uncached"), threads=1),
    Pair("char-gpt", "bench_char_gpt.py", ("--budget", str(CHAR_GPT_BUDGET_S)), ("--quick", "--budget", "2")),
)

# The course's goals (from its issues), by row key (shell-style patterns): the goal in words and its test.
GOALS = {
    "ngram-same-work": ("faster than NLTK: ratio < 1", lambda r: r["ratio"] < 1),
    "ngram-all-test": ("ours <= 10 s", lambda r: r["ours"] <= 10),
    "gpt-train-*": ("ratio >= 1.0", lambda r: r["ratio"] >= 1.0),
    "generate-hf-*": ("ratio >= 1.0", lambda r: r["ratio"] >= 1.0),
    "kv-cache-1024": ("speed-up >= 8 (CPU)", lambda r: r["ratio"] >= 8),
}


def arguments(pair: Pair, quick: bool, threads: int | None) -> list[str]:
    """The script's arguments: the pair's own, then the thread count (``threads`` if given, else the pair's)."""
    args = list(pair.quick_args if quick else pair.args)
    if pair.takes_threads:
        args += ["--threads", str(threads or (1 if quick else pair.threads) or usable_cores())]
    return args


def run_pair(pair: Pair, quick: bool, threads: int | None, timeout: float) -> dict:
    """Run one pair in a fresh interpreter (its own output goes to the console); returns its rows and details."""
    args = arguments(pair, quick, threads)
    shown = " ".join(["python", f"benchmarks/{pair.script}", *args])
    print(f"\n=== {pair.name}: {shown}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "benchmarks" / pair.script), *args, "--json", str(Path(tmp) / "out.json")]
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, timeout=timeout)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"benchmarks/run.py: the {pair.name} pair failed (exit code {done.returncode}): "
                             f"{' '.join(cmd)}")
        result = json.loads((Path(tmp) / "out.json").read_text())
    if not result["rows"]:
        raise SystemExit(f"benchmarks/run.py: the {pair.name} pair measured nothing")
    return {"name": pair.name, "command": shown, "seconds": seconds, **result}


def with_goal(row: dict) -> dict:
    """``row`` with its ratio ours / peer, the goal that applies to it (if any) and whether it is met."""
    row = {**row, "ratio": row["ours"] / row["theirs"], "goal": None, "met": None}
    if not math.isfinite(row["ratio"]):
        raise ValueError(f"{row['key']}: the ratio ours / peer is not finite: {row}")
    for pattern, (goal, check) in GOALS.items():
        if fnmatch.fnmatchcase(row["key"], pattern):
            row["goal"], row["met"] = goal, bool(check(row))
    return row


def cpu_model() -> str:
    """The CPU's name as the OS reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The commit measured (with a mark when the package or the benchmarks differ from it), if in a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "lmcourse", "benchmarks"], cwd=ROOT).returncode
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + (" + uncommitted changes" if dirty else "")


def machine() -> dict:
    """The hardware and the versions the numbers were measured with."""
    packages = ("torch", "transformers", "tokenizers", "tiktoken", "nltk")
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable_cores(),
            "os": platform.platform(), "python": platform.python_version(),
            **{name: version(name) for name in packages}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: tiny sizes, seconds per pair, 1 thread (numbers not meaningful)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for benchmarks.md and benchmarks.json (default: book/, or .build/bench-quick/ "
                             "with --quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for every pair (default: each pair's own, 1 with --quick)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one pair may take (default 900)")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="measure nothing: rewrite benchmarks.md next to JSON (a report this script wrote)")
    args = parser.parse_args(argv)
    if args.render is not None:
        report = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(page.markdown(report, CHAR_GPT_BUDGET_S))
        print(f"written: {args.render.with_suffix('.md')}")
        return
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    out = args.out or ROOT / (".build/bench-quick" if args.quick else "book")
    argv_shown = sys.argv[1:] if argv is None else argv
    report = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": " ".join(["python benchmarks/run.py", *argv_shown]), "quick": args.quick,
              "commit": git_commit(), "machine": machine(), "load_average_start": os.getloadavg()[0]}
    start = time.perf_counter()
    pairs = [run_pair(pair, args.quick, args.threads, args.timeout) for pair in PAIRS]
    report |= {"seconds": time.perf_counter() - start, "load_average_end": os.getloadavg()[0],
               "rows": [with_goal(row) for pair in pairs for row in pair["rows"]],
               "pairs": [{k: v for k, v in pair.items() if k != "rows"} for pair in pairs]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "benchmarks.md").write_text(page.markdown(report, CHAR_GPT_BUDGET_S))
    print(f"\n{page.table(report['rows'])}\n\nwritten: {out / 'benchmarks.md'} and benchmarks.json "
          f"({report['seconds'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
