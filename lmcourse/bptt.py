"""A recurrent language model in NumPy, trained with backpropagation through time written by hand (chapter 4).

The model of Mikolov et al. (2010), for a batch of B sequences of T token ids, row-vector convention:

    h_t = tanh(x_t W_xh + h_{t-1} W_hh + b_h)       hidden state, (B, H); h_0 is given (zeros by default)
    y_t = h_t W_hy + b_y                            logits, (B, V); softmax(y_t) predicts the next token
    L   = (1/N) sum_{b,t} -log softmax(y_t)[target_t]   mean cross-entropy over the N scored positions, nats

x_t is the one-hot vector of the input id w_t, so x_t W_xh is row w_t of W_xh (an embedding lookup).
Shapes: W_xh (V, H), W_hh (H, H), b_h (H,), W_hy (H, V), b_y (V,). The book writes column vectors,
h_t = tanh(W_hx x_t + W_hh h_{t-1} + b), so its W_hx is W_xh^T (and its W_hh is this W_hh^T); in
``torch.nn.RNN`` terms weight_ih_l0 = W_xh^T, weight_hh_l0 = W_hh^T and bias_ih_l0 + bias_hh_l0 = b_h.
The loss is the book's sum of per-step cross-entropies divided by N (as ``F.cross_entropy`` does), so
the gradients are those of the sum divided by N. A target equal to ``IGNORE`` (-1) is not scored.

A parameter set is a plain dict ``{name: array}`` with the names in ``PARAM_NAMES``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
from tqdm.auto import tqdm

from lmcourse.core import check_non_negative_int, check_positive_int, is_number
from lmcourse.train import History

__all__ = ["PARAM_NAMES", "IGNORE", "init_params", "forward", "backward", "batchify", "truncated_bptt",
           "clip_grad_norm", "sgd_step", "Adam", "train", "evaluate", "sample", "max_rel_error"]

PARAM_NAMES = ("W_xh", "W_hh", "b_h", "W_hy", "b_y")
IGNORE = -1
Params = dict[str, np.ndarray]


def init_params(vocab_size: int, hidden_size: int, seed: int = 0, dtype: type = np.float64) -> Params:
    """Weights uniform in (-1/sqrt(H), 1/sqrt(H)) as in ``torch.nn.RNN``, biases zero."""
    for name, value in [("vocab_size", vocab_size), ("hidden_size", hidden_size)]:
        check_positive_int(value, name)
    rng = np.random.default_rng(seed)
    s = 1 / math.sqrt(hidden_size)
    V, H = vocab_size, hidden_size
    shapes = {"W_xh": (V, H), "W_hh": (H, H), "W_hy": (H, V)}
    params = {name: rng.uniform(-s, s, shape).astype(dtype) for name, shape in shapes.items()}
    params["b_h"], params["b_y"] = np.zeros(H, dtype), np.zeros(V, dtype)
    return {name: params[name] for name in PARAM_NAMES}


def _sizes(params: Params) -> tuple[int, int]:
    """(V, H) of a parameter set, after checking that every parameter is there with a consistent shape."""
    missing = [n for n in PARAM_NAMES if n not in params]
    if missing:
        raise ValueError(f"params lacks {missing}: build it with init_params(vocab_size, hidden_size)")
    V, H = params["W_xh"].shape
    expected = {"W_xh": (V, H), "W_hh": (H, H), "b_h": (H,), "W_hy": (H, V), "b_y": (V,)}
    for name, shape in expected.items():
        if params[name].shape != shape:
            raise ValueError(f"params[{name!r}] has shape {params[name].shape}, expected {shape} for V={V}, H={H}")
    return V, H


def _check_ids(ids: np.ndarray, vocab_size: int, name: str, allow_ignore: bool = False) -> np.ndarray:
    """``ids`` as a (B, T) integer array with T >= 1 and every id in 0..V-1 (or IGNORE, for targets)."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"{name} must be a (B, T) array of token ids, got shape {ids.shape}; "
                         f"for one sequence pass {name}[None]")
    if ids.shape[1] == 0:
        raise ValueError(f"{name} has sequence length 0: an RNN needs at least one time step")
    if ids.shape[0] == 0:
        raise ValueError(f"{name} has batch size 0: pass at least one sequence")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    low = IGNORE if allow_ignore else 0
    bad = (ids < low) | (ids >= vocab_size)
    if bad.any():
        raise ValueError(f"{name} holds id {ids[bad][0]}, outside the vocabulary 0..{vocab_size - 1}"
                         + (f" (or {IGNORE} for an unscored position)" if allow_ignore else ""))
    return ids


