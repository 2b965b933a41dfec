"""The capstone's perplexity ladder (chapter 12): the course's models side by side on one held-out text.

Every rung is scored on the same text, the last 10% of Tiny Shakespeare, in **bits per character**, and
described by its size, the tokens it trained on, its training wall time and its training FLOPs:

- the smoothed n-gram (:func:`ngram_rung`) is fitted in place: counting, a few seconds, no FLOPs;
- the neural models come from :mod:`lmcourse.zoo` (:func:`zoo_rung`): ``char_mlp``, ``char_rnn``,
  ``char_lstm`` (chapter 5) and ``char_gpt`` (chapter 7), trained once and loaded afterwards.

Training FLOPs follow the rule of chapter 10: a forward pass costs 2 FLOPs per weight that multiplies an
activation, per token, and the backward pass twice that, so 6 per weight per token (embedding lookups
are free); the GPT adds its attention scores (:func:`lmcourse.efficiency.gpt_flops_per_token`).
:func:`step_flops` counts one training step with ``torch.utils.flop_counter`` to check the formula.

:data:`PTB_HISTORY` is the published history the ladder echoes: Penn Treebank test perplexity from
n-grams to GPT-2, each number with its BibTeX key in ``book/references.bib``. :func:`wikitext2` is a
word-level WikiText-2 recipe for readers with a GPU (``python -m lmcourse.ladder wikitext2 --help``).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass, fields

import torch
from torch.utils.flop_counter import FlopCounterMode

from lmcourse import zoo
from lmcourse.data import load_text
from lmcourse.efficiency import attention_as_matmuls, gpt_flops_per_token
from lmcourse.metrics import nats_to_bits, perplexity
from lmcourse.models.gpt import GPT, GPTConfig
from lmcourse.ngram import EOS, NGramLM
from lmcourse.rnn import LSTMLM, evaluate_stream
from lmcourse.runtime import get_device
from lmcourse.tokenizers.word import WordTokenizer
from lmcourse.train import TrainConfig, sample_windows, train

__all__ = ["Rung", "NGRAM_ORDER", "NGRAM_DISCOUNT", "LADDER", "ngram_rung", "zoo_rung",
           "matmul_weights", "train_flops_per_token", "step_flops", "PTBResult", "PTB_HISTORY",
           "WikiTextConfig", "wikitext_ids", "wikitext2", "main"]

# Chosen on a dev split carved from the training text (its last 10%), never on the held-out text:
# orders 5-8 x discounts 0.8-0.95; longer contexts are too sparse at a million characters.
NGRAM_ORDER, NGRAM_DISCOUNT = 7, 0.95

#: The zoo models of the ladder, from the fixed window to attention.
LADDER = ("char_mlp", "char_rnn", "char_lstm", "char_gpt")


@dataclass(frozen=True)
class Rung:
    """One model on the ladder, scored on the held-out text.

    ``params`` is the number of parameters (for the n-gram: the counts it stores), ``train_tokens`` the
    predictions it trained on (n-gram: the characters it counted), ``seconds`` the wall time of training on
    ``device`` (n-gram: fitting), ``train_flops`` the training FLOPs (None for counting).
    """

    name: str
    bits_per_char: float
    params: int
    train_tokens: int
    seconds: float
    train_flops: float | None
    device: str


def ngram_rung(train_text: str, val_text: str, order: int = NGRAM_ORDER,
               discount: float = NGRAM_DISCOUNT) -> tuple[Rung, NGramLM]:
    """Fit an interpolated Kneser-Ney character n-gram on ``train_text`` (one stream, newlines included) and
    score every character of ``val_text`` (the end-of-text symbol the model also predicts is not counted)."""
    if not val_text:
        raise ValueError("val_text is empty: pass the held-out text to score")
    start = time.perf_counter()
    lm = NGramLM(order, smoothing="kneser-ney", discount=discount).fit([train_text])
    seconds = time.perf_counter() - start
    total, count = lm.nll([val_text])  # every character and one final </s>
    context = ("<s>",) * (order - 1) + tuple(val_text)
    total += lm.logprob(EOS, context[len(context) - (order - 1):])  # take the </s> back out
    rung = Rung(f"{order}-gram, Kneser-Ney", nats_to_bits(total / (count - 1)), lm.num_counts(), len(train_text),
                seconds, None, "cpu")
    return rung, lm


def matmul_weights(model: torch.nn.Module) -> int:
    """Weights that multiply activations per token: every matrix parameter except embedding tables (lookups)."""
    lookups = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return sum(p.numel() for p in model.parameters() if p.dim() >= 2 and id(p) not in lookups)


def train_flops_per_token(model: torch.nn.Module, seq_len: int | None = None) -> float:
    """Training FLOPs per predicted token: 6 per matrix weight (forward 2, backward 4); for a GPT also the
    attention scores over ``seq_len`` (:func:`lmcourse.efficiency.gpt_flops_per_token`, tied head counted).

    A first layer that reads inputs needing no gradient (one-hot vectors) skips its input gradient and costs
    4 per weight, not 6; the rule ignores that saving, as Kaplan et al.'s 6 N D does."""
    if isinstance(model, GPT):
        return gpt_flops_per_token(model.config, seq_len, training=True)
    return 6.0 * matmul_weights(model)


