"""lmcourse.tokenizers.WordTokenizer."""

import pytest
from nltk.tokenize import RegexpTokenizer

from lmcourse import data
from lmcourse.tokenizers import WordTokenizer
from lmcourse.tokenizers.word import WORD_PATTERN


def test_vocabulary_is_the_most_frequent_words_and_the_rest_is_unk():
    tok = WordTokenizer().train("b a b c a b d", vocab_size=3)
    assert tok.itos == ["<unk>", "b", "a"]
    assert tok.encode("a b c e") == [2, 1, 0, 0]
    assert tok.decode([2, 1, 0]) == "a b <unk>"
    assert tok.oov_rate("a b c e") == 0.5


def test_no_sharing_between_related_words():
    tok = WordTokenizer().train("transformer transformers transformer")
    assert tok.encode("transformer transformers") == [1, 2]
    assert WordTokenizer().train("transformer").encode("transformers") == [0]


def test_words_equal_nltk_regexp_tokenizer():
    text = data.load_text("tinyshakespeare")[:50_000]
    assert WordTokenizer.words(text) == RegexpTokenizer(WORD_PATTERN).tokenize(text)


def test_min_count_and_full_vocabulary():
    tok = WordTokenizer().train("a a b", min_count=2)
    assert tok.itos == ["<unk>", "a"]
    assert WordTokenizer().train("x y y").vocab_size == 3


def test_save_load_and_bad_input(tmp_path):
    tok = WordTokenizer().train("the cat saw the dog")
    tok.save(tmp_path / "w.json")
    assert WordTokenizer.load(tmp_path / "w.json").itos == tok.itos
    assert [p.name for p in tmp_path.iterdir()] == ["w.json"]
    with pytest.raises(ValueError, match="without words"):
        WordTokenizer().train("  \n ")
    with pytest.raises(ValueError, match="vocab_size must be an integer >= 2"):
        WordTokenizer().train("a b", vocab_size=1)
    with pytest.raises(ValueError, match=r"id 9 is outside the vocabulary \(0..4\)"):
        tok.decode([9])
    (tmp_path / "x.json").write_text('{"type": "word", "itos": ["cat"]}')
    with pytest.raises(ValueError, match="corrupt word tokenizer"):
        WordTokenizer.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        WordTokenizer.load(tmp_path / "y.json")


def test_an_untrained_or_empty_vocabulary_is_refused():
    with pytest.raises(ValueError, match=r"no words, every word would be <unk>: call train\(text\) first"):
        WordTokenizer().encode("the cat")
    with pytest.raises(ValueError, match=r"no word occurs min_count=3 or more times .*largest count is 2"):
        WordTokenizer().train("the cat the", min_count=3)
