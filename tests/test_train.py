"""lmcourse.train: schedule, batching, the loop, checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmcourse.train import TrainConfig, evaluate, load_checkpoint, lr_at, sample_windows, save_checkpoint, train


class Bigram(torch.nn.Module):
    """The smallest LM: a table of next-token logits per token, plus a bias and an unused matrix."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(vocab_size, vocab_size)
        self.bias = torch.nn.Parameter(torch.zeros(vocab_size))
        self.unused = torch.nn.Parameter(torch.ones(3, 3))

    def forward(self, x, targets=None):
        logits = self.table(x) + self.bias + 0 * self.unused.sum()
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def data_fn(ids, seed=0):
    g = torch.Generator().manual_seed(seed)
    return lambda: sample_windows(ids, block_size=8, batch_size=16, generator=g)


def test_warmup_then_cosine_matches_torch_schedulers():
    cfg = TrainConfig(max_steps=50, lr=1.0, min_lr=0.1, warmup_steps=10)
    assert [lr_at(s, cfg) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40, eta_min=0.1)
    for step in range(10, 50):
        assert lr_at(step, cfg) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        cosine.step()
    assert lr_at(49, cfg) > 0.1 and lr_at(10_000, cfg) == pytest.approx(0.1)


def test_sample_windows_gives_targets_shifted_by_one():
    ids = torch.arange(100)
    x, y = sample_windows(ids, block_size=7, batch_size=5, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 7)
    assert torch.equal(y, x + 1) and torch.equal(x[:, 1:], x[:, :-1] + 1)
    with pytest.raises(ValueError, match="needs block_size \\+ 1 = 101 tokens, the data has only 100"):
        sample_windows(ids, 100, 1)
    with pytest.raises(ValueError, match="1-D tensor"):
        sample_windows(ids.view(10, 10), 3, 1)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_steps": 0}, "max_steps must be at least 1"),
    ({"max_steps": 5, "lr": -1.0}, "need lr > 0"),
    ({"max_steps": 5, "warmup_steps": 6}, "warmup_steps must be in"),
    ({"max_steps": 5, "grad_clip": 0.0}, "grad_clip must be positive"),
])
def test_bad_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_training_learns_the_bigram_statistics_and_is_deterministic():
    ids = torch.tensor([0, 1, 2, 3] * 50)  # every token has one successor: the loss can go to ~0
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = Bigram(4)
        hist = train(model, data_fn(ids), TrainConfig(max_steps=150, lr=0.1, eval_interval=50),
                     val_batches=data_fn(ids, 1), progress=False)
        runs.append(hist)
    assert runs[0].train_loss == runs[1].train_loss
    assert runs[0].train_loss[0] > 1.0 and runs[0].val_loss[-1] < 0.05
    assert runs[0].val_step == [50, 100, 150] and runs[0].tokens == 150 * 16 * 8
    assert evaluate(model, data_fn(ids, 2), 3) < 0.05 and model.training


def test_weight_decay_skips_biases_and_clipping_bounds_the_step():
    torch.manual_seed(0)
    model = Bigram(4)
    ids = torch.tensor([0, 1, 2, 3] * 50)
    train(model, data_fn(ids), TrainConfig(max_steps=20, lr=0.01, weight_decay=1.0, grad_clip=1e-3), progress=False)
    assert model.unused.detach().lt(1.0).all()  # decayed although its gradient is 0
    assert model.bias.abs().max() <= 20 * 0.01 * 1.01  # Adam steps are at most ~lr each


def test_checkpoint_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    model, other = Bigram(4), Bigram(4)
    save_checkpoint(tmp_path / "m.pt", model, step=7)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    state = load_checkpoint(tmp_path / "m.pt", other)
    assert state["step"] == 7 and torch.equal(other.table.weight, model.table.weight)
    with pytest.raises(ValueError, match="not a checkpoint of this model"):
        load_checkpoint(tmp_path / "m.pt", Bigram(5))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt is not a checkpoint"):
        load_checkpoint(tmp_path / "bad.pt", other)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt", other)
