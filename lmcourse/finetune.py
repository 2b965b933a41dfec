"""Fine-tuning a pretrained model for a task (chapter 13): the SMS Spam Collection and its fixed split.

The task is the chapter's running example: tell spam from ordinary messages ("ham") in the SMS Spam Collection
(Almeida et al. 2011; 5,574 messages, 4,827 ham and 747 spam). :func:`load_sms_spam` reads the verified file of
:mod:`lmcourse.data`; :func:`stratified_split` cuts any labelled set into train, validation and test parts with
the class proportions of the whole, from a seed, so every chapter, test and assignment sees the same messages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmcourse.core import check_non_negative_int
from lmcourse.data import load_text

__all__ = ["SMS_LABELS", "parse_sms_spam", "load_sms_spam", "stratified_split", "sms_spam_splits"]

SMS_LABELS = ("ham", "spam")  # class ids 0 and 1


def parse_sms_spam(text: str) -> list[tuple[str, int]]:
    """(message, class id) for every line ``label<TAB>message`` of ``text``; a ValueError names a bad line."""
    if not text.strip():
        raise ValueError("the SMS Spam Collection text is empty: pass the file's contents (lmcourse.data's 'sms-spam')")
    examples = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line:
            continue  # the final newline, or a blank line
        label, tab, message = line.partition("\t")
        if not tab:
            raise ValueError(f"line {number} has no tab between its label and its message: {line[:60]!r}")
        if label not in SMS_LABELS:
            raise ValueError(f"line {number} has the label {label!r}; the labels are {' and '.join(SMS_LABELS)}")
        examples.append((message, SMS_LABELS.index(label)))
    return examples


def load_sms_spam() -> list[tuple[str, int]]:
    """The 5,574 (message, class id) pairs of the SMS Spam Collection, in the file's order (0 = ham, 1 = spam)."""
    return parse_sms_spam(load_text("sms-spam"))


def stratified_split(labels: Sequence[int], fractions: Sequence[float] = (0.7, 0.1, 0.2),
                     seed: int = 0) -> list[list[int]]:
    """Indices of the parts (e.g. train, validation, test) of a labelled set, each with the classes in the
    proportions of the whole: every class's indices are shuffled (seeded) and cut by ``fractions`` (the last
    part takes the rounding remainder). Each part is sorted, so it lists examples in their original order."""
    check_non_negative_int(seed, "seed")
    if len(labels) == 0:
        raise ValueError("cannot split an empty set of labels")
    if len(fractions) < 2 or any(not 0 < f < 1 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be two or more numbers in (0, 1) that sum to 1, got {tuple(fractions)}")
    gen = torch.Generator().manual_seed(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for label in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == label]
        shuffled = [members[j] for j in torch.randperm(len(members), generator=gen).tolist()]
        start = 0
        for k, fraction in enumerate(fractions):
            end = len(shuffled) if k == len(fractions) - 1 else start + round(fraction * len(shuffled))
            parts[k] += shuffled[start:end]
            start = end
    return [sorted(part) for part in parts]


def sms_spam_splits(seed: int = 0) -> dict[str, list[tuple[str, int]]]:
    """The course's fixed split of the SMS Spam Collection: 70% train, 10% validation, 20% test, stratified."""
    examples = load_sms_spam()
    train, validation, test = stratified_split([y for _, y in examples], (0.7, 0.1, 0.2), seed)
    return {name: [examples[i] for i in part] for name, part in
            (("train", train), ("validation", validation), ("test", test))}
