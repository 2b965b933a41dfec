"""The book's appendix page of benchmarks (MyST markdown), written by ``benchmarks/run.py`` from its measurements."""

from __future__ import annotations

INTRO = """\
# Benchmarks

Every chapter checks its from-scratch code against a trusted library for *correctness*. This page compares
their *speed*. Each pair of contenders runs in its own fresh Python process, with the machine, the date and
the command recorded below; `make bench` measures and writes this page, so that every number here is
measured, none typed. The raw numbers, with more detail per benchmark, are in {{download}}`benchmarks.json`.

## How to read the table

*Ours* is the course's number, *Peer's* the reference library's, in the same units. The ratio is always
ours / peer (written 1/n below 0.01); the *Better* column says which direction favours the course's code:
*lower* for times and losses, *higher* for throughputs. *Goal* is the course's target for that row, where it
has one, and *Met* says whether this run reaches it. *Threads* is the CPU thread limit the pair ran under.

- **n-gram** (chapter 1): a Kneser-Ney 3-gram (discount 0.75) fitted on WikiText-2's valid split, scoring
  its test split, `lmcourse.ngram` against NLTK's `nltk.lm`; the perplexities agree to 1e-9 (checked). NLTK
  takes tens of milliseconds per test prediction, so it scores only the first test sentences: the first
  row compares the two on that same work; the second times `lmcourse` on all of test against NLTK's time
  extrapolated from its time per prediction.
- **BPE training** (chapter 8): byte-level BPE with GPT-2's pre-tokenisation regex on Tiny Shakespeare and
  WikiText-2 (raw valid and test), `lmcourse.tokenizers.BPETokenizer.train` (single-threaded Python) against
  Hugging Face tokenizers' `BpeTrainer` (Rust, multi-threaded); both learn the same merges.
- **BPE encoding** (chapter 8): the same text encoded with the tokenizer just trained, against tiktoken
  given our merge ranks (the same ids, checked; both encode the text as one string) and against Hugging Face
  tokenizers encoding it as a batch of lines (its parallel path).
- **GPT training** (chapter 7): one training step (forward, backward, AdamW) of `lmcourse.models.GPT`
  against Hugging Face's `GPT2LMHeadModel` with the same shape and weights (a random GPT-2 copied with
  `GPT.from_hf`, equal losses checked) on the same batch: chapter 7's character model and a small GPT-2
  (and GPT-2 small on a GPU, when there is one). The median of alternating steps.
- **Generation** (chapter 10): greedy generation of a whole context from a 1-token prompt, batch 1,
  chapter 7's model shape with random weights shared with a Hugging Face GPT-2: `lmcourse.sampling.generate`
  with our KV cache against Hugging Face's `generate` (cached too). The median of alternating runs.
- **KV cache** (chapter 10): the same generation with and without our KV cache (identical tokens,
  checked); the ratio is the cache's speed-up, which grows with the context.
- **Char-GPT recipe** (chapter 7): the course's GPT training recipe against nanoGPT's CPU recipe (run with its
  own step-based schedule), the course's previous recipe and chapter 5's LSTM, with the same data, the same
  wall-clock budget and the same held-out text, compared by held-out loss (the GPTs share the model code). The
  suite gives each recipe {budget} s of training; the recipe was chosen at the script's own default of 240 s per
  recipe, and chapter 7 shows that run (`benchmarks/results/char_gpt.json`) with an ablation of its ingredients.

## Re-running

```bash
make bench                          # the whole suite, one process per pair; rewrites this page
make bench BENCH_ARGS=--quick       # a smoke run in seconds (tiny sizes), written to .build/bench-quick/
python benchmarks/bench_ngram.py    # any one benchmark alone, with its own printed table (see --help)
python benchmarks/bench_char_gpt.py # the char-GPT recipes at their full budget of 240 s each
```

`python benchmarks/run.py --threads N` runs every pair on N threads, and
`python benchmarks/run.py --render book/benchmarks.json` rewrites this page from the recorded numbers without
measuring again. Timings depend on the load: measure on a quiet machine (the load average at the start and the
end of the run is recorded below).
"""


def number(x: float) -> str:
    """Three significant digits, thousands separated, no fewer than the integer part: 12,442, 185, 1.40, 0.0541."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:#.3g}"


def ratio(x: float) -> str:
    """A ratio as :func:`number`, or as 1/n below 0.01: 1/172 reads more easily than 0.00581."""
    return f"1/{1 / x:,.0f}" if 0 < x < 0.01 else number(x)


def cell(text: str) -> str:
    """Text that is safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def table(rows: list[dict]) -> str:
    """The markdown table of ``rows`` (as ``run.py`` completes them with ratio, goal and met)."""
    lines = ["| Benchmark | Peer | Ours | Peer's | Units | Ours / peer | Better | Goal | Met | Threads |",
             "| --- | --- | ---: | ---: | --- | ---: | --- | --- | --- | ---: |"]
    for r in rows:
        met = "-" if r["met"] is None else "yes" if r["met"] else "**no**"
        cells = [r["benchmark"], r["peer"], number(r["ours"]), number(r["theirs"]), r["units"], ratio(r["ratio"]),
                 r["better"], r["goal"] or "-", met, str(r["threads"])]
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return "\n".join(lines)


def recipes_table(details: dict) -> str:
    """The char-GPT pair's recipes side by side (what ``bench_char_gpt.py`` measured for each)."""
    lines = [f"The char-GPT recipes, {details['budget_s']:g} s of training each, one after the other in one process, "
             f"scored on {details['held_out_chars']:,} held-out characters:", "",
             "| Recipe | Parameters | Steps | ms/step | Characters seen | Held-out nats/char |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in details["results"].items():
        lines.append(f"| {name} | {r['params']:,} | {r['steps']:,} | {r['ms_per_step']:.1f} | {r['tokens']:,} | "
                     f"{r['val']:.4f} |")
    return "\n".join(lines)


def markdown(report: dict, char_gpt_budget_s: float) -> str:
    """The whole page: the fixed introduction, then the results of ``report`` (what ``run.py`` writes as JSON)."""
    m = report["machine"]
    versions = ", ".join(f"{name} {m[name]}" for name in ("torch", "transformers", "tokenizers", "tiktoken", "nltk"))
    commit = f", at commit `{report['commit']}`" if report["commit"] else ""
    results = [
        "## Results", "",
        f"Measured on {report['date']} by `{report['command']}`{commit}; the suite took "
        f"{report['seconds'] / 60:.1f} min.",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['os']}; Python {m['python']}, "
        f"{versions}. Load average (1 minute): {report['load_average_start']:.1f} at the start, "
        f"{report['load_average_end']:.1f} at the end.", "",
    ]
    if report["quick"]:
        results += ["```{warning}", "A quick smoke run (`--quick`): tiny sizes and one thread. These numbers say "
                    "nothing about speed; `make bench` measures the real ones.", "```", ""]
    char_gpt = [p["details"] for p in report.get("pairs", []) if p["name"] == "char-gpt" and "results" in p["details"]]
    results += [table(report["rows"]), ""] + ([recipes_table(char_gpt[0])] if char_gpt else [])
    return INTRO.format(budget=f"{char_gpt_budget_s:g}") + "\n" + "\n".join(results) + "\n"
