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

HF tokenizers and tiktoken run multi-threaded Rust; set RAYON_NUM_THREADS to pin HF's thread count.
"""

from __future__ import annotations

import argparse
import json
import time

import tiktoken
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


def run(quick: bool, vocab_size: int | None = None) -> dict:
    """Train and encode with the three libraries; returns the measured numbers (seconds, MB/s)."""
    text = corpus(quick)
    vocab_size = vocab_size or (1000 if quick else 4096)
    mb = len(text.encode()) / 1e6
    ours, ours_train = timed(BPETokenizer().train, text, vocab_size)
    hf, hf_train_s = timed(hf_train, text, vocab_size)
    same_merges = hf_merges(hf) == ours.merges
    enc = tiktoken.Encoding(name="bench", pat_str=ours.pattern, mergeable_ranks=ours.mergeable_ranks(),
                            special_tokens={})
    ids, ours_encode = timed(ours.encode, text)
    ref, tiktoken_encode = timed(enc.encode_ordinary, text)
    if ids != ref:
        raise AssertionError("lmcourse and tiktoken disagree on the ids")
    lines = text.splitlines(keepends=True)  # HF encodes a batch of lines in parallel, much faster than one string
    hf_ids, hf_encode = timed(lambda: [i for e in hf.encode_batch(lines) for i in e.ids])
    return {"mb": mb, "vocab_size": vocab_size, "tokens": len(ids), "hf_tokens": len(hf_ids),
            "same_merges": same_merges, "ours_train_s": ours_train, "hf_train_s": hf_train_s,
            "ours_mb_s": mb / ours_encode, "tiktoken_mb_s": mb / tiktoken_encode, "hf_mb_s": mb / hf_encode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the first 300,000 characters, vocab 1000")
    parser.add_argument("--vocab-size", type=int, default=None, help="default: 4096 (1000 with --quick)")
    args = parser.parse_args()
    r = run(args.quick, args.vocab_size)
    print(f"byte-level BPE, vocab {r['vocab_size']:,}, corpus {r['mb']:.2f} MB -> {r['tokens']:,} tokens "
          f"({r['mb'] * 1e6 / r['tokens']:.2f} bytes/token); merges equal to HF tokenizers: {r['same_merges']}")
    print(f"{'':24}{'lmcourse':>10}{'HF tokenizers':>15}{'tiktoken':>10}{'HF / ours':>11}{'tiktoken / ours':>17}")
    print(f"{'training time (s)':24}{r['ours_train_s']:10.2f}{r['hf_train_s']:15.2f}{'-':>10}"
          f"{r['hf_train_s'] / r['ours_train_s']:11.2f}{'-':>17}")
    print(f"{'encoding (MB/s)':24}{r['ours_mb_s']:10.2f}{r['hf_mb_s']:15.2f}{r['tiktoken_mb_s']:10.2f}"
          f"{r['hf_mb_s'] / r['ours_mb_s']:11.2f}{r['tiktoken_mb_s'] / r['ours_mb_s']:17.2f}")


if __name__ == "__main__":
    main()
