"""Tokenizers: text <-> lists of integer ids.

Every tokenizer has the same interface: ``train(text, vocab_size)``, ``encode(text) -> list[int]``,
``decode(ids) -> str``, ``save(path)`` and ``load(path)``.
"""

import torch

from lmcourse.tokenizers.bpe import GPT2_PATTERN, BPETokenizer
from lmcourse.tokenizers.char import CharTokenizer
from lmcourse.tokenizers.unigram import UnigramTokenizer
from lmcourse.tokenizers.word import WordTokenizer
from lmcourse.tokenizers.wordpiece import WordPieceTokenizer

__all__ = ["CharTokenizer", "WordTokenizer", "BPETokenizer", "WordPieceTokenizer", "UnigramTokenizer",
           "GPT2_PATTERN", "check_ids"]


def check_ids(ids: torch.Tensor, vocab_size: int, name: str, ndim: int, shape: str, hint: str = "",
              read_values: bool = True) -> None:
    """Raise a ValueError unless ``ids`` is an ``ndim``-D integer tensor of ids in 0..vocab_size-1.

    ``shape`` (e.g. ``"(B, T)"``) and ``hint`` only word the error message. With ``read_values=False`` only the
    dtype and the number of dimensions are checked (reading min and max of a CUDA tensor waits for the GPU).
    """
    if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype.is_complex \
            or ids.dtype == torch.bool:
        raise ValueError(f"{name} must be a tensor of integer token ids, got "
                         f"{getattr(ids, 'dtype', type(ids).__name__)}")
    if ids.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D with shape {shape}, got shape {tuple(ids.shape)}{hint}")
    if read_values and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"{name} holds ids from {int(ids.min())} to {int(ids.max())}, outside the "
                         f"vocabulary 0..{vocab_size - 1}")
