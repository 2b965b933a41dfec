"""lmcourse.tokenizers.UnigramTokenizer: Viterbi against brute force, EM increases the likelihood."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcourse import data
from lmcourse.tokenizers import UnigramTokenizer
from lmcourse.tokenizers.unigram import em_step, viterbi


@pytest.fixture(scope="module")
def trained():
    return UnigramTokenizer().train(data.load_text("tinyshakespeare")[:30_000], 300)


def segmentations(word: str, vocab: set[str]):
    """Every way to cut ``word`` into pieces of ``vocab`` (brute force)."""
    if not word:
        yield []
    for j in range(1, len(word) + 1):
        if word[:j] in vocab:
            for rest in segmentations(word[j:], vocab):
                yield [word[:j], *rest]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abc", min_size=1, max_size=8),
       st.dictionaries(st.text(alphabet="abc", min_size=2, max_size=4), st.floats(-9, -0.1), max_size=12),
       st.lists(st.floats(-9, -0.1), min_size=3, max_size=3))
def test_viterbi_equals_brute_force(word, multi, single):
    logp = {**dict(zip("abc", single, strict=True)), **multi}
    pieces, score = viterbi(word, logp, max_len=4)
    best = max(sum(logp[x] for x in s) for s in segmentations(word, set(logp)))
    assert math.isclose(score, best, abs_tol=1e-9)
    assert "".join(pieces) == word and math.isclose(sum(logp[x] for x in pieces), score, abs_tol=1e-9)


def test_em_step_increases_the_likelihood_and_matches_brute_force():
    words = {"abab": 3, "ab": 5, "bab": 2, "aab": 1}
    logp = {x: math.log(1 / 5) for x in ("a", "b", "ab", "ba", "aba")}
    brute = sum(c * math.log(sum(math.exp(sum(logp[x] for x in s)) for s in segmentations(w, set(logp))))
                for w, c in words.items())
    history = []
    for _ in range(6):
        logp, loglik = em_step(words, logp, max_len=4)
        history.append(loglik)
    assert math.isclose(history[0], brute, rel_tol=1e-12)
    assert all(b > a for a, b in zip(history, history[1:], strict=False))
    assert math.isclose(sum(map(math.exp, logp.values())), 1.0)


def test_training_keeps_characters_and_increases_likelihood_within_each_round(trained):
    text = data.load_text("tinyshakespeare")[:30_000]
    assert trained.vocab_size == 300 and set(text) <= set(trained.pieces)
    assert trained.history[1] > trained.history[0]
    assert trained.decode(trained.encode(text)) == text
    assert len(trained.encode(text)) < len(text) / 2


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz ABC,.\n"), max_size=60))
def test_round_trip_for_seen_characters(trained, text):
    assert trained.decode(trained.encode(text)) == text


def test_unseen_character_is_unk(trained):
    assert trained.encode("€") == [0] and trained.pieces[0] == "<unk>"


def test_save_load_and_bad_input(tmp_path, trained):
    trained.save(tmp_path / "u.json")
    back = UnigramTokenizer.load(tmp_path / "u.json")
    assert back.pieces == trained.pieces and back.encode("To be or not") == trained.encode("To be or not")
    with pytest.raises(ValueError, match="empty text"):
        UnigramTokenizer().train("", 100)
    with pytest.raises(ValueError, match=r"vocab_size must be an integer >= 4 \(<unk> and the 3 characters"):
        UnigramTokenizer().train("abc", 3)
    with pytest.raises(ValueError, match="call train"):
        UnigramTokenizer().encode("a")
    with pytest.raises(ValueError, match="cannot be segmented"):
        em_step({"xyz": 1}, {"x": -1.0}, 4)
    (tmp_path / "c.json").write_text('{"type": "unigram", "logp": {"a": "x"}, "max_len": 4}')
    with pytest.raises(ValueError, match="corrupt unigram"):
        UnigramTokenizer.load(tmp_path / "c.json")


@pytest.mark.parametrize("kwargs, message", [
    ({"shrink": 1.0}, r"shrink must be in \(0, 1\)"),  # 1 would never shrink the vocabulary
    ({"shrink": 0.0}, r"shrink must be in \(0, 1\)"),
    ({"seed_factor": 0}, "seed_factor must be a positive integer, got 0"),
    ({"em_steps": 0}, "em_steps must be a positive integer, got 0"),
])
def test_training_settings_outside_their_range_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UnigramTokenizer().train("the cat sat on the mat", 20, **kwargs)
