"""Benchmark: a Kneser-Ney 3-gram on WikiText-2, lmcourse.ngram against NLTK's nltk.lm.

Both fit the same padded data (n-1 <s> before each sentence, one </s> after; one sentence per non-empty
line of ``valid``) with discount 0.75, and compute the perplexity of ``test``; the script checks that the
perplexities agree to 1e-9 (relative) and prints the times and the speed ratio.

    python benchmarks/bench_ngram.py            # fit on all of valid; lmcourse scores all of test
    python benchmarks/bench_ngram.py --quick    # a small slice: runs in seconds
    python benchmarks/bench_ngram.py --json r.json  # also write the results for benchmarks/run.py

NLTK's Kneser-Ney scans every context of the order above for each lower-order probability, so it
takes tens of milliseconds per test token on WikiText-2 (hours for the 245k tokens of test). The full
run therefore lets NLTK score only the first ``--nltk-sentences`` test sentences (0 = all of them):
both libraries are compared on that same work (fit on all of valid + score those sentences), and NLTK's
time for all of test is also extrapolated from its time per token (reported as an estimate).
"""

from __future__ import annotations

import argparse
import time

from nltk.lm import KneserNeyInterpolated, Vocabulary
from nltk.util import everygrams, ngrams, pad_sequence
from results import add_json_argument, row, write_json

from lmcourse import data
from lmcourse.ngram import BOS, EOS, UNK, NGramLM

ORDER, DISCOUNT = 3, 0.75


def sentences(split: str) -> list[list[str]]:
    """WikiText-2 words, one sentence per non-empty line."""
    return [line.split() for line in data.load_text("wikitext2", split).split("\n") if line.strip()]


def padded(sentence: list[str]) -> list[str]:
    return [*pad_sequence(sentence, ORDER, pad_left=True, left_pad_symbol=BOS), EOS]


def nltk_fit(train: list[list[str]]) -> KneserNeyInterpolated:
    """NLTK's KN on the same n-grams as NGramLM: everygrams of the padded sentences that end at a prediction."""
    vocab = Vocabulary((w for s in train for w in padded(s)), unk_label=UNK)
    lm = KneserNeyInterpolated(ORDER, discount=DISCOUNT, vocabulary=vocab)
    lm.fit([g for g in everygrams(padded(s), max_len=ORDER) if g[-1] != BOS] for s in train)
    return lm


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def run(quick: bool, nltk_sentences: int | None = None) -> dict:
    """Fit both models, score test, check agreement; returns the measured numbers (seconds, perplexities)."""
    train, test = sentences("valid"), sentences("test")
    if quick:
        train, test = train[:100], test[:5]
    if nltk_sentences is None:
        nltk_sentences = len(test) if quick else 20
    subset = test[:nltk_sentences] if nltk_sentences > 0 else test
    tokens = sum(len(s) + 1 for s in test)  # predictions: every word and each </s>
    subset_tokens = sum(len(s) + 1 for s in subset)

    ours, ours_fit = timed(NGramLM(ORDER, "kneser-ney", discount=DISCOUNT).fit, train)
    ours_ppl, ours_eval = timed(ours.perplexity, test)
    ours_subset_ppl, ours_subset_eval = timed(ours.perplexity, subset)

    ref, nltk_fit_s = timed(nltk_fit, train)
    nltk_ppl, nltk_eval = timed(ref.perplexity, [g for s in subset for g in ngrams(padded(s), ORDER)])
    rel_diff = abs(ours_subset_ppl - nltk_ppl) / nltk_ppl
    if not rel_diff <= 1e-9:
        raise AssertionError(f"perplexities disagree: lmcourse {ours_subset_ppl!r}, NLTK {nltk_ppl!r}")

    nltk_full_estimate = nltk_fit_s + nltk_eval * tokens / subset_tokens
    ours_same_work, nltk_same_work = ours_fit + ours_subset_eval, nltk_fit_s + nltk_eval
    return {
        "train_sentences": len(train), "test_tokens": tokens, "nltk_test_tokens": subset_tokens,
        "lmcourse_fit_s": ours_fit, "lmcourse_eval_s": ours_eval, "lmcourse_total_s": ours_fit + ours_eval,
        "lmcourse_test_perplexity": ours_ppl,
        "nltk_fit_s": nltk_fit_s, "nltk_eval_s": nltk_eval,
        "lmcourse_subset_perplexity": ours_subset_ppl, "nltk_subset_perplexity": nltk_ppl, "rel_diff": rel_diff,
        "lmcourse_same_work_s": ours_same_work, "nltk_same_work_s": nltk_same_work,
        "speedup_same_work": nltk_same_work / ours_same_work,
        "nltk_total_s_estimate": nltk_full_estimate,
        "speedup_full_estimate": nltk_full_estimate / (ours_fit + ours_eval),
    }


def rows(r: dict) -> list[dict]:
    """The suite's rows: the measured comparison on the same work, and all of test with NLTK extrapolated."""
    fit = f"Kneser-Ney {ORDER}-gram: fit on valid ({r['train_sentences']:,} sentences)"
    return [
        row("ngram-same-work", f"{fit} + score {r['nltk_test_tokens']:,} test predictions", "NLTK nltk.lm",
            r["lmcourse_same_work_s"], r["nltk_same_work_s"], "s", "lower", threads=1),
        row("ngram-all-test", f"{fit} + score all of test ({r['test_tokens']:,} predictions)",
            "NLTK nltk.lm (time extrapolated)", r["lmcourse_total_s"], r["nltk_total_s_estimate"], "s", "lower",
            threads=1),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 valid sentences, 5 test sentences")
    parser.add_argument("--nltk-sentences", type=int, default=None,
                        help="test sentences NLTK scores (default: 20; all of them with --quick; 0 = all)")
    add_json_argument(parser)
    args = parser.parse_args()
    r = run(args.quick, args.nltk_sentences)
    write_json(args.json, rows(r), r)
    print(f"Kneser-Ney {ORDER}-gram, discount {DISCOUNT}: fit on {r['train_sentences']:,} sentences of "
          f"WikiText-2 valid, {r['test_tokens']:,} test predictions")
    print(f"lmcourse: fit {r['lmcourse_fit_s']:.2f} s + all of test {r['lmcourse_eval_s']:.2f} s "
          f"= {r['lmcourse_total_s']:.2f} s, perplexity {r['lmcourse_test_perplexity']:.4f}")
    print(f"NLTK:     fit {r['nltk_fit_s']:.2f} s + {r['nltk_test_tokens']:,} test predictions "
          f"{r['nltk_eval_s']:.2f} s, perplexity {r['nltk_subset_perplexity']:.10f}")
    print(f"lmcourse on the same predictions: perplexity {r['lmcourse_subset_perplexity']:.10f} "
          f"(relative difference {r['rel_diff']:.1e})")
    print(f"speed ratio on the same work (fit + those predictions): {r['speedup_same_work']:.0f}x")
    if r["nltk_test_tokens"] < r["test_tokens"]:
        print(f"NLTK on all of test, extrapolated from its time per prediction: {r['nltk_total_s_estimate']:.0f} s "
              f"-> estimated ratio {r['speedup_full_estimate']:.0f}x")


if __name__ == "__main__":
    main()
