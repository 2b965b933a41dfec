"""lmcourse.finetune: the SMS Spam Collection, its parser and the course's fixed stratified split."""

from collections import Counter

import pytest

from lmcourse.finetune import SMS_LABELS, load_sms_spam, parse_sms_spam, sms_spam_splits, stratified_split


def test_the_collection_has_its_published_counts():
    examples = load_sms_spam()
    assert len(examples) == 5_574
    assert Counter(y for _, y in examples) == {0: 4_827, 1: 747}
    assert SMS_LABELS == ("ham", "spam")
    assert examples[0][0].startswith("Go until jurong point") and examples[0][1] == 0


def test_the_split_is_fixed_stratified_disjoint_and_complete():
    splits = sms_spam_splits()
    assert {k: len(v) for k, v in splits.items()} == {"train": 3_902, "validation": 558, "test": 1_114}
    for part in splits.values():
        spam = sum(y for _, y in part) / len(part)
        assert spam == pytest.approx(747 / 5_574, abs=0.002)  # every part has the whole's share of spam
    assert sms_spam_splits() == splits  # the same everywhere
    assert sms_spam_splits(seed=1) != splits
    labels = [y for _, y in load_sms_spam()]
    parts = stratified_split(labels)
    assert sorted(i for part in parts for i in part) == list(range(len(labels)))  # each message exactly once


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("ham\tfine\nspam no tab here\n", "line 2 has no tab between its label and its message: 'spam no tab here'"),
    ("ham\tok\nHAM\tshouting\n", "line 2 has the label 'HAM'; the labels are ham and spam"),
])
def test_bad_lines_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        parse_sms_spam(text)


def test_parse_keeps_tabs_inside_a_message_and_skips_blank_lines():
    assert parse_sms_spam("spam\tWIN\tnow\n\nham\tok\n") == [("WIN\tnow", 1), ("ok", 0)]


@pytest.mark.parametrize("labels, fractions, message", [
    ([], (0.5, 0.5), "empty"),
    ([0, 1], (0.5,), "two or more numbers"),
    ([0, 1], (0.6, 0.6), "sum to 1"),
])
def test_bad_splits_are_explained(labels, fractions, message):
    with pytest.raises(ValueError, match=message):
        stratified_split(labels, fractions)
