"""Every tokenizer's decode takes a list or a 1-D integer tensor, and names ids it cannot decode (shared check)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmcourse.tokenizers import BPETokenizer, CharTokenizer, UnigramTokenizer, WordPieceTokenizer, WordTokenizer

TEXT = "the cat sat on the mat and the dog sat on the log " * 4


def _trained():
    return [CharTokenizer().train(TEXT), WordTokenizer().train(TEXT), BPETokenizer().train(TEXT, 270),
            WordPieceTokenizer().train(TEXT, 60), UnigramTokenizer().train(TEXT, 40)]


@pytest.mark.parametrize("tok", _trained(), ids=lambda t: type(t).__name__)
def test_decode_takes_lists_tensors_and_numpy_ids_alike(tok):
    ids = tok.encode("the cat sat")
    text = tok.decode(ids)
    assert tok.decode(torch.tensor(ids)) == tok.decode(torch.tensor(ids, dtype=torch.int32)) == text
    assert tok.decode(np.array(ids)) == tok.decode([np.int64(i) for i in ids]) == text


@pytest.mark.parametrize("tok", _trained(), ids=lambda t: type(t).__name__)
def test_decode_names_ids_it_cannot_decode(tok):
    V = tok.vocab_size
    with pytest.raises(ValueError, match=r"ids must be integer token ids, got 1\.7"):
        tok.decode([0, 1.7])  # never silently truncated to id 1
    with pytest.raises(ValueError, match="must be a tensor of integer token ids"):
        tok.decode(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"must be 1-D .*decode one sequence at a time"):
        tok.decode(torch.zeros(2, 3, dtype=torch.long))
    for bad in (V, -1):
        with pytest.raises(ValueError, match=rf"id {bad} is outside the vocabulary \(0..{V - 1}\)"):
            tok.decode([0, bad])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode(torch.tensor([0, V]))
