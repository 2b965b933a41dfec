"""lmcourse.tokenizers.WordPieceTokenizer: greedy longest-match-first against Hugging Face tokenizers."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers

from lmcourse import data
from lmcourse.tokenizers import WordPieceTokenizer


@pytest.fixture(scope="module")
def trained():
    return WordPieceTokenizer().train(data.load_text("tinyshakespeare")[:100_000], 400)


def hf_wordpiece(tok: WordPieceTokenizer) -> Tokenizer:
    """The reference: HF's WordPiece model with the same vocabulary and HF's Whitespace pre-tokenizer."""
    hf = Tokenizer(models.WordPiece(vocab=tok.stoi, unk_token=tok.unk_token,
                                    max_input_chars_per_word=tok.max_input_chars_per_word))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    return hf


def test_continuation_pieces_and_unk():
    tok = WordPieceTokenizer(["[UNK]", "un", "##aff", "##able", "a", "##a"])
    assert [tok.itos[i] for i in tok.encode("unaffable unx aa")] == ["un", "##aff", "##able", "[UNK]", "a", "##a"]
    assert tok.decode(tok.encode("unaffable aa")) == "unaffable aa"


def test_training_merges_by_score_and_keeps_the_alphabet(trained):
    assert trained.vocab_size == 400 and trained.itos[0] == "[UNK]"
    text = data.load_text("tinyshakespeare")[:100_000]
    words = set(text.split())
    assert {w[0] for w in words} <= set(trained.itos)
    assert all(0 not in trained.encode(w) for w in list(words)[:500])
    assert any(p.startswith("##") and len(p) > 3 for p in trained.itos)


def test_encoding_equals_hugging_face_on_shakespeare(trained):
    text = data.load_text("tinyshakespeare")[:300_000]
    assert trained.encode(text) == hf_wordpiece(trained).encode(text).ids


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzAEIOU .,;!?'\n"), max_size=80))
def test_encoding_equals_hugging_face_on_any_ascii_text(trained, text):
    assert trained.encode(text) == hf_wordpiece(trained).encode(text).ids


def test_long_word_is_unk():
    tok = WordPieceTokenizer(["[UNK]", "a", "##a"], max_input_chars_per_word=5)
    assert tok.encode("aaaaa aaaaaa") == [1, 2, 2, 2, 2, 0]


def test_save_load_and_bad_input(tmp_path, trained):
    trained.save(tmp_path / "wp.json")
    back = WordPieceTokenizer.load(tmp_path / "wp.json")
    assert back.itos == trained.itos and back.encode("Good morrow") == trained.encode("Good morrow")
    with pytest.raises(ValueError, match="without words"):
        WordPieceTokenizer().train("   ", 100)
    with pytest.raises(ValueError, match=r"vocab_size must be an integer >= 5 \(\[UNK\] and the 4 characters"):
        WordPieceTokenizer().train("ab ba", 3)
    with pytest.raises(ValueError, match="call train"):
        WordPieceTokenizer().encode("a")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        trained.decode([10_000])
    (tmp_path / "bpe.json").write_text('{"type": "bpe"}')
    with pytest.raises(ValueError, match="does not hold a wordpiece tokenizer"):
        WordPieceTokenizer.load(tmp_path / "bpe.json")
