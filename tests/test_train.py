"""lmcourse.train: schedule, batching, the loop, checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmcourse.train import (
    TrainConfig,
    evaluate,
    load_checkpoint,
    lr_at,
    mean_loss,
    sample_windows,
    save_checkpoint,
    train,
)


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
    with pytest.raises(ValueError, match=r"1-D with shape \(N,\)"):
        sample_windows(ids.view(10, 10), 3, 1)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_steps": 0}, "max_steps must be a positive integer"),
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


def tiny_gpt(seed: int = 0, dropout: float = 0.1):
    from lmcourse.models import GPT
    from lmcourse.models.gpt import GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=dropout))


@pytest.mark.parametrize("kwargs, message", [
    ({"max_steps": 5, "grad_accum_steps": 0}, "grad_accum_steps must be a positive integer"),
    ({"max_steps": 5, "amp": "fp8"}, "amp must be None, 'bf16' or 'fp16'"),
    ({"max_steps": 5, "checkpoint_interval": 0}, "checkpoint_interval must be a positive integer"),
])
def test_bad_new_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_resume_from_checkpoint_reproduces_the_uninterrupted_run_exactly(tmp_path):
    ids = torch.randint(0, 11, (300,), generator=torch.Generator().manual_seed(0))

    def batches(generator):  # takes the loop's generator: the batch stream is saved in the checkpoint
        return sample_windows(ids, 8, 4, generator)

    cfg = TrainConfig(max_steps=8, lr=1e-2, warmup_steps=2, eval_interval=3, eval_batches=2, checkpoint_interval=4)
    straight_model = tiny_gpt()
    straight = train(straight_model, batches, cfg, val_batches=batches, progress=False)

    calls = []

    def crashing(generator):  # the machine "dies" while fetching the batch of step 5
        calls.append(1)
        if len(calls) > 4:
            raise RuntimeError("power cut")
        return batches(generator)

    path = tmp_path / "run.pt"
    with pytest.raises(RuntimeError, match="power cut"):
        train(tiny_gpt(), crashing, cfg, val_batches=batches, checkpoint=path, progress=False)
    state = torch.load(path, weights_only=False)
    assert state["step"] == 4 and state["model_config"]["n_embd"] == 16 and len(state["history"]["train_loss"]) == 4
    resumed_model = tiny_gpt(seed=123)  # other initial weights: everything must come from the checkpoint
    resumed = train(resumed_model, batches, cfg, val_batches=batches, checkpoint=path, progress=False, resume=path)
    assert resumed.train_loss == straight.train_loss  # exact, dropout included
    assert resumed.val_step == straight.val_step and resumed.val_loss == straight.val_loss
    for a, b in zip(resumed_model.parameters(), straight_model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.load(path, weights_only=False)["step"] == 8
    save_checkpoint(tmp_path / "plain.pt", resumed_model, step=3)
    with pytest.raises(ValueError, match="only checkpoints written by train"):
        train(tiny_gpt(), batches, cfg, progress=False, resume=tmp_path / "plain.pt")


def test_gradient_accumulation_equals_one_big_batch():
    x = torch.randint(0, 11, (8, 8), generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 11, (8, 8), generator=torch.Generator().manual_seed(2))
    halves = iter([(x[:4], y[:4]), (x[4:], y[4:])] * 3)
    big, small = tiny_gpt(dropout=0.0).double(), tiny_gpt(dropout=0.0).double()  # float64: Adam amplifies rounding
    h_big = train(big, lambda: (x, y), TrainConfig(max_steps=3, lr=1e-2), progress=False)
    h_small = train(small, lambda: next(halves), TrainConfig(max_steps=3, lr=1e-2, grad_accum_steps=2), progress=False)
    assert h_small.train_loss == pytest.approx(h_big.train_loss, rel=1e-12)
    assert h_small.tokens == h_big.tokens == 3 * 64
    for a, b in zip(big.parameters(), small.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-10)


class DtypeSpy(torch.nn.Module):
    """A bigram model that records the dtype its linear layer computes in."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.lin, self.seen = torch.nn.Embedding(5, 8), torch.nn.Linear(8, 5), set()

    def forward(self, x, targets):
        logits = self.lin(self.emb(x))
        self.seen.add(logits.dtype)
        return logits, F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


