"""Saving and loading tokenizers: JSON files written atomically and checked when read."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["save_state", "load_state"]


def save_state(path: str | os.PathLike, kind: str, state: dict[str, Any]) -> None:
    """Write ``{"type": kind, **state}`` as JSON to ``path`` via a temporary file renamed into place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"type": kind, **state}, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def load_state(path: str | os.PathLike, kind: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """Read a file written by :func:`save_state` for a ``kind`` tokenizer; ValueError if it is anything else."""
    try:
        state = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a saved tokenizer (not valid JSON: {err})") from None
    if not isinstance(state, dict) or state.get("type") != kind:
        found = state.get("type") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} does not hold a {kind} tokenizer (type={found!r}); load it with its own class")
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{path} is a corrupt {kind} tokenizer file: it lacks {', '.join(missing)}")
    return state
