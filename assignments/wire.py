"""The only data that crosses between the grader and a submission's sandbox: JSON of plain values and tensors.

Nothing is pickled, so a submission can hand back values but never objects or code. Both sides use this codec:
`encode` turns Python values (None, bool, int, float, str, list, tuple, dict, torch.Tensor, numpy arrays and
scalars) into JSON-able data; `decode` rebuilds them and rejects anything else with a ValueError.
"""

import json
from typing import Any

import numpy as np
import torch

MAX_BYTES = 32 * 2**20  # the largest message either side accepts
TORCH_DTYPES = {str(t).removeprefix("torch."): t for t in (torch.float64, torch.float32, torch.float16, torch.bfloat16,
                                                           torch.int64, torch.int32, torch.int16, torch.int8,
                                                           torch.uint8, torch.bool)}
NUMPY_DTYPES = {"float64", "float32", "int64", "int32", "bool"}


def encode(value: Any) -> Any:
    """Python value -> JSON-able data (tuples, dicts and arrays become tagged objects)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, tuple):
        return {"tuple": [encode(v) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        return {"torch": t.tolist(), "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
    if isinstance(value, np.ndarray):
        return {"numpy": value.tolist(), "dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return encode(value.item())
    raise ValueError(f"cannot send a value of type {type(value).__name__}; return numbers, lists, dicts or tensors")


def decode(data: Any) -> Any:
    """JSON-able data -> Python value; ValueError for anything encode could not have produced."""
    if data is None or isinstance(data, bool | int | float | str):
        return data
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict) or len(data) not in (1, 3):
        raise ValueError(f"malformed value: {str(data)[:80]}")
    if "tuple" in data:
        return tuple(decode(v) for v in data["tuple"])
    if "dict" in data:
        return {_hashable(decode(k)): decode(v) for k, v in data["dict"]}
    kind = "torch" if "torch" in data else "numpy"
    dtype, shape = data.get("dtype"), data.get("shape")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError(f"malformed tensor shape: {str(shape)[:80]}")
    if kind == "torch" and dtype in TORCH_DTYPES:
        return torch.tensor(data["torch"], dtype=TORCH_DTYPES[dtype]).reshape(shape)
    if kind == "numpy" and dtype in NUMPY_DTYPES:
        return np.array(data["numpy"], dtype=dtype).reshape(shape)
    raise ValueError(f"unsupported array dtype {str(dtype)[:40]}")


def _hashable(key: Any) -> Any:
    if isinstance(key, list | dict | torch.Tensor | np.ndarray):
        raise ValueError("dict keys must be numbers, strings or tuples")
    return key


def dumps(message: dict) -> bytes:
    """A message as bytes (NaN and infinities allowed: masked logits are -inf)."""
    return json.dumps(message).encode()


def loads(raw: bytes) -> dict:
    """Bytes -> message dict; ValueError if it is not one."""
    message = json.loads(raw)
    if not isinstance(message, dict):
        raise ValueError("malformed message")
    return message
