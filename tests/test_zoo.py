"""The model zoo: train once, save, load identical weights; one training for concurrent callers; bad files."""

from __future__ import annotations

import dataclasses
import math
import multiprocessing

import pytest
import torch
import torch.nn.functional as F

from lmcourse import zoo
from lmcourse.train import TrainConfig

TEXT = "to be, or not to be: that is the question.\n" * 40


class Bigram(torch.nn.Module):
    """A test-only model: logits of w_{t+1} from w_t alone (a |V| x |V| table)."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(vocab_size, vocab_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self.table(idx)  # (B, T, V)
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())


TINY = zoo.Recipe(description="test-only bigram", build=lambda config: Bigram(config["vocab_size"]), config={},
                  train=TrainConfig(max_steps=30, lr=0.1, eval_interval=10, eval_batches=2),
                  block_size=8, batch_size=4)


def install_tiny(runs) -> None:
    """Register the tiny recipe as 'tiny' on a fixed text, and log every training run to the file ``runs``."""
    zoo.load_text = lambda name, split=None: TEXT
    zoo.RECIPES["tiny"] = TINY
    real_train = zoo._train

    def logged_train(*args, **kwargs):
        with open(runs, "a") as f:  # a file, so that runs in child processes are counted too
            f.write("trained\n")
        return real_train(*args, **kwargs)

    zoo._train = logged_train


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """The tiny recipe in a fresh cache; returns the path of the training log."""
    monkeypatch.setenv("LMCOURSE_CACHE_DIR", str(tmp_path / "cache"))
    for attr in ("load_text", "_train"):
        monkeypatch.setattr(zoo, attr, getattr(zoo, attr))  # restored after the test
    monkeypatch.setitem(zoo.RECIPES, "tiny", TINY)
    install_tiny(tmp_path / "runs.log")
    return tmp_path / "runs.log"


def n_runs(runs) -> int:
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def test_first_call_trains_and_saves_second_loads_identical_weights(tiny):
    first = zoo.get("tiny", device="cpu", progress=False)
    assert n_runs(tiny) == 1 and zoo.checkpoint_path("tiny").exists()
    assert not first.model.training
    assert first.info["recipe"] == "tiny" and first.info["params"] == first.tokenizer.vocab_size ** 2
    assert len(first.history.train_loss) == 30 and first.history.val_step == [10, 20, 30]
    assert first.history.train_loss[-1] < first.history.train_loss[0]
    second = zoo.get("tiny", device="cpu", progress=False)
    assert n_runs(tiny) == 1, "the second call must load, not train"
    assert torch.equal(first.model.table.weight, second.model.table.weight)
    assert second.tokenizer.itos == first.tokenizer.itos and second.info == first.info
    assert second.history == first.history


def test_training_is_deterministic(tiny):
    first = zoo.get("tiny", device="cpu", progress=False)
    zoo.checkpoint_path("tiny").unlink()
    again = zoo.get("tiny", device="cpu", progress=False)
    assert n_runs(tiny) == 2 and torch.equal(first.model.table.weight, again.model.table.weight)


def _get_in_child(runs, barrier, queue) -> None:
    install_tiny(runs)  # a spawned child starts from a fresh interpreter
    barrier.wait()  # both processes ask at (nearly) the same moment
    queue.put(zoo.get("tiny", device="cpu", progress=False).model.table.weight.sum().item())


def test_two_processes_at_once_train_once(tiny):
    ctx = multiprocessing.get_context("spawn")  # not fork: a forked child can hang in torch's thread pool
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_get_in_child, args=(tiny, barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert n_runs(tiny) == 1, "the second process must wait for the first and load its checkpoint"
    assert results[0] == results[1]


def test_corrupt_checkpoint_is_retrained_with_a_warning(tiny):
    zoo.get("tiny", device="cpu", progress=False)
    path = zoo.checkpoint_path("tiny")
    path.write_bytes(path.read_bytes()[:100])  # a truncated file, as after a crash or a full disk
    with pytest.warns(UserWarning, match="cannot read the checkpoint"):
        again = zoo.get("tiny", device="cpu", progress=False)
    assert n_runs(tiny) == 2 and again.info["recipe"] == "tiny"
    zoo.get("tiny", device="cpu", progress=False)  # the rewritten checkpoint loads
    assert n_runs(tiny) == 2


def test_checkpoint_of_another_recipe_version_is_retrained(tiny, monkeypatch):
    zoo.get("tiny", device="cpu", progress=False)
    changed = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, max_steps=20))
    monkeypatch.setitem(zoo.RECIPES, "tiny", changed)
    with pytest.warns(UserWarning, match="another version"):
        again = zoo.get("tiny", device="cpu", progress=False)
    assert n_runs(tiny) == 2 and len(again.history.train_loss) == 20


def test_unknown_name_lists_the_known_ones(tiny):
    with pytest.raises(ValueError, match="unknown model 'char_gtp'.*char_gpt.*tiny"):
        zoo.get("char_gtp")
    with pytest.raises(ValueError, match="identifier"):
        zoo.register("char gpt", TINY)


def test_evaluate_text_scores_every_window_once():
    model = Bigram(5)
    ids = torch.randint(5, (41,), generator=torch.Generator().manual_seed(0))
    logits = model.table(ids[:40])  # 40 tokens = 5 windows of 8, targets ids[1:41]
    expected = F.cross_entropy(logits, ids[1:41]).item()
    assert zoo.evaluate_text(model, ids, block_size=8, batch_size=2) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="more than block_size"):
        zoo.evaluate_text(model, ids[:8], block_size=8)


def test_char_gpt_recipe_builds_the_chapter_7_gpt():
    recipe = zoo.RECIPES["char_gpt"]
    model = recipe.build({**recipe.config, "vocab_size": 65})
    assert model.block_size == recipe.block_size
    x, y = torch.randint(65, (2, 2, recipe.block_size), generator=torch.Generator().manual_seed(0))
    logits, loss = model(x, y)
    assert logits.shape == (2, recipe.block_size, 65) and loss.item() == pytest.approx(math.log(65), rel=0.05)


def test_fingerprints_hold_the_optional_fields_only_when_a_recipe_sets_them():
    """A recipe's batches and optimiser are in its fingerprint only when they are not the defaults."""
    base = {"config", "train", "block_size", "batch_size", "corpus", "held_out"}
    assert set(zoo.RECIPES["char_lstm"].fingerprint()) == base
    assert zoo.RECIPES["char_mlp"].fingerprint()["batches"] == "lmcourse.zoo.context_windows"
    assert set(zoo.RECIPES["char_gpt"].fingerprint()) == base | {"muon_lr"}
    assert zoo.RECIPES["char_gpt"].fingerprint()["muon_lr"] == zoo.RECIPES["char_gpt"].muon_lr