def _check_h0(h0: np.ndarray | None, batch_size: int, hidden_size: int, dtype: np.dtype) -> np.ndarray:
    if h0 is None:
        return np.zeros((batch_size, hidden_size), dtype)
    h0 = np.asarray(h0, dtype)
    if h0.shape != (batch_size, hidden_size):
        raise ValueError(f"the hidden state must have shape (B, H) = {(batch_size, hidden_size)}, got {h0.shape}")
    return h0


def forward(params: Params, ids: np.ndarray, targets: np.ndarray, h0: np.ndarray | None = None
            ) -> tuple[float, dict, np.ndarray]:
    """Run the RNN over (B, T) input ``ids`` and score the (B, T) ``targets``, starting from ``h0`` (B, H).

    Returns the mean loss, the cache that :func:`backward` needs, and the final hidden state h_T (B, H).
    Only the recurrence is a loop over time; the output layer and the softmax run on all steps at once.
    """
    V, H = _sizes(params)
    ids = _check_ids(ids, V, "ids")
    targets = _check_ids(targets, V, "targets", allow_ignore=True)
    if targets.shape != ids.shape:
        raise ValueError(f"targets must have the shape of ids {ids.shape}, got {targets.shape}")
    mask = targets != IGNORE  # (B, T) the scored positions
    n = int(mask.sum())
    if n == 0:
        raise ValueError(f"every target is IGNORE ({IGNORE}): there is no position to score")
    B, T = ids.shape
    W_xh, W_hh, b_h = params["W_xh"], params["W_hh"], params["b_h"]
    hs = np.empty((B, T + 1, H), W_hh.dtype)  # hs[:, t] is h_t; hs[:, 0] is h_0
    hs[:, 0] = _check_h0(h0, B, H, W_hh.dtype)
    for t in range(T):
        hs[:, t + 1] = np.tanh(W_xh[ids[:, t]] + hs[:, t] @ W_hh + b_h)
    logits = hs[:, 1:] @ params["W_hy"] + params["b_y"]  # (B, T, V)
    logits -= logits.max(axis=-1, keepdims=True)  # softmax is shift-invariant; this avoids overflow
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    safe = np.where(mask, targets, 0)
    nll = -np.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]  # (B, T)
    loss = float(nll[mask].sum() / n)
    cache = {"ids": ids, "targets": safe, "mask": mask, "n": n, "hs": hs, "probs": np.exp(log_probs)}
    return loss, cache, hs[:, -1].copy()