def step_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one forward and backward pass on the batch (x, y), counted by ``torch.utils.flop_counter``.

    The counter sees the matrix products torch dispatches; a fused kernel it has no formula for (the CPU's
    ``torch.nn.LSTM``, cuDNN's recurrent kernels) counts as zero, so count a from-scratch twin of such a model.
    Fused attention is swapped for its two matrix products while counting (:func:`attention_as_matmuls`).
    """
    counter = FlopCounterMode(display=False)
    with counter, attention_as_matmuls():
        model(x, y)[1].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def zoo_rung(name: str, device: torch.device | str | None = None, progress: bool = True) -> tuple[Rung, zoo.Pretrained]:
    """The zoo model ``name`` (trained on first use, loaded afterwards) as a rung, with the model itself."""
    pretrained = zoo.get(name, device=device, progress=progress)
    info, recipe = pretrained.info, zoo.RECIPES[name]
    flops = train_flops_per_token(pretrained.model, recipe.block_size) * info["tokens"]
    rung = Rung(recipe.description.split(",")[0], nats_to_bits(info["val_loss_nats"]), info["params"],
                info["tokens"], info["seconds"], flops, info["device"])
    return rung, pretrained


@dataclass(frozen=True)
class PTBResult:
    """One published Penn Treebank (Mikolov's word-level version) test perplexity, with its source."""

    model: str
    year: int  # of the publication the number is taken from
    test_perplexity: float
    key: str  # BibTeX key in book/references.bib
    note: str


PTB_HISTORY: tuple[PTBResult, ...] = (
    PTBResult("KN5", 2012, 141.2, "mikolov2012statistical", "5-gram, modified Kneser-Ney smoothing"),
    PTBResult("RNN-LM", 2012, 124.7, "mikolov2012statistical", "one recurrent network (Mikolov et al. 2010)"),
    PTBResult("LSTM (small)", 2014, 114.5, "zaremba2014recurrent", "2 x 200 units, no dropout"),
    PTBResult("LSTM (medium)", 2014, 82.7, "zaremba2014recurrent", "2 x 650 units, dropout"),
    PTBResult("LSTM (large)", 2014, 78.4, "zaremba2014recurrent", "2 x 1500 units, dropout"),
    PTBResult("AWD-LSTM", 2018, 57.3, "merity2018regularizing", "weight-dropped LSTM, averaged SGD, fine-tuned"),
    PTBResult("GPT-2 (zero-shot)", 2019, 35.76, "radford2019language",
              "1.5B parameters trained on WebText, never on PTB; detokenized test set"),
)


@dataclass
class WikiTextConfig:
    """The word-level WikiText-2 recipe. The defaults are Zaremba et al.'s medium LSTM (2 x 650, dropout 0.5,
    35-step windows, batches of 20) trained with AdamW: a short run on a GPU, hours on a CPU."""

    model: str = "lstm"  # "lstm" | "gpt"
    width: int = 650  # LSTM hidden size = embedding size; GPT n_embd
    n_layers: int = 2
    n_head: int = 10  # GPT only
    dropout: float = 0.5
    block_size: int = 35
    batch_size: int = 20
    max_steps: int = 20_000
    lr: float = 2e-3
    weight_decay: float = 0.0
    train_split: str = "train"  # CI trains on "valid" (the train split downloads on first use)
    max_eval_tokens: int | None = None  # score only the first this many tokens of each held-out split
    dataset: str = "wikitext2"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in ("lstm", "gpt"):
            raise ValueError(f"model must be 'lstm' or 'gpt', got {self.model!r}")
        if self.train_split not in ("train", "valid", "test"):
            raise ValueError(f"train_split must be 'train', 'valid' or 'test', got {self.train_split!r}")
        if self.max_eval_tokens is not None and self.max_eval_tokens <= self.batch_size * self.block_size:
            raise ValueError(f"max_eval_tokens={self.max_eval_tokens} leaves nothing to score in batches of "
                             f"{self.batch_size} x {self.block_size}; use more tokens or None (all)")


def wikitext_ids(text: str, tokenizer: WordTokenizer) -> torch.Tensor:
    """Ids (N,) of the whitespace-separated words of ``text`` with ``<eos>`` after every line, as the literature
    counts WikiText tokens; a word outside the vocabulary is ``<unk>`` (id 0)."""
    return torch.tensor([tokenizer.stoi.get(w, 0) for line in text.splitlines() for w in (*line.split(), "<eos>")])


def _word_model(cfg: WikiTextConfig, vocab_size: int) -> torch.nn.Module:
    """The recipe's LSTM (embeddings as wide as the hidden state) or GPT over ``vocab_size`` words."""
    if cfg.model == "lstm":
        return LSTMLM(vocab_size, cfg.width, cfg.n_layers, fused=True, dropout=cfg.dropout, n_embd=cfg.width,
                      seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layers, n_head=cfg.n_head,
                         n_embd=cfg.width, dropout=cfg.dropout))


def wikitext2(cfg: WikiTextConfig, device: torch.device | str | None = None, progress: bool = True) -> dict:
    """Train a word-level model on WikiText-2's ``cfg.train_split`` and report the perplexity of the other splits.

    The vocabulary is the training split's words (with ``<unk>`` and ``<eos>``). Returns a dict with the
    model, its tokenizer, the training history, ``params``, ``seconds``, ``tokens`` and ``perplexity``
    ({split: word-level perplexity}, read in order as ``batch_size`` streams with the state carried for the
    LSTM, in consecutive windows of ``block_size`` for the GPT).
    """
    device = torch.device(device) if device is not None else get_device()
    texts = {split: load_text(cfg.dataset, split) for split in ("train", "valid", "test")
             if split == cfg.train_split or split != "train"}  # the train split only when it is trained on
    tokenizer = WordTokenizer(sorted(set(w for line in texts[cfg.train_split].splitlines()
                                         for w in (*line.split(), "<eos>"))))
    ids = {split: wikitext_ids(text, tokenizer) for split, text in texts.items()}
    model = _word_model(cfg, tokenizer.vocab_size).to(device)
    train_cfg = TrainConfig(max_steps=cfg.max_steps, lr=cfg.lr, warmup_steps=min(100, cfg.max_steps // 10),
                            weight_decay=cfg.weight_decay, grad_clip=0.25 if cfg.model == "lstm" else 1.0,
                            eval_interval=max(1, cfg.max_steps // 10), eval_batches=10, seed=cfg.seed)
    held_out = [split for split in ("valid", "test") if split != cfg.train_split]
    history = train(model, lambda g: sample_windows(ids[cfg.train_split], cfg.block_size, cfg.batch_size, g),
                    train_cfg, lambda g: sample_windows(ids[held_out[0]], cfg.block_size, cfg.batch_size, g),
                    device=device, progress=progress)
    ppl = {}
    for split in held_out:
        eval_ids = ids[split][:cfg.max_eval_tokens]
        nats = (evaluate_stream(model, eval_ids, cfg.batch_size, cfg.block_size) if cfg.model == "lstm"
                else zoo.evaluate_text(model, eval_ids, cfg.block_size, cfg.batch_size, device=device))
        ppl[split] = perplexity(nats)
    return {"model": model.eval(), "tokenizer": tokenizer, "history": history, "perplexity": ppl,
            "params": sum(p.numel() for p in model.parameters()), "seconds": history.seconds,
            "tokens": history.tokens, "config": asdict(cfg)}


def main(argv: list[str] | None = None) -> dict:
    """``python -m lmcourse.ladder wikitext2 [--model lstm] [--max-steps 20000] ...``: run the recipe, print
    the perplexities."""
    parser = argparse.ArgumentParser(prog="python -m lmcourse.ladder", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    wt = sub.add_parser("wikitext2", help="train a word-level model on WikiText-2 and report its perplexity")
    for f in fields(WikiTextConfig):
        wt.add_argument(f"--{f.name.replace('_', '-')}", type=int if f.default is None else type(f.default),
                        default=f.default,
                        help=f"default {f.default}")
    wt.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    args = vars(parser.parse_args(argv))
    args.pop("command")
    device = args.pop("device")
    result = wikitext2(WikiTextConfig(**args), device=device)
    print(f"{result['config']['model']}: {result['params']:,} parameters, {result['tokens']:,} training tokens in "
          f"{result['seconds']:.0f} s")
    for split, ppl in result["perplexity"].items():
        print(f"{split} perplexity {ppl:.2f} (log2 {math.log2(ppl):.3f} bits per word)")
    return result


if __name__ == "__main__":
    main()
