"""lmcourse.tokenizers.BPETokenizer: GPT-2's tokenizer against tiktoken, training against Hugging Face tokenizers."""

import json

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from lmcourse import data
from lmcourse.tokenizers import GPT2_PATTERN, BPETokenizer
from lmcourse.tokenizers.bpe_train import bytes_to_unicode, train_fast, train_naive

EOT = "<|endoftext|>"
STRESS = ("Hello world! I'm here, you've seen 'em; they'll say \"we'd\" & it's 2024... "
          "naïve café résumé — «quotes» 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 e\u0301 a\u0308\u0301 Z\u0336a\u0337l\u0338g\u0335o "
          "日本語のテキスト 中文字符 한국어 text😀😃🙂 👩‍👩‍👧‍👦 🇫🇷 👍🏽 ❤️ العربية עברית हिन्दी ไทย\r\n"
          "tabs\tand\t\ttabs\n\n\n  leading   spaces   \u00a0nbsp\u3000ideographic \u200bzero-width\u200d "
          "numbers 1234567 ١٢٣ ⅫⅩ 3.14159 0x1F600 \x00\x01\x7f control \ufeffbom  \n \r\r\n trailing  ")


@pytest.fixture(scope="module")
def gpt2():
    return BPETokenizer.from_gpt2(data.path("gpt2-vocab"), data.path("gpt2-merges"))


def tiktoken_of(tok: BPETokenizer, name: str = "lmcourse") -> tiktoken.Encoding:
    """The reference: tiktoken built locally with the same ranks, pattern and special tokens."""
    return tiktoken.Encoding(name=name, pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks(),
                             special_tokens=tok.special_tokens)


@pytest.fixture(scope="module")
def gpt2_tiktoken(gpt2):
    return tiktoken_of(gpt2, "gpt2-local")


@pytest.fixture(scope="module")
def trained():
    return BPETokenizer(special_tokens=[EOT]).train(data.load_text("tinyshakespeare")[:200_000], 1000)


def test_gpt2_known_ids_and_ranks_built_from_the_byte_decoder(gpt2, gpt2_tiktoken):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.vocab_size == 50257 and gpt2.special_tokens == {EOT: 50256}
    vocab = json.loads(data.path("gpt2-vocab").read_text(encoding="utf-8"))
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    assert gpt2.mergeable_ranks() == {bytes(decoder[c] for c in t): i for t, i in vocab.items() if t != EOT}


@pytest.mark.parametrize("name, split", [("tinyshakespeare", None), ("wikitext2-raw", "valid"),
                                         ("wikitext2-raw", "test")])
def test_gpt2_ids_equal_tiktoken_on_whole_corpora(gpt2, gpt2_tiktoken, name, split):
    text = data.load_text(name, split)
    ids = gpt2.encode(text)
    assert ids == gpt2_tiktoken.encode_ordinary(text)
    assert gpt2.decode(ids) == text


