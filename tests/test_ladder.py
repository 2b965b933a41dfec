"""The perplexity ladder: n-gram scoring, FLOP formulas against torch's counter, zoo rungs, the PTB history's
citations, and the WikiText-2 recipe's code path on the valid split with a tiny model."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from lmcourse import ladder, zoo
from lmcourse.models import GPT, MLPLM, GPTConfig
from lmcourse.ngram import NGramLM
from lmcourse.rnn import RNNLM
from lmcourse.tokenizers import WordTokenizer
from lmcourse.train import TrainConfig

BIB = Path(__file__).resolve().parents[1] / "book" / "references.bib"
TEXT = "to be, or not to be: that is the question.\nwhether 'tis nobler in the mind to suffer\n" * 30


def test_history_is_cited_and_falls_over_time():
    keys = set(re.findall(r"^@\w+\{([^,]+),", BIB.read_text(), flags=re.M))
    assert {r.key for r in ladder.PTB_HISTORY} <= keys
    assert [r.test_perplexity for r in ladder.PTB_HISTORY] == sorted((r.test_perplexity for r in ladder.PTB_HISTORY),
                                                                      reverse=True)
    assert [r.year for r in ladder.PTB_HISTORY] == sorted(r.year for r in ladder.PTB_HISTORY)


def test_ngram_rung_scores_every_held_out_character_once():
    train_text, val_text = zoo.split_held_out(TEXT)
    assert train_text + val_text == TEXT and len(val_text) == len(TEXT) - int(0.9 * len(TEXT))
    rung, lm = ladder.ngram_rung(train_text, val_text, order=3, discount=0.8)
    padded = "\0\0" + val_text  # \0 stands for <s>
    nll = -sum(lm.logprob(c, ["<s>" if p == "\0" else p for p in padded[i:i + 2]]) for i, c in enumerate(val_text))
    assert rung.bits_per_char == pytest.approx(nll / len(val_text) / math.log(2), rel=1e-9)
    assert rung.train_flops is None and rung.train_tokens == len(train_text)
    assert rung.params == sum(len(w) for table in lm._tables for _, _, w in table.values())
    for context in (["t", "o"], ["<s>", "<s>"], ["q", "z"]):  # seen, start, unseen
        total = math.fsum(lm.prob(w, context) for w in lm.vocab if w != "<s>")
        assert total == pytest.approx(1.0, abs=1e-9)


def test_split_held_out_rejects_a_bad_fraction():
    with pytest.raises(ValueError, match="fraction"):
        zoo.split_held_out(TEXT, held_out=1.0)


def _models():
    gen = torch.Generator().manual_seed(0)
    x_seq, y_seq = torch.randint(65, (4, 32), generator=gen), torch.randint(65, (4, 32), generator=gen)
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=96))
    return [
        ("mlp", MLPLM(65, 8, n_embd=8, n_hidden=64), torch.randint(65, (16, 8), generator=gen),
         torch.randint(65, (16,), generator=gen), 1e-9),
        ("rnn", RNNLM(65, 48, cell="rnn", fused=True, n_embd=16), x_seq, y_seq, 0.01),
        ("lstm", RNNLM(65, 48, 2, cell="lstm", n_embd=16), x_seq, y_seq, 0.01),
        ("gpt", gpt, x_seq, y_seq, 0.01),  # the attention term included (step_flops counts attention as matmuls)
    ]


@pytest.mark.parametrize("name, model, x, y, tol", _models(), ids=[m[0] for m in _models()])
def test_flop_formula_matches_torch_counter(name, model, x, y, tol):
    counted = ladder.step_flops(model, x, y)
    formula = ladder.train_flops_per_token(model, x.shape[1]) * y.numel()
    assert counted > 0 and abs(counted / formula - 1) <= tol
    assert all(p.grad is None for p in model.parameters())


def test_matmul_weights_skip_lookups_but_count_a_tied_head():
    mlp = MLPLM(65, 8, n_embd=8, n_hidden=64)
    assert ladder.matmul_weights(mlp) == 8 * 8 * 64 + 64 * 65
    cfg = GPTConfig(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=32)
    assert ladder.train_flops_per_token(GPT(cfg), 16) == pytest.approx(
        3 * (2 * (12 * 32 * 32 + 65 * 32) + 4 * 16 * 32))


def test_zoo_rung_reports_the_zoo_s_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("LMCOURSE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(zoo, "load_text", lambda name, split=None: TEXT)
    recipe = zoo.Recipe(description="tiny MLP, for tests", build=zoo.RECIPES["char_mlp"].build,
                        config=dict(context_size=4, n_embd=4, n_hidden=16),
                        train=TrainConfig(max_steps=20, lr=1e-2, eval_interval=10, eval_batches=2),
                        block_size=4, batch_size=32, batches=zoo.context_windows, evaluate=zoo.evaluate_windows)
    monkeypatch.setitem(zoo.RECIPES, "tiny_mlp", recipe)
    rung, pretrained = ladder.zoo_rung("tiny_mlp", device="cpu", progress=False)
    assert rung.name == "tiny MLP" and rung.train_tokens == 20 * 32 == pretrained.history.tokens
    assert rung.bits_per_char == pytest.approx(pretrained.info["val_loss_nats"] / math.log(2))
    assert rung.train_flops == pytest.approx(6 * ladder.matmul_weights(pretrained.model) * 20 * 32)
    assert rung.params == sum(p.numel() for p in pretrained.model.parameters())


def test_ladder_names_are_zoo_recipes():
    assert set(ladder.LADDER) <= set(zoo.names())


@pytest.mark.parametrize("model", ["lstm", "gpt"])
def test_wikitext2_recipe_runs_on_the_valid_split(model):
    cfg = ladder.WikiTextConfig(model=model, width=16, n_layers=1, n_head=2, dropout=0.0, block_size=16,
                                batch_size=4, max_steps=4, train_split="valid", max_eval_tokens=3000)
    result = ladder.wikitext2(cfg, device="cpu", progress=False)
    vocab = result["tokenizer"].vocab_size
    assert set(result["perplexity"]) == {"test"} and result["tokens"] == 4 * 4 * 16
    assert 1 < result["perplexity"]["test"] < 3 * vocab  # an untrained model is near uniform over the vocabulary
    assert len(result["history"].train_loss) == 4 and "<eos>" in result["tokenizer"].stoi


def test_wikitext_ids_count_eos_per_line_and_unk():
    tok = WordTokenizer(["the", "cat", "<eos>"])
    ids = ladder.wikitext_ids(" the cat \n\n the dog\n", tok)
    assert tok.decode(ids.tolist()) == "the cat <eos> <eos> the <unk> <eos>"


def test_wikitext_config_and_cli_reject_bad_input(capsys):
    with pytest.raises(ValueError, match="'lstm' or 'gpt'"):
        ladder.WikiTextConfig(model="rnn")
    with pytest.raises(ValueError, match="max_eval_tokens"):
        ladder.WikiTextConfig(max_eval_tokens=10)
    with pytest.raises(SystemExit):
        ladder.main(["wikitext3"])
    assert "invalid choice" in capsys.readouterr().err


def test_cli_runs_the_recipe(capsys):
    ladder.main(["wikitext2", "--train-split", "valid", "--max-steps", "2", "--width", "8", "--n-layers", "1",
                 "--block-size", "8", "--batch-size", "2", "--max-eval-tokens", "2000", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "test perplexity" in out and "32 training tokens" in out


def test_ngram_rung_needs_held_out_text():
    with pytest.raises(ValueError, match="empty"):
        ladder.ngram_rung(TEXT, "")


def test_ngram_model_is_the_one_chapter_1_builds():
    _, lm = ladder.ngram_rung(TEXT[:500], TEXT[500:600], order=2, discount=0.5)
    assert isinstance(lm, NGramLM) and lm.n == 2 and lm.smoothing == "kneser-ney" and lm.discount == 0.5
