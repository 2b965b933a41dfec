"""Checks of the arguments that recur across the package: token-id tensors and positive integer sizes."""

import numbers
import operator
from collections.abc import Iterable

import torch

__all__ = ["ID_DTYPES", "check_ids", "check_id_stream", "check_positive_int", "is_number", "decode_ids"]

# The dtypes an embedding lookup accepts; other integer tensors (uint8, int16, ...) fail deep inside torch.
ID_DTYPES = (torch.int64, torch.int32)


def check_ids(ids: torch.Tensor, vocab_size: int, name: str, ndim: int, shape: str, hint: str = "",
              read_values: bool = True) -> None:
    """Raise a ValueError unless ``ids`` is an ``ndim``-D int64 (or int32) tensor of ids in 0..vocab_size-1.

    ``shape`` (e.g. ``"(B, T)"``) and ``hint`` only word the error message. With ``read_values=False`` only the
    dtype and the number of dimensions are checked (reading min and max of a CUDA tensor waits for the GPU).
    """
    if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype.is_complex \
            or ids.dtype == torch.bool:
        raise ValueError(f"{name} must be a tensor of integer token ids, got "
                         f"{getattr(ids, 'dtype', type(ids).__name__)}")
    if ids.dtype not in ID_DTYPES:
        raise ValueError(f"{name} must hold int64 (or int32) token ids, got {ids.dtype}; convert it with "
                         f"{name}.long()")
    if ids.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D with shape {shape}, got shape {tuple(ids.shape)}{hint}")
    if read_values and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"{name} holds ids from {int(ids.min())} to {int(ids.max())}, outside the "
                         f"vocabulary 0..{vocab_size - 1}")


def check_id_stream(ids: torch.Tensor, name: str = "ids") -> None:
    """Raise a ValueError unless ``ids`` is one 1-D integer tensor of token ids (a whole text; values not read)."""
    check_ids(ids, 0, name, 1, "(N,)", "; pass one long sequence of token ids", read_values=False)


def check_positive_int(value: int, name: str, hint: str = "") -> None:
    """Raise a ValueError unless ``value`` is an integer >= 1 (a Python or NumPy int; not a bool, not a float)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}{hint}")


def is_number(value: object) -> bool:
    """A real number (an int or a float), not a bool (``True`` would pass for 1)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def decode_ids(ids: Iterable[int] | torch.Tensor, vocab_size: int) -> list[int]:
    """``ids`` (a list, or a 1-D integer tensor) as a list of ints in 0..vocab_size-1, for a tokenizer's ``decode``.

    A ValueError names the first id that is not one: a float such as 1.7 (never silently truncated), a row of a
    2-D tensor, or an id outside the vocabulary.
    """
    if isinstance(ids, torch.Tensor):
        check_ids(ids, vocab_size, "ids", 1, "(T,)", "; decode one sequence at a time")
        return ids.tolist()
    out = []
    for i in ids:
        try:
            i = operator.index(i)
        except TypeError:
            raise ValueError(f"ids must be integer token ids, got {i!r}") from None
        if not 0 <= i < vocab_size:
            raise ValueError(f"id {i} is outside the vocabulary (0..{vocab_size - 1})")
        out.append(i)
    return out