def test_gpt2_ids_equal_tiktoken_on_unicode_stress_text(gpt2, gpt2_tiktoken):
    for text in (STRESS, STRESS * 3, STRESS.replace(" ", "  "), STRESS[::-1]):
        assert gpt2.encode(text) == gpt2_tiktoken.encode_ordinary(text)
        assert gpt2.decode(gpt2.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_text_round_trips_and_equals_tiktoken(gpt2, gpt2_tiktoken, text):
    ids = gpt2.encode(text)
    assert gpt2.decode(ids) == text
    assert ids == gpt2_tiktoken.encode_ordinary(text)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab <|endoftext|>é😀\n"), max_size=40))
def test_special_tokens_only_when_allowed_as_in_tiktoken(gpt2, gpt2_tiktoken, text):
    assert 50256 not in gpt2.encode(text)
    assert gpt2.encode(text) == gpt2_tiktoken.encode(text, disallowed_special=())
    assert gpt2.encode(text, allowed_special={EOT}) == gpt2_tiktoken.encode(text, allowed_special={EOT})
    assert gpt2.decode(gpt2.encode(text, allowed_special="all")) == text


def test_special_token_gets_its_id(gpt2):
    assert gpt2.encode(f"a{EOT}b", allowed_special={EOT}) == [64, 50256, 65]
    assert 50256 not in gpt2.encode(f"a{EOT}b")
    with pytest.raises(ValueError, match="unknown special tokens"):
        gpt2.encode("a", allowed_special={"<|pad|>"})


def test_trained_tokenizer_equals_tiktoken_with_the_same_ranks(trained):
    enc = tiktoken_of(trained)
    text = data.load_text("tinyshakespeare")[200_000:400_000] + STRESS + EOT + "end"
    assert trained.encode(text) == enc.encode_ordinary(text)
    assert trained.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    assert trained.vocab_size == 1000 and trained.special_tokens == {EOT: 999}
    assert trained.decode(trained.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_trained_tokenizer_round_trips_any_text(trained, text):
    assert trained.decode(trained.encode(text)) == text


def test_ids_below_256_are_bytes_and_merges_build_the_vocabulary(trained):
    ranks = trained.mergeable_ranks()
    assert all(ranks[bytes([b])] == b for b in range(256))
    assert [ranks[a + b] for a, b in trained.merges] == list(range(256, 256 + len(trained.merges)))


def test_naive_and_fast_trainers_learn_the_same_merges():
    text = data.load_text("tinyshakespeare")[:30_000] + STRESS
    naive = BPETokenizer().train(text, 400, trainer="naive")
    fast = BPETokenizer().train(text, 400, trainer="fast")
    assert naive.merges == fast.merges and len(fast.merges) == 400 - 256
    counts = {b"aaaa": 3, b"abab": 2, b"ba": 5, b"aab": 1}  # overlaps (a a a a) and ties
    assert train_naive(counts, 300) == train_fast(counts, 300)


def test_tie_break_is_the_documented_one():
    # every pair occurs once: the smallest (order(a), order(b)) wins, printable bytes before space
    assert train_fast({b"b a": 1}, 257) == [(ord("b"), ord(" "), 256)]
    assert train_fast({b"ab": 2, b"ba": 2}, 257) == [(ord("a"), ord("b"), 256)]


def test_training_stops_when_no_pair_is_left():
    tok = BPETokenizer().train("ab ab", 10_000)
    assert [a + b for a, b in tok.merges] == [b"ab", b" ab"] and tok.vocab_size == 258


def hf_merges(text: str, vocab_size: int) -> list[tuple[bytes, bytes]]:
    """Hugging Face tokenizers' ByteLevel BPE trained the same way, its merges as byte pairs."""
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([text], trainer)
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    spelled = lambda s: bytes(decoder[c] for c in s)
    merges = json.loads(hf.to_str())["model"]["merges"]
    return [tuple(map(spelled, m if isinstance(m, list) else m.split(" "))) for m in merges]


def test_merges_equal_hugging_face_tokenizers():
    text = data.load_text("tinyshakespeare")[:300_000] + STRESS
    ours = BPETokenizer().train(text, 1500)
    assert hf_merges(text, 1500) == ours.merges


def test_save_load_round_trip_and_bad_files(tmp_path, trained, gpt2):
    for tok in (trained, gpt2):
        tok.save(tmp_path / "tok.json")
        back = BPETokenizer.load(tmp_path / "tok.json")
        assert back.encode(STRESS, allowed_special="all") == tok.encode(STRESS, allowed_special="all")
        assert (back.merges, back.pattern, back.special_tokens) == (tok.merges, tok.pattern, tok.special_tokens)
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]
    (tmp_path / "bad.json").write_text('{"type": "bpe", "pattern": "x"')
    with pytest.raises(ValueError, match="not valid JSON"):
        BPETokenizer.load(tmp_path / "bad.json")
    (tmp_path / "word.json").write_text('{"type": "word", "itos": ["<unk>"]}')
    with pytest.raises(ValueError, match="does not hold a bpe tokenizer"):
        BPETokenizer.load(tmp_path / "word.json")
    (tmp_path / "part.json").write_text('{"type": "bpe", "pattern": "x", "ranks": [["zz", 1]], "merges": []}')
    with pytest.raises(ValueError, match="lacks special_tokens"):
        BPETokenizer.load(tmp_path / "part.json")


def test_bad_input_is_explained(tmp_path):
    with pytest.raises(ValueError, match=r"vocab_size must be an integer >= 257 \(256 bytes \+ 1 special"):
        BPETokenizer(special_tokens=[EOT]).train("some text", 256)
    with pytest.raises(ValueError, match="empty text"):
        BPETokenizer().train("", 300)
    with pytest.raises(ValueError, match="unknown trainer"):
        BPETokenizer().train("abc", 300, trainer="slow")
    with pytest.raises(ValueError, match="distinct non-empty"):
        BPETokenizer(special_tokens=["<a>", "<a>"])
    with pytest.raises(ValueError, match="not a valid regular expression"):
        BPETokenizer(pattern="(")
    with pytest.raises(ValueError, match=r"id 300 is outside the vocabulary \(0..255\)"):
        BPETokenizer().decode([1, 300])
    with pytest.raises(ValueError, match="lone surrogate"):
        BPETokenizer().encode("a\ud800")
    (tmp_path / "merges.txt").write_text("a b c\n")
    with pytest.raises(ValueError, match="not GPT-2 tokenizer files"):
        BPETokenizer.from_gpt2(data.path("gpt2-vocab"), tmp_path / "merges.txt")


def test_pattern_attribute_is_used():
    assert BPETokenizer().pattern == GPT2_PATTERN
    whole = BPETokenizer(pattern=r".+").train("ab ab ab", 260)
    assert b"b a" in b"".join(whole.mergeable_ranks()) and len(whole.encode("ab ab ab")) == 1