@pytest.mark.parametrize("name", ["char_mlp", "char_rnn", "char_lstm"])
def test_ladder_recipes_build_models_that_train_on_their_batches(name):
    recipe = zoo.RECIPES[name]
    model = recipe.build({**recipe.config, "vocab_size": 65})
    ids = torch.randint(65, (500,), generator=torch.Generator().manual_seed(0))
    x, y = recipe.batches(ids, recipe.block_size, 3, torch.Generator().manual_seed(0))
    logits, loss = model(x, y)
    assert logits.shape == (*y.shape, 65) and loss.item() == pytest.approx(math.log(65), rel=0.05)
    nats = recipe.evaluate(model, ids, recipe.block_size, device="cpu")
    assert nats == pytest.approx(math.log(65), rel=0.05)


def test_context_windows_pair_each_context_with_the_next_token():
    ids = torch.arange(100)
    x, y = zoo.context_windows(ids, 5, 7, torch.Generator().manual_seed(0))
    assert x.shape == (7, 5) and torch.equal(y, x[:, -1] + 1) and torch.equal(x[:, 1:] - x[:, :-1], torch.ones(7, 4))


def test_evaluate_windows_and_recurrent_score_the_whole_text():
    from lmcourse.models import MLPLM
    from lmcourse.rnn import RNNLM, evaluate_stream

    ids = torch.randint(20, (301,), generator=torch.Generator().manual_seed(0))
    mlp = MLPLM(20, 3, n_embd=4, n_hidden=8)
    x = ids.unfold(0, 3, 1)[:-1]  # every full window, predicting ids[3:]
    expected = F.cross_entropy(mlp(x)[0], ids[3:]).item()
    assert zoo.evaluate_windows(mlp, ids, 3, batch_size=50) == pytest.approx(expected, rel=1e-6)
    rnn = RNNLM(20, 8, cell="rnn", fused=True)
    assert zoo.evaluate_recurrent(rnn, ids, 64) == evaluate_stream(rnn, ids, batch_size=32, block_size=256)


def test_a_recipe_with_its_own_batches_and_evaluation_trains_through_get(tiny, monkeypatch):
    from lmcourse.models import MLPLM

    mlp = zoo.Recipe(description="test-only MLP", build=lambda config: MLPLM(**config),
                     config=dict(context_size=3, n_embd=4, n_hidden=16),
                     train=TrainConfig(max_steps=30, lr=1e-2, eval_interval=10, eval_batches=2),
                     block_size=3, batch_size=16, batches=zoo.context_windows, evaluate=zoo.evaluate_windows)
    monkeypatch.setitem(zoo.RECIPES, "tiny_mlp", mlp)
    first = zoo.get("tiny_mlp", device="cpu", progress=False)
    assert first.history.tokens == 30 * 16 and first.history.train_loss[-1] < first.history.train_loss[0]
    ids = torch.tensor(first.tokenizer.encode(TEXT))
    val_ids = ids[int(0.9 * len(ids)):]
    assert first.info["val_loss_nats"] == pytest.approx(zoo.evaluate_windows(first.model, val_ids, 3), rel=1e-6)
    again = zoo.get("tiny_mlp", device="cpu", progress=False)
    assert torch.equal(first.model.out.weight, again.model.out.weight) and again.info == first.info


@pytest.mark.parametrize("ids, kwargs, message", [
    (torch.arange(40) % 5, {"block_size": 0}, "block_size must be a positive integer, got 0"),
    (torch.arange(40) % 5, {"block_size": 8, "batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ((torch.arange(40) % 5).view(4, 10), {"block_size": 8}, r"ids must be 1-D with shape \(N,\)"),
    (list(range(5)) * 8, {"block_size": 8}, "ids must be a tensor of integer token ids, got list"),
])
def test_evaluate_text_rejects_bad_input(ids, kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.evaluate_text(Bigram(5), ids, **kwargs)
