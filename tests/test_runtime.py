"""lmcourse.runtime: device choice, threads, seeding."""

import random

import numpy as np
import pytest
import torch

from lmcourse.runtime import environment_report, get_device, seed_everything, set_threads, synchronize, time_calls


def test_get_device_picks_the_best_available():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert get_device().type == expected
    assert get_device("cpu") == torch.device("cpu")


def test_get_device_rejects_unknown_or_missing_devices(monkeypatch):
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        get_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="'cuda' was requested but is not available"):
        get_device("cuda")
    monkeypatch.setenv("LMCOURSE_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")


def test_seed_everything_makes_every_generator_repeat():
    def draw():
        g = seed_everything(123)
        return random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item()

    assert draw() == draw()


def test_set_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("LMCOURSE_THREADS", "1")
        assert set_threads() == 1
        monkeypatch.delenv("LMCOURSE_THREADS")
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_threads() >= 1
        with pytest.raises(ValueError, match="must be a positive integer"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_environment_report_names_versions_and_device():
    report = environment_report()
    assert report["torch"] == torch.__version__ and report["device"] == str(get_device())


def test_time_calls_times_each_call_after_the_warmup_and_returns_the_last_result():
    calls = []
    ticks = iter(range(0, 100, 5))  # a fake clock: every reading 5 s after the previous one
    seconds, out = time_calls(lambda x: calls.append(x) or len(calls), 7, repeats=3, warmup=2,
                              clock=lambda: next(ticks))
    assert calls == [7] * 5 and out == 5  # 2 warm-up calls, then 3 timed ones; the last one's result
    assert seconds == 5
    seconds, _ = time_calls(lambda: None, repeats=4, reduce=sum, clock=lambda: next(ticks))
    assert seconds == 20
    with pytest.raises(ValueError, match="repeats must be a positive integer"):
        time_calls(lambda: None, repeats=0)
    synchronize("cpu")  # nothing to wait for
