"""The checks every chapter shares, at the bottom of the package: it imports no chapter's module.

Each kind of argument is checked in one place with one meaning, so that "a positive integer" or "token ids
in range" reads the same in an n-gram model, a tokenizer and the GPT:

- :func:`is_number` -- a real number (int or float, NumPy's too), never a bool (``True`` would pass for 1);
- :func:`check_positive_int`, :func:`check_non_negative_int`, :func:`check_int_at_least` -- an integer >= 1, >= 0
  or >= a minimum, never a bool or a float;
- :func:`check_ids` / :func:`check_id_stream` / :func:`decode_ids` -- integer token-id tensors and lists.

and :func:`lazy_exports`, with which a package's ``__init__`` loads each of its names on first use only.

Public constructors and entry points call these; the layers they build do not check again.
"""

from __future__ import annotations

import importlib
import numbers
import operator
from collections.abc import Callable, Iterable

import torch

__all__ = ["ID_DTYPES", "is_number", "check_positive_int", "check_non_negative_int", "check_int_at_least",
           "check_ids", "check_id_stream",
           "decode_ids", "lazy_exports"]

# The dtypes an embedding lookup accepts; other integer tensors (uint8, int16, ...) fail deep inside torch.
ID_DTYPES = (torch.int64, torch.int32)


def is_number(value: object) -> bool:
    """A real number (a Python or NumPy int or float), not a bool (``True`` would pass for 1)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(value: int, name: str, hint: str = "") -> None:
    """Raise a ValueError unless ``value`` is an integer >= 1 (a Python or NumPy int; not a bool, not a float)."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer{hint}, got {value!r}")


def check_non_negative_int(value: int, name: str, hint: str = "") -> None:
    """Raise a ValueError unless ``value`` is an integer >= 0 (not a bool, not a float such as 2.0)."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer{hint}, got {value!r}")


def check_int_at_least(value: int, minimum: int, name: str, why: str = "") -> None:
    """Raise a ValueError unless ``value`` is an integer >= ``minimum`` (``why`` says where the minimum comes from)."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{why}, got {value!r}")


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


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` (PEP 562) that import ``exports[name]`` when ``name`` is used.

    ``exports`` maps each public name to the module that defines it, so that ``from lmcourse.models import MLPLM``
    loads chapter 3's module and not the GPT's.
    """

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
