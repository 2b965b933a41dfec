"""Benchmark: byte-level BPE training and encoding, lmcourse against Hugging Face tokenizers and tiktoken.

Corpus: Tiny Shakespeare + WikiText-2 raw valid + test (about 3.5 MB). All three tokenizers use GPT-2's
pre-tokenisation regex and a vocabulary of ``--vocab-size`` tokens (the 256 bytes + merges):

- training: lmcourse's efficient trainer against HF's ``BpeTrainer`` (ByteLevel, all 256 bytes as the
  initial alphabet); the script checks that both learn the same merges;
- encoding: the whole corpus with lmcourse (a fresh cache) and with tiktoken built from our trained ranks
  (the script checks the ids are equal), each as one string; with the HF tokenizer just trained, as a
  batch of lines (``encode_batch``, its fast path).

    python benchmarks/bench_bpe.py            # vocab 4096 on the whole corpus
    python benchmarks/bench_bpe.py --quick    # the first 300,000 characters, vocab 1000: seconds
    python benchmarks/bench_bpe.py --part train --json r.json  # time training only; write the results as JSON

HF tokenizers and tiktoken run Rust (HF multi-threaded); ``--threads`` pins HF's thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import tiktoken
from results import add_json_argument, row, write_json
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from lmcourse import data
from lmcourse.tokenizers import BPETokenizer
from lmcourse.tokenizers.bpe_train import bytes_to_unicode


def corpus(quick: bool) -> str:
    text = "".join([data.load_text("tinyshakespeare"), data.load_text("wikitext2-raw", "valid"),
                    data.load_text("wikitext2-raw", "test")])
    return text[:300_000] if quick else text


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def hf_train(text: str, vocab_size: int) -> Tokenizer:
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([text], trainer)
    return hf


def hf_merges(hf: Tokenizer) -> list[tuple[bytes, bytes]]:
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    spelled = lambda s: bytes(decoder[c] for c in s)
    return [tuple(map(spelled, m if isinstance(m, list) else m.split(" ")))
            for m in json.loads(hf.to_str())["model"]["merges"]]


def run(quick: bool, vocab_size: int | None = None, part: str = "all") -> dict:
    """Train with lmcourse and HF tokenizers, then encode with the three libraries; returns the measured numbers
    (seconds, MB/s) of ``part``: "train", "encode" (both still train, untimed) or "all"."""
    text = corpus(quick)
    vocab_size = vocab_size or (1000 if quick else 4096)
    mb = len(text.encode()) / 1e6
    ours, ours_train = timed(BPETokenizer().train, text, vocab_size)
    hf, hf_train_s = timed(hf_train, text, vocab_size)
    out = {"mb": mb, "vocab_size": vocab_size, "same_merges": hf_merges(hf) == ours.merges}
    if part in ("all", "train"):
        out |= {"ours_train_s": ours_train, "hf_train_s": hf_train_s}
    if part in ("all", "encode"):
        enc = tiktoken.Encoding(name="bench", pat_str=ours.pattern, mergeable_ranks=ours.mergeable_ranks(),
                                special_tokens={})
        ids, ours_encode = timed(ours.encode, text)
        ref, tiktoken_encode = timed(enc.encode_ordinary, text)
        if ids != ref:
            raise AssertionError("lmcourse and tiktoken disagree on the ids")
        lines = text.splitlines(keepends=True)  # HF encodes a batch of lines in parallel, much faster than one string
        hf_ids, hf_encode = timed(lambda: [i for e in hf.encode_batch(lines) for i in e.ids])
        out |= {"tokens": len(ids), "hf_tokens": len(hf_ids), "ours_mb_s": mb / ours_encode,
                "tiktoken_mb_s": mb / tiktoken_encode, "hf_mb_s": mb / hf_encode}
    return out


def rows(r: dict, threads: int) -> list[dict]:
    """The suite's rows for the parts measured in ``r``."""
    setup = f"vocab {r['vocab_size']:,}, {r['mb']:.2f} MB of text"
    out = []
    if "ours_train_s" in r:
        out.append(row("bpe-train", f"BPE training, {setup}", "HF tokenizers", r["ours_train_s"], r["hf_train_s"],
                       "s", "lower", threads))
    if "ours_mb_s" in r:
        out += [row("bpe-encode-tiktoken", f"BPE encoding, {setup}", "tiktoken", r["ours_mb_s"],
                    r["tiktoken_mb_s"], "MB/s", "higher", threads),
                row("bpe-encode-hf", f"BPE encoding, {setup}", "HF tokenizers (a batch of lines)", r["ours_mb_s"],
                    r["hf_mb_s"], "MB/s", "higher", threads)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the first 300,000 characters, vocab 1000")
    parser.add_argument("--vocab-size", type=int, default=None, help="default: 4096 (1000 with --quick)")
    parser.add_argument("--part", choices=("all", "train", "encode"), default="all",
                        help="what to time (default all; encode still trains both tokenizers, untimed)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for HF tokenizers (sets RAYON_NUM_THREADS; default: as set, else all cores)")
    add_json_argument(parser)
    args = parser.parse_args()
    if args.threads is not None:
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # read when HF first builds its thread pool
    threads = int(os.environ.get("RAYON_NUM_THREADS") or os.cpu_count() or 1)
    r = run(args.quick, args.vocab_size, args.part)
    write_json(args.json, rows(r, threads), r)
    print(f"byte-level BPE, vocab {r['vocab_size']:,}, corpus {r['mb']:.2f} MB; merges equal to HF tokenizers: "
          f"{r['same_merges']}; HF tokenizers on {threads} thread(s)")
    print(f"{'':24}{'lmcourse':>10}{'HF tokenizers':>15}{'tiktoken':>10}{'HF / ours':>11}{'tiktoken / ours':>17}")
    if "ours_train_s" in r:
        print(f"{'training time (s)':24}{r['ours_train_s']:10.2f}{r['hf_train_s']:15.2f}{'-':>10}"
              f"{r['hf_train_s'] / r['ours_train_s']:11.2f}{'-':>17}")
    if "ours_mb_s" in r:
        print(f"{'encoding (MB/s)':24}{r['ours_mb_s']:10.2f}{r['hf_mb_s']:15.2f}{r['tiktoken_mb_s']:10.2f}"
              f"{r['hf_mb_s'] / r['ours_mb_s']:11.2f}{r['tiktoken_mb_s'] / r['ours_mb_s']:17.2f}")
        print(f"{r['tokens']:,} tokens ({r['mb'] * 1e6 / r['tokens']:.2f} bytes/token)")


if __name__ == "__main__":
    main()