def backward(params: Params, cache: dict) -> dict[str, np.ndarray]:
    """Backpropagation through time: the gradient of the loss of :func:`forward` for every parameter.

    Also returns ``"h0"``, dL/dh_0 (B, H), and ``"h"``, the total derivative dL/dh_t (B, T, H) for
    t = 1..T, the quantity of the recurrence

        dL/dh_t = dl_t/dh_t + (dL/dh_{t+1} * (1 - h_{t+1}^2)) W_hh^T,     dL/dh_{T+1} = 0

    where dl_t/dh_t is the path through y_t and the second term the path through h_{t+1}.
    """
    V, H = _sizes(params)
    hs, probs, ids, mask = cache["hs"], cache["probs"], cache["ids"], cache["mask"]
    B, T = ids.shape
    dy = probs.copy()  # dL/dy_t = (softmax(y_t) - onehot(target_t)) / N at scored positions, 0 elsewhere
    dy.reshape(B * T, V)[np.arange(B * T), cache["targets"].reshape(-1)] -= 1
    dy *= mask[..., None] / cache["n"]
    grads = {"W_hy": hs[:, 1:].reshape(-1, H).T @ dy.reshape(-1, V), "b_y": dy.sum(axis=(0, 1))}
    dh_out = dy @ params["W_hy"].T  # (B, T, H) dl_t/dh_t, the part of dL/dh_t through y_t
    dh = np.empty_like(dh_out)  # dL/dh_t, all paths
    da = np.empty_like(dh_out)  # dL/da_t for the pre-activation a_t = x_t W_xh + h_{t-1} W_hh + b_h
    dh_next = np.zeros((B, H), dh_out.dtype)  # dL/dh_{T+1} dh_{T+1}/dh_T = 0: nothing comes after step T
    for t in reversed(range(T)):
        dh[:, t] = dh_out[:, t] + dh_next
        da[:, t] = dh[:, t] * (1 - hs[:, t + 1] ** 2)  # tanh'(a) = 1 - tanh(a)^2
        dh_next = da[:, t] @ params["W_hh"].T
    grads["W_hh"] = hs[:, :-1].reshape(-1, H).T @ da.reshape(-1, H)
    grads["b_h"] = da.sum(axis=(0, 1))
    grads["W_xh"] = np.zeros_like(params["W_xh"])
    np.add.at(grads["W_xh"], ids.reshape(-1), da.reshape(-1, H))  # row w_t of W_xh was used at step t
    return {**{name: grads[name] for name in PARAM_NAMES}, "h0": dh_next, "h": dh}


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Cut a 1-D id stream into ``batch_size`` contiguous streams, (B, L) with L = len // B (the rest is dropped)."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be a 1-D stream of token ids, got shape {ids.shape}")
    check_positive_int(batch_size, "batch_size")
    if batch_size > len(ids) // 2:
        raise ValueError(f"batch_size must be an integer in 1..{len(ids) // 2} for {len(ids)} ids, got {batch_size}")
    L = len(ids) // batch_size
    return ids[: batch_size * L].reshape(batch_size, L)


