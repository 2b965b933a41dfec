"""The benchmark suite runs end to end (`make bench BENCH_ARGS=--quick`) and writes a complete table.

Benchmarks are not timed tests: this only checks that every pair runs and reports a finite ratio, and that a
quick run leaves the book's measured page alone.
"""

from __future__ import annotations

import fnmatch
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW_KEYS = ("ngram-same-work", "ngram-all-test", "bpe-train", "bpe-encode-tiktoken", "bpe-encode-hf",
            "gpt-train-cpu-*", "generate-hf-*", "kv-cache-*", "char-gpt-recipe", "char-gpt-vs-lstm",
            "char-gpt-vs-previous")
BOOK_FILES = [ROOT / "book/benchmarks.md", ROOT / "book/benchmarks.json"]


def test_quick_suite_writes_every_row_with_a_finite_ratio(tmp_path):
    before = {p: p.read_bytes() for p in BOOK_FILES if p.exists()}
    done = subprocess.run([sys.executable, "benchmarks/run.py", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {p: p.read_bytes() for p in BOOK_FILES if p.exists()} == before, "a quick run must not touch book/"

    report = json.loads((tmp_path / "benchmarks.json").read_text())
    rows = report["rows"]
    keys = [r["key"] for r in rows]
    for pattern in ROW_KEYS:
        assert fnmatch.filter(keys, pattern), f"no row {pattern!r} in {keys}"
    for r in rows:
        assert math.isfinite(r["ratio"]) and r["ratio"] > 0, r
        assert math.isclose(r["ratio"], r["ours"] / r["theirs"]) and r["better"] in ("lower", "higher"), r
    for r in rows:
        if fnmatch.fnmatch(r["key"], "gpt-train-*") or r["key"].startswith("ngram-"):
            assert r["goal"] and isinstance(r["met"], bool), r
    assert report["quick"] and report["machine"]["torch"] and report["machine"]["cpu"]
    assert len(report["pairs"]) == 7 and all(p["seconds"] > 0 for p in report["pairs"])

    page = (tmp_path / "benchmarks.md").read_text()
    assert [line for line in page.splitlines() if line.startswith("# ")] == ["# Benchmarks"]
    lines = page.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| "))
    end = next(i for i in range(first, len(lines) + 1) if i == len(lines) or not lines[i].startswith("| "))
    table = lines[first:end]
    assert len(table) == 2 + len(rows), "the table has a header, a rule and one line per row"
    for recipe in ("course recipe", "previous course recipe", "nanoGPT CPU recipe", "chapter 5 LSTM"):
        assert any(line.startswith(f"| {recipe} |") for line in lines), f"the recipes table has no {recipe!r} row"
    assert "```{warning}" in page and report["date"] in page

    (tmp_path / "benchmarks.md").unlink()
    subprocess.run([sys.executable, "benchmarks/run.py", "--render", str(tmp_path / "benchmarks.json")], cwd=ROOT,
                   check=True, capture_output=True, timeout=60)
    assert (tmp_path / "benchmarks.md").read_text() == page, "--render rewrites the same page from the JSON"


def test_gpu_benchmark_quick_mode_runs_on_a_cpu_and_writes_its_record(tmp_path):
    """benchmarks/gpu_train.py is meant for a lent GPU; its --quick mode runs the same code on any CPU."""
    out = tmp_path / "gpu_train.json"
    done = subprocess.run([sys.executable, "benchmarks/gpu_train.py", "--quick", "--no-compile", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["quick"] and r["device_type"] == "cpu" and not r["compile"] and r["amp"] == "bf16"
    assert "gpu_train.py" in r["command"] and r["date"] and r["torch"]
    m, c = r["mfu_benchmark"], r["tinyshakespeare_benchmark"]
    assert m["tokens_per_s"] > 0 and 0 < m["mfu"] and m["steps_measured"] == m["steps"] - 2
    assert m["flops_per_token"] > 6 * m["model"]["params"] * 0.5, "FLOPs per token are about 6 N or more"
    assert c["steps"] >= 1 and c["tokens"] == c["steps"] * c["batch_windows"] * c["model"]["block_size"]
    assert c["val_chars"] == 10_000 and c["val_loss_nats_per_char"] < math.log(c["model"]["vocab_size"]), \
        "the character model learns something in its few seconds (below the uniform model's loss)"


def test_gpu_smoke_script_passes_its_checks_on_a_cpu():
    """benchmarks/gpu_smoke.py checks a lent GPU's code paths; on a CPU it runs their CPU variants, and must pass."""
    done = subprocess.run([sys.executable, "benchmarks/gpu_smoke.py", "--no-compile"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert sum(line.startswith("ok ") for line in lines) == 7 and not any(line.startswith("FAIL") for line in lines)
    assert lines[-1] == "7 of 7 checks passed on cpu"