@pytest.mark.parametrize("amp, dtype", [(None, torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_runs_under_autocast_and_learns(amp, dtype):
    ids = torch.tensor([0, 1, 2, 3, 4] * 40)
    torch.manual_seed(0)
    model = DtypeSpy()
    hist = train(model, lambda g: sample_windows(ids, 6, 8, g), TrainConfig(max_steps=40, lr=3e-2, amp=amp),
                 progress=False)
    assert model.seen == {dtype}
    assert hist.train_loss[-1] < 0.5 * hist.train_loss[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay float32


def test_throughput_and_mfu_are_logged():
    ids = torch.tensor([0, 1, 2, 3] * 50)
    cfg = TrainConfig(max_steps=4, flops_per_token=1e6, peak_flops=1e12)
    hist = train(Bigram(4), data_fn(ids), cfg, progress=False)
    assert len(hist.tokens_per_s) == len(hist.mfu) == 4 and min(hist.tokens_per_s) > 0
    assert hist.mfu == pytest.approx([t * 1e6 / 1e12 for t in hist.tokens_per_s])
    assert train(Bigram(4), data_fn(ids), TrainConfig(max_steps=2), progress=False).mfu == []  # no peak on a CPU


def test_compile_flag_trains_the_compiled_model_with_the_same_losses(monkeypatch):
    compiled, real_compile = [], torch.compile

    def eager_compile(model):  # dynamo traces the model; the "eager" backend skips inductor's slow C++ build
        compiled.append(model)
        return real_compile(model, backend="eager")

    ids = torch.randint(0, 11, (300,), generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(torch, "compile", eager_compile)
    runs = []
    for flag in (False, True):
        model = tiny_gpt(dropout=0.0)
        runs.append(train(model, lambda g: sample_windows(ids, 8, 4, g), TrainConfig(max_steps=3, compile=flag),
                          progress=False).train_loss)
    assert len(compiled) == 1 and runs[1] == pytest.approx(runs[0], abs=1e-6)


def test_which_batch_callables_get_the_loops_generator():
    from functools import partial

    from lmcourse.train import _takes_generator

    ids = torch.arange(50)
    assert _takes_generator(lambda g: None) and _takes_generator(partial(sample_windows, ids, 4, 2))
    assert not _takes_generator(lambda: None)
    assert not _takes_generator(partial(sample_windows, ids, 4, 2, generator=torch.Generator()))  # already bound
    hist = train(Bigram(50), partial(sample_windows, ids, 4, 2, generator=torch.Generator()), TrainConfig(max_steps=2),
                 progress=False)
    assert len(hist.train_loss) == 2


@pytest.mark.parametrize("args, message", [
    ((list(range(100)), 8, 4), "ids must be a tensor of integer token ids, got list"),
    ((torch.rand(100), 8, 4), "ids must be a tensor of integer token ids, got torch.float32"),
    ((torch.arange(100), 0, 4), "block_size must be a positive integer, got 0"),
    ((torch.arange(100), 2.5, 4), "block_size must be a positive integer, got 2.5"),
    ((torch.arange(100), 8, 0), "batch_size must be a positive integer, got 0"),
])
def test_sample_windows_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        sample_windows(*args)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_steps": 2.5}, "max_steps must be a positive integer, got 2.5"),
    ({"max_steps": 5, "lr": float("nan")}, "need lr > 0"),
    ({"max_steps": 5, "lr": float("inf")}, "need lr > 0"),
    ({"max_steps": 5, "eval_batches": 0}, "eval_batches must be a positive integer, got 0"),
])
def test_config_values_that_would_fail_late_are_rejected_early(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_a_model_or_batch_function_that_breaks_the_convention_is_explained():
    ids = torch.arange(200) % 5
    cfg = TrainConfig(max_steps=1)
    with pytest.raises(ValueError, match=r"must return \(logits, loss\).*got a tensor of shape \(16, 8, 5\)"):
        train(_LogitsOnly(5), data_fn(ids), cfg, progress=False)
    with pytest.raises(ValueError, match=r"must return a pair \(x, y\) of tensors, got a tensor of shape \(200,\)"):
        train(Bigram(5), lambda: ids, cfg, progress=False)
    with pytest.raises(ValueError, match="n_batches must be a positive integer, got 0"):
        evaluate(Bigram(5), data_fn(ids), 0)


class _LogitsOnly(Bigram):
    """A model that forgets to return the loss."""

    def forward(self, x, targets=None):
        return super().forward(x)[0]


def test_loading_a_folder_or_a_foreign_pickle_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .* \(it is a folder\)"):
        load_checkpoint(tmp_path, Bigram(5))
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="list.pt is not a checkpoint of this model"):
        load_checkpoint(tmp_path / "list.pt", Bigram(5))


def test_mean_loss_weights_batches_by_their_targets_and_carries_a_cache():
    """mean_loss is the token-weighted mean of model(x, y)'s losses: batches of different sizes, targets of -1
    left out, and with a recurrent model's cache each batch continues where the last one ended."""
    from lmcourse.models import GPT, GPTConfig
    from lmcourse.rnn import RNNLM

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(11, (5, 8), generator=g), torch.randint(11, (5, 8), generator=g)
    y[4, :5] = -1  # left out of the loss
    whole = F.cross_entropy(model(x)[0].flatten(0, 1), y.flatten(), ignore_index=-1).item()
    batches = [(x[:1], y[:1]), (x[1:4], y[1:4]), (x[4:], y[4:])]
    assert mean_loss(model, batches) == pytest.approx(whole, rel=1e-6)
    rnn = RNNLM(11, 6, cell="lstm", n_embd=4)
    x, y = torch.randint(11, (2, 12), generator=g), torch.randint(11, (2, 12), generator=g)
    halves = [(x[:, :5], y[:, :5]), (x[:, 5:], y[:, 5:])]
    assert mean_loss(rnn, halves, cache=rnn.new_cache(2)) == pytest.approx(mean_loss(rnn, [(x, y)]), rel=1e-6)
    assert mean_loss(rnn, halves) != pytest.approx(mean_loss(rnn, [(x, y)]), rel=1e-6)  # without: a fresh state
    with pytest.raises(ValueError, match="no targets to score"):
        mean_loss(model, [])


def test_an_optimizer_of_our_own_follows_the_schedule_per_group_and_resumes_exactly(tmp_path):
    """train(optimizer=...) scales each group's own rate by the schedule (chapter 7's Muon: two rates), and a run
    resumed from its checkpoint gives the uninterrupted run's losses."""
    from lmcourse.optim import muon_with_adamw

    ids = torch.randint(0, 11, (300,), generator=torch.Generator().manual_seed(0))

    def batches(generator):
        return sample_windows(ids, 8, 4, generator)

    cfg = TrainConfig(max_steps=6, lr=1e-2, min_lr=0.0, warmup_steps=2, checkpoint_interval=3)
    assert lr_at(4, cfg, peak=0.05) == pytest.approx(5 * lr_at(4, cfg))
    model = tiny_gpt(dropout=0.0)
    optimizer = muon_with_adamw(model, muon_lr=0.05, lr=1e-2)
    straight = train(model, batches, cfg, progress=False, optimizer=optimizer)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([lr_at(5, cfg, 0.05), lr_at(5, cfg)])
    path = tmp_path / "run.pt"
    calls = []

    def crashing(generator):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("power cut")
        return batches(generator)

    with pytest.raises(RuntimeError, match="power cut"):
        model = tiny_gpt(dropout=0.0)
        train(model, crashing, cfg, checkpoint=path, progress=False, optimizer=muon_with_adamw(model, 0.05, 1e-2))
    resumed_model = tiny_gpt(seed=1, dropout=0.0)
    resumed = train(resumed_model, batches, cfg, progress=False, resume=path,
                    optimizer=muon_with_adamw(resumed_model, 0.05, 1e-2))
    assert resumed.train_loss == straight.train_loss
