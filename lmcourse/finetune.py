"""Fine-tuning a pretrained model for a task (chapter 13): the data, a classification head, the metrics.

The task is the chapter's running example: tell spam from ordinary messages ("ham") in the SMS Spam Collection
(Almeida et al. 2011; 5,574 messages, 4,827 ham and 747 spam). :func:`load_sms_spam` reads the verified file of
:mod:`lmcourse.data`; :func:`stratified_split` cuts any labelled set into train, validation and test parts with
the class proportions of the whole, from a seed, so every chapter, test and assignment sees the same messages.

:class:`GPTClassifier` is GPT-1's recipe (Radford et al. 2018): a linear head on the final hidden state of each
sequence's last real token, optionally with the language-model loss kept as an auxiliary term. Sequences are
padded on the right, which needs no attention mask: under the causal mask no real position can see the padding
after it. :func:`classification_metrics` gives accuracy, balanced accuracy, the positive class's F1 and the
confusion matrix, the numbers an imbalanced task needs (a model that always says "ham" is 87% accurate).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmcourse.core import check_non_negative_int, check_positive_int
from lmcourse.data import load_text
from lmcourse.models.gpt import GPT, lm_loss

__all__ = ["SMS_LABELS", "parse_sms_spam", "load_sms_spam", "stratified_split", "sms_spam_splits", "GPTClassifier",
           "classification_metrics"]

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


class GPTClassifier(nn.Module):
    """A pretrained GPT with a classification head: ``model(idx, lengths, labels=None)`` -> ``(logits, loss)``.

    idx (B, T) holds right-padded token ids (any id after a row's ``lengths[b]`` real tokens); the class logits
    (B, n_classes) come from the final hidden state at position ``lengths[b] - 1``, which has read the whole
    sequence. With ``labels`` (B,), the loss is the cross-entropy of the classes plus ``lm_weight`` times the
    language-model loss on the real tokens (GPT-1 kept it as an auxiliary objective; 0 drops it).
    """

    def __init__(self, gpt: GPT, n_classes: int = 2, lm_weight: float = 0.0) -> None:
        super().__init__()
        check_positive_int(n_classes, "n_classes")
        if not lm_weight >= 0:
            raise ValueError(f"lm_weight must be >= 0, got {lm_weight!r}")
        self.gpt, self.lm_weight = gpt, lm_weight
        self.head = nn.Linear(gpt.config.n_embd, n_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Class logits (B, n_classes) and, with ``labels``, the loss (see the class docstring)."""
        if lengths.shape != idx.shape[:1] or lengths.dtype.is_floating_point:
            raise ValueError(f"lengths must be (B,) = ({idx.shape[0]},) integers, got {tuple(lengths.shape)} "
                             f"{lengths.dtype}")
        if int(lengths.min()) < 1 or int(lengths.max()) > idx.shape[1]:
            raise ValueError(f"every length must be in 1..T = {idx.shape[1]}, got {lengths.tolist()}")
        h = self.gpt.features(idx)  # (B, T, C); right padding: no real position sees the padding
        last = h[torch.arange(idx.shape[0], device=idx.device), lengths - 1]  # (B, C): each row's last real token
        logits = self.head(last)  # (B, n_classes)
        if labels is None:
            return logits, None
        loss = F.cross_entropy(logits, labels)
        if self.lm_weight:
            real = torch.arange(idx.shape[1], device=idx.device)[None, 1:] < lengths[:, None]  # (B, T-1) targets
            targets = idx[:, 1:].masked_fill(~real, -1)
            loss = loss + self.lm_weight * lm_loss(self.gpt.head(h[:, :-1]), targets)
        return logits, loss


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int = 2,
                           positive: int = 1) -> dict:
    """Accuracy, balanced accuracy (the mean of the per-class recalls), the F1 of class ``positive`` and the
    confusion matrix (rows: true class, columns: predicted class) of two equally long label sequences."""
    y_true, y_pred = torch.as_tensor(list(y_true)), torch.as_tensor(list(y_pred))
    if y_true.shape != y_pred.shape or y_true.numel() == 0:
        raise ValueError(f"need two non-empty label sequences of one length, got {len(y_true)} and {len(y_pred)}")
    if int(torch.cat([y_true, y_pred]).min()) < 0 or int(torch.cat([y_true, y_pred]).max()) >= n_classes:
        raise ValueError(f"labels must be class ids in 0..{n_classes - 1}")
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)
    confusion.index_put_((y_true, y_pred), torch.ones_like(y_true), accumulate=True)
    per_class = confusion.diagonal() / confusion.sum(1).clamp(min=1)  # recall of each class present
    present = confusion.sum(1) > 0
    tp = confusion[positive, positive].item()
    predicted, actual = confusion[:, positive].sum().item(), confusion[positive].sum().item()
    f1 = 2 * tp / (predicted + actual) if predicted + actual else 0.0
    return {"accuracy": confusion.diagonal().sum().item() / len(y_true),
            "balanced_accuracy": per_class[present].mean().item(), "f1": f1, "confusion": confusion.tolist()}