def _chunks(stream: np.ndarray, seq_len: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Consecutive (inputs, targets) chunks of k = seq_len steps of a (B, L) stream; the last may be shorter."""
    check_positive_int(seq_len, "seq_len")
    stream = np.asarray(stream)
    if stream.ndim != 2 or stream.shape[1] < 2:
        raise ValueError(f"stream must be (B, L) with L >= 2 (see batchify), got shape {stream.shape}")
    for start in range(0, stream.shape[1] - 1, seq_len):
        targets = stream[:, start + 1: start + seq_len + 1]
        yield stream[:, start: start + targets.shape[1]], targets


def truncated_bptt(params: Params, stream: np.ndarray, seq_len: int, h0: np.ndarray | None = None
                   ) -> Iterator[tuple[float, dict[str, np.ndarray], np.ndarray]]:
    """Truncated BPTT over B parallel streams (B, L): yield ``(loss, grads, h)`` for each chunk of k = seq_len steps.

    Chunk j reads inputs stream[:, jk : jk+k] and targets stream[:, jk+1 : jk+k+1]. The hidden state is carried
    from one chunk to the next as a value: it is the next chunk's h_0, a constant, so gradients stop at the
    chunk boundary. ``params`` is read afresh for every chunk, so an update made between two chunks is used.
    """
    h = h0
    for ids, targets in _chunks(stream, seq_len):
        loss, cache, h = forward(params, ids, targets, h)
        yield loss, backward(params, cache), h


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Rescale the parameter gradients in place so that their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping. Only the names in ``PARAM_NAMES`` count (not "h0" or "h").
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    norm = math.sqrt(sum(float((grads[name] ** 2).sum()) for name in PARAM_NAMES))
    if norm > max_norm:
        for name in PARAM_NAMES:
            grads[name] *= max_norm / norm
    return norm


def sgd_step(params: Params, grads: dict[str, np.ndarray], lr: float) -> None:
    """Plain gradient descent, in place: theta <- theta - lr * dL/dtheta."""
    for name in PARAM_NAMES:
        params[name] -= lr * grads[name]


class Adam:
    """Adam (Kingma & Ba, 2015) in NumPy: moment estimates m, v with bias correction; updates in place."""

    def __init__(self, params: Params, lr: float = 3e-3, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-8) -> None:
        if lr <= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"need lr > 0 and betas in [0, 1), got lr={lr}, betas={betas}")
        self.lr, self.betas, self.eps, self.t = lr, betas, eps, 0
        self.m = {name: np.zeros_like(params[name]) for name in PARAM_NAMES}
        self.v = {name: np.zeros_like(params[name]) for name in PARAM_NAMES}

    def step(self, params: Params, grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        b1, b2 = self.betas
        for name in PARAM_NAMES:
            self.m[name] = b1 * self.m[name] + (1 - b1) * grads[name]
            self.v[name] = b2 * self.v[name] + (1 - b2) * grads[name] ** 2
            m_hat, v_hat = self.m[name] / (1 - b1 ** self.t), self.v[name] / (1 - b2 ** self.t)
            params[name] -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def train(params: Params, stream: np.ndarray, seq_len: int, max_steps: int, lr: float = 3e-3,
          grad_clip: float | None = 1.0, optimizer: str = "adam", progress: bool = True) -> History:
    """Train ``params`` in place with truncated BPTT over the (B, L) ``stream``: one update per chunk.

    The hidden state is carried across chunks and reset to zero at the start of each pass over the stream.
    ``grad_clip`` (a max global norm, or None) clips every gradient; ``optimizer`` is "adam" or "sgd".
    Returns the course's :class:`~lmcourse.train.History` (loss, lr and gradient norm before clipping per step).
    """
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    check_positive_int(max_steps, "max_steps")
    adam = Adam(params, lr) if optimizer == "adam" else None
    history, start = History(), time.perf_counter()
    bar = tqdm(total=max_steps, desc="training (NumPy BPTT)", disable=not progress)
    while len(history.train_loss) < max_steps:
        for loss, grads, _ in truncated_bptt(params, stream, seq_len):
            norm = clip_grad_norm(grads, grad_clip if grad_clip is not None else math.inf)
            if adam is not None:
                adam.step(params, grads)
            else:
                sgd_step(params, grads, lr)
            history.train_loss.append(loss)
            history.grad_norm.append(norm)
            history.lr.append(lr)
            history.tokens += grads["h"].shape[0] * grads["h"].shape[1]
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}")
            if len(history.train_loss) == max_steps:
                break
    bar.close()
    history.seconds = time.perf_counter() - start
    return history


def evaluate(params: Params, stream: np.ndarray, seq_len: int = 100) -> float:
    """Mean loss per token over a whole (B, L) stream, with the hidden state carried across chunks."""
    total, count, h = 0.0, 0, None
    for ids, targets in _chunks(stream, seq_len):
        loss, _, h = forward(params, ids, targets, h)
        total, count = total + loss * targets.size, count + targets.size
    return total / count


def sample(params: Params, prompt: list[int], n: int, temperature: float = 1.0, seed: int = 0) -> list[int]:
    """Read the ``prompt`` ids, then sample ``n`` more ids one at a time from softmax(y_t / temperature)."""
    V, H = _sizes(params)
    prompt_ids = _check_ids(np.asarray(prompt, dtype=np.int64)[None], V, "prompt")[0]
    check_non_negative_int(n, "n")
    if not (is_number(temperature) and temperature > 0):
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    rng = np.random.default_rng(seed)
    h, out = np.zeros(H, params["W_hh"].dtype), [int(i) for i in prompt_ids]
    for i in range(len(prompt_ids) + n - 1):
        h = np.tanh(params["W_xh"][out[i]] + h @ params["W_hh"] + params["b_h"])
        if i >= len(prompt_ids) - 1:
            logits = (h @ params["W_hy"] + params["b_y"]) / temperature
            p = np.exp(logits - logits.max())
            out.append(int(rng.choice(V, p=p / p.sum())))
    return out


def max_rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(max |a|, max |b|): the largest difference relative to the larger array's scale."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare arrays of shapes {a.shape} and {b.shape}")
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0))
    return float(np.abs(a - b).max(initial=0.0) / scale) if scale > 0 else 0.0
