"""lmcourse.finetune: the SMS Spam Collection, its parser and the course's fixed stratified split."""

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from lmcourse.finetune import (
    SMS_LABELS,
    GPTClassifier,
    classification_metrics,
    load_sms_spam,
    parse_sms_spam,
    sms_spam_splits,
    stratified_split,
)
from lmcourse.models import GPT, GPTConfig


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


# --- the classifier and its metrics -----------------------------------------------------------------

def tiny_classifier(lm_weight=0.0):
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=20, block_size=12, n_layer=2, n_head=2, n_embd=16, bias=False))
    return GPTClassifier(gpt, n_classes=3, lm_weight=lm_weight)


def test_the_head_reads_the_last_real_token_and_padding_changes_nothing():
    model = tiny_classifier().eval()
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(20, (3, 12), generator=g)
    lengths = torch.tensor([12, 5, 1])
    logits, _ = model(idx, lengths)
    other_padding = idx.clone()
    for b, n in enumerate(lengths.tolist()):
        other_padding[b, n:] = torch.randint(20, (12 - n,), generator=g)
    assert torch.equal(model(other_padding, lengths)[0], logits)  # the causal mask hides what follows
    for b, n in enumerate(lengths.tolist()):  # each row alone, unpadded
        alone = model.head(model.gpt.features(idx[b:b + 1, :n])[0, -1])
        assert (alone - logits[b]).abs().max() < 1e-5


def test_the_loss_is_cross_entropy_plus_the_weighted_lm_loss_on_real_tokens():
    model = tiny_classifier(lm_weight=0.5)
    idx = torch.randint(20, (2, 12), generator=torch.Generator().manual_seed(2))
    lengths, labels = torch.tensor([12, 4]), torch.tensor([2, 0])
    logits, loss = model(idx, lengths, labels)
    lm_logits = model.gpt(idx)[0]  # (B, T, V)
    nll = torch.cat([F.cross_entropy(lm_logits[b, :n - 1], idx[b, 1:n], reduction="none")
                     for b, n in enumerate(lengths.tolist())])  # every real next-token prediction once
    expected = F.cross_entropy(logits, labels) + 0.5 * nll.mean()
    assert (loss - expected).abs() < 1e-5
    loss.backward()
    assert model.head.weight.grad is not None and model.gpt.wte.weight.grad is not None


def test_bad_lengths_are_explained():
    model = tiny_classifier()
    idx = torch.zeros(2, 12, dtype=torch.long)
    with pytest.raises(ValueError, match="every length must be in 1..T = 12"):
        model(idx, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="lengths must be \\(B,\\) = \\(2,\\) integers"):
        model(idx, torch.tensor([3.0, 3.0]))


@pytest.mark.parametrize("n_classes, seed", [(2, 0), (2, 1), (3, 2)])
def test_metrics_equal_scikit_learn(n_classes, seed):
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(seed)
    y_true = torch.randint(n_classes, (200,), generator=g).tolist()
    y_pred = [y if torch.rand(1, generator=g) < 0.7 else (y + 1) % n_classes for y in y_true]
    ours = classification_metrics(y_true, y_pred, n_classes)
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(y_true, y_pred))
    assert ours["balanced_accuracy"] == pytest.approx(metrics.balanced_accuracy_score(y_true, y_pred))
    assert ours["f1"] == pytest.approx(metrics.f1_score(y_true, y_pred, labels=[1], average="macro"))
    assert ours["confusion"] == metrics.confusion_matrix(y_true, y_pred, labels=list(range(n_classes))).tolist()


def test_the_majority_class_is_accurate_and_useless():
    m = classification_metrics([0] * 87 + [1] * 13, [0] * 100)
    assert m["accuracy"] == 0.87 and m["balanced_accuracy"] == 0.5 and m["f1"] == 0.0
