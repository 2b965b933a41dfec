"""lmcourse.tokenizers.CharTokenizer."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmcourse.tokenizers import CharTokenizer


def test_ids_follow_sorted_characters():
    tok = CharTokenizer().train("hello")
    assert tok.itos == ["e", "h", "l", "o"] and tok.vocab_size == 4
    assert tok.encode("hello") == [1, 0, 2, 2, 3]
    assert tok.decode([1, 0, 2, 2, 3]) == "hello"


@given(st.text(min_size=1))
def test_decode_inverts_encode_for_any_text(text):
    tok = CharTokenizer().train(text)
    assert tok.decode(tok.encode(text)) == text
    assert sorted(set(tok.encode(text))) == list(range(tok.vocab_size))


def test_save_and_load_round_trip(tmp_path):
    tok = CharTokenizer().train("naïve 🙂 text\n")
    tok.save(tmp_path / "tok.json")
    assert CharTokenizer.load(tmp_path / "tok.json").itos == tok.itos
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]


def test_bad_input_is_explained(tmp_path):
    with pytest.raises(ValueError, match="empty text"):
        CharTokenizer().train("")
    with pytest.raises(ValueError, match="call train"):
        CharTokenizer().encode("a")
    tok = CharTokenizer().train("abc")
    with pytest.raises(ValueError, match="character 'z' is not in the vocabulary of 3 characters"):
        tok.encode("abz")
    with pytest.raises(ValueError, match=r"id 3 is outside the vocabulary \(0..2\)"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match="has 3 distinct characters, not vocab_size=5"):
        CharTokenizer().train("abc", vocab_size=5)
    (tmp_path / "x.json").write_text('{"type": "bpe"}')
    with pytest.raises(ValueError, match="does not hold a char tokenizer"):
        CharTokenizer.load(tmp_path / "x.json")


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"type": "char"}', "corrupt char tokenizer file: it lacks itos"),
    ('{"type": "char", "itos": ["a", "bc"]}', "itos must be a list of single characters"),
    ("[1, 2]", "does not hold a char tokenizer"),
])
def test_a_corrupt_saved_vocabulary_is_explained(tmp_path, content, message):
    path = tmp_path / "char.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        CharTokenizer.load(path)
