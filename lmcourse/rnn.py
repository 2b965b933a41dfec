"""Recurrent networks from their equations: RNN, LSTM and GRU cells, unrolled over time, and language models.

A cell maps one time step, x_t (B, I) and the previous state, to the new state; :func:`unroll` runs a cell
over a sequence x (B, T, I). The cells have the parameters of their ``torch.nn`` counterparts, with the
same names and shapes and the gates stacked in the same order (LSTM: i, f, g, o; GRU: r, z, n), so
weights copy 1:1. :class:`Recurrent` stacks layers of cells like ``torch.nn.LSTM(..., batch_first=True)``
and its ``state_dict`` uses torch's key names (``weight_ih_l0``, ...), so ``load_state_dict`` works
both ways. :class:`RNNLM` is the recurrent language model of chapters 4 and 5; with ``fused=True`` it
runs the same parameters through ``torch.nn.RNN/LSTM/GRU`` (cuDNN on a GPU) instead.

States: a (B, H) tensor h for the RNN and GRU cells, a pair (h, c) for the LSTM cell. A multi-layer
:class:`Recurrent` (and the LM) uses torch's layout: h of shape (L, B, H), or (h, c) for the LSTM.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmcourse.core import check_id_stream, check_ids, check_positive_int
from lmcourse.train import mean_loss

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "unroll", "Recurrent", "RecurrentCache", "RNNLM", "LSTMLM",
           "evaluate_stream"]

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class _Cell(nn.Module):
    """Parameters shared by the cells: ``n_gates`` blocks of H rows stacked in W_ih, W_hh and the biases."""

    n_gates = 1

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        for name, value in [("input_size", input_size), ("hidden_size", hidden_size)]:
            check_positive_int(value, name)
        self.input_size, self.hidden_size = input_size, hidden_size
        G, H = self.n_gates * hidden_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size))  # (G*H, I)
        self.weight_hh = nn.Parameter(torch.empty(G, H))  # (G*H, H)
        self.bias_ih = nn.Parameter(torch.empty(G))
        self.bias_hh = nn.Parameter(torch.empty(G))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(H), 1/sqrt(H)), as torch.nn initialises its recurrent layers."""
        bound = 1 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def init_state(self, x_t: torch.Tensor) -> State:
        """The zero state for a batch like x_t (B, I): h (B, H), or (h, c) for the LSTM."""
        return torch.zeros(x_t.shape[0], self.hidden_size, dtype=x_t.dtype, device=x_t.device)

    def _check(self, x_t: torch.Tensor, state: State) -> None:
        if not isinstance(x_t, torch.Tensor) or x_t.ndim != 2 or x_t.shape[1] != self.input_size:
            raise ValueError(f"x_t must have shape (B, input_size={self.input_size}), "
                             f"got {tuple(getattr(x_t, 'shape', ()))}; pass one time step of x (B, T, I) as x[:, t]")
        _check_state(state, type(self), (x_t.shape[0], self.hidden_size))

    def gates(self, x_t: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two affine maps of every gate at once: W_ih x_t + b_ih and W_hh h + b_hh, each (B, G*H)."""
        return x_t @ self.weight_ih.T + self.bias_ih, h @ self.weight_hh.T + self.bias_hh


class RNNCell(_Cell):
    """The Elman cell: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) (or ReLU), state h (B, H)."""

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh") -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size)
        self.nonlinearity = nonlinearity

    def forward(self, x_t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step: x_t (B, I), h_{t-1} (B, H) -> h_t (B, H)."""
        self._check(x_t, h)
        a_x, a_h = self.gates(x_t, h)
        return torch.tanh(a_x + a_h) if self.nonlinearity == "tanh" else torch.relu(a_x + a_h)


class LSTMCell(_Cell):
    """The LSTM cell (Hochreiter & Schmidhuber 1997, with a forget gate), state (h, c), each (B, H).

        i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)      input gate
        f = sigmoid(W_if x + b_if + W_hf h + b_hf)      forget gate
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)         candidate values
        o = sigmoid(W_io x + b_io + W_ho h + b_ho)      output gate
        c' = f * c + i * g                              the cell state: an additive update
        h' = o * tanh(c')
    """

    n_gates = 4

    def init_state(self, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = super().init_state(x_t)
        return h, torch.zeros_like(h)

    def forward(self, x_t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x_t (B, I), (h, c) each (B, H) -> (h', c') each (B, H)."""
        self._check(x_t, state)
        h, c = state
        a_x, a_h = self.gates(x_t, h)
        i, f, g, o = (a_x + a_h).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class GRUCell(_Cell):
    """The GRU cell (Cho et al. 2014) in torch's form, state h (B, H).

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)      reset gate
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)      update gate
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))   candidate
        h' = (1 - z) * n + z * h
    """

    n_gates = 3

    def forward(self, x_t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step: x_t (B, I), h_{t-1} (B, H) -> h_t (B, H)."""
        self._check(x_t, h)
        a_x, a_h = self.gates(x_t, h)
        x_r, x_z, x_n = a_x.chunk(3, dim=1)
        h_r, h_z, h_n = a_h.chunk(3, dim=1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return (1 - z) * n + z * h


CELLS: dict[str, type[_Cell]] = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}
FUSED: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def _cell_type(cell: str) -> str:
    if cell not in CELLS:
        raise ValueError(f"unknown cell type {cell!r}: choose one of {', '.join(CELLS)}")
    return cell


def _check_state(state: State, cell: type[_Cell] | str, shape: tuple[int, ...]) -> None:
    """Raise ValueError unless ``state`` is h of ``shape`` (or a pair (h, c) of that shape for an LSTM)."""
    lstm = cell in (LSTMCell, "lstm")
    parts = state if lstm and isinstance(state, tuple) and len(state) == 2 else (state,)
    if lstm != (len(parts) == 2) or any(not isinstance(s, torch.Tensor) or tuple(s.shape) != shape for s in parts):
        got = tuple(tuple(getattr(s, "shape", ())) for s in parts) if isinstance(state, tuple) \
            else tuple(getattr(state, "shape", ()))
        want = f"a pair (h, c) of tensors of shape {shape}" if lstm else f"a tensor h of shape {shape}"
        raise ValueError(f"the hidden state must be {want}, got {got}; pass state=None to start from zeros")


def _check_sequence(x: torch.Tensor, input_size: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[2] != input_size:
        raise ValueError(f"x must have shape (B, T, input_size={input_size}) (batch first), "
                         f"got {tuple(getattr(x, 'shape', ()))}")
    if x.shape[1] == 0:
        raise ValueError("the sequence is empty (T = 0): a recurrent network needs at least one time step")


def unroll(cell: _Cell, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
    """Run ``cell`` over x (B, T, I), one step at a time, from ``state`` (default zeros).

    Returns the hidden states h_1..h_T as outputs (B, T, H) and the final state.
    """
    _check_sequence(x, cell.input_size)
    state = cell.init_state(x[:, 0]) if state is None else state
    outputs = []
    for t in range(x.shape[1]):
        state = cell(x[:, t], state)
        outputs.append(state[0] if isinstance(state, tuple) else state)
    return torch.stack(outputs, dim=1), state


_OURS = re.compile(r"layers\.(\d+)\.(weight_ih|weight_hh|bias_ih|bias_hh)")
_TORCH = re.compile(r"(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)")


class Recurrent(nn.Module):
    """L layers of cells unrolled over time, a from-scratch ``torch.nn.RNN/LSTM/GRU(..., batch_first=True)``.

    Layer k > 0 reads the outputs of layer k - 1 (with dropout in training, as torch does). The
    ``state_dict`` uses torch's names (``weight_ih_l0``, ...), so weights load from and into torch's modules.

    Args:
        cell: "rnn" (tanh), "lstm" or "gru".
        input_size: I, the size of each x_t.
        hidden_size: H.
        n_layers: L >= 1.
        dropout: dropout probability on the outputs of every layer but the last.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, n_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        check_positive_int(n_layers, "n_layers")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.cell, self.dropout = _cell_type(cell), dropout
        self.input_size, self.hidden_size, self.n_layers = input_size, hidden_size, n_layers
        self.layers = nn.ModuleList(CELLS[cell](input_size if k == 0 else hidden_size, hidden_size)
                                    for k in range(n_layers))
        self.register_state_dict_post_hook(_to_torch_names)
        self.register_load_state_dict_pre_hook(_from_torch_names)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """x (B, T, I) and state (L, B, H) (a pair for the LSTM; None: zeros) -> (outputs (B, T, H), final state)."""
        _check_sequence(x, self.input_size)
        if state is not None:
            _check_state(state, self.cell, (self.n_layers, x.shape[0], self.hidden_size))
        finals = []
        for k, layer in enumerate(self.layers):
            if k > 0:
                x = F.dropout(x, self.dropout, self.training)
            layer_state = None if state is None else (
                (state[0][k], state[1][k]) if isinstance(state, tuple) else state[k])
            x, final = unroll(layer, x, layer_state)
            finals.append(final)
        if self.cell == "lstm":
            return x, (torch.stack([h for h, _ in finals]), torch.stack([c for _, c in finals]))
        return x, torch.stack(finals)


def _to_torch_names(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for key in [k for k in state_dict if k.startswith(prefix) and _OURS.fullmatch(k[len(prefix):])]:
        layer, name = _OURS.fullmatch(key[len(prefix):]).groups()
        state_dict[f"{prefix}{name}_l{layer}"] = state_dict.pop(key)


def _from_torch_names(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    for key in [k for k in state_dict if k.startswith(prefix) and _TORCH.fullmatch(k[len(prefix):])]:
        name, layer = _TORCH.fullmatch(key[len(prefix):]).groups()
        state_dict[f"{prefix}layers.{layer}.{name}"] = state_dict.pop(key)


class RecurrentCache:
    """The hidden state a recurrent language model carries from one call to the next (None: not started).

    It plays the part of a Transformer's KV cache (chapter 10): what the model has read so far, so that the next
    token costs one step of the recurrence, whatever the length of the text before it.
    """

    def __init__(self) -> None:
        self.state: State | None = None

    def reset(self) -> None:
        """Back to the zero state, as before the first token."""
        self.state = None


class RNNLM(nn.Module):
    """Recurrent language model: token w_t -> input x_t -> L recurrent layers -> logits for w_{t+1}.

    The input x_t is the one-hot vector of w_t (``n_embd=None``, as in chapter 4's equations) or a learned
    embedding of size ``n_embd``; the logits are y_t = W_hy h_t + b_y over the vocabulary V.

    Args:
        vocab_size: |V|.
        hidden_size: H, the size of each layer's hidden state.
        n_layers: L, stacked recurrent layers.
        cell: "rnn" (tanh), "lstm" or "gru".
        fused: run the recurrence with ``torch.nn.RNN/LSTM/GRU`` (same parameters and state_dict keys).
        dropout: dropout on the embeddings, between layers and before the output layer.
        n_embd: embedding size, or None for one-hot inputs.
        forget_bias: added to the forget-gate biases b_hf of every LSTM layer at initialisation, so that
            f = sigmoid(... + forget_bias) starts near 1 and the cell state is carried from the start (a
            common trick; Jozefowicz et al. 2015 recommend 1).
        seed: parameters are initialised from this seed without touching the global random state; the
            fused and from-scratch models built with the same arguments get the same weights.
    """

    def __init__(self, vocab_size: int, hidden_size: int, n_layers: int = 1, cell: str = "rnn", fused: bool = False,
                 dropout: float = 0.0, n_embd: int | None = None, forget_bias: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        for name, value in [("vocab_size", vocab_size), ("hidden_size", hidden_size), ("n_layers", n_layers)]:
            check_positive_int(value, name)
        if n_embd is not None:
            check_positive_int(n_embd, "n_embd", " (or None for one-hot inputs)")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if forget_bias and _cell_type(cell) != "lstm":
            raise ValueError(f"forget_bias is for LSTM cells only (cell={cell!r} has no forget gate); leave it at 0")
        self.config = dict(vocab_size=vocab_size, hidden_size=hidden_size, n_layers=n_layers, cell=_cell_type(cell),
                           fused=fused, dropout=dropout, n_embd=n_embd, forget_bias=forget_bias)
        self.vocab_size, self.cell, self.n_layers, self.hidden_size = vocab_size, cell, n_layers, hidden_size
        input_size = n_embd or vocab_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.emb = nn.Embedding(vocab_size, n_embd) if n_embd else None
            self.rnn = (FUSED[cell](input_size, hidden_size, n_layers, batch_first=True,
                                    dropout=dropout if n_layers > 1 else 0.0) if fused
                        else Recurrent(cell, input_size, hidden_size, n_layers, dropout))
            self.head = nn.Linear(hidden_size, vocab_size)  # W_hy, b_y
        with torch.no_grad():
            for name, p in self.rnn.named_parameters():
                if forget_bias and "bias_hh" in name:
                    p[hidden_size:2 * hidden_size] += forget_bias  # the forget gate's rows: i, [f], g, o
        self.drop = nn.Dropout(dropout)

    def forward_with_state(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Logits (B, T, |V|) for ids idx (B, T), starting from ``state`` (None: zeros), and the final state.

        Feed the returned state back in to continue a sequence (truncated BPTT, generation); detach it
        first when training so gradients stop at the window boundary.
        """
        self._check_ids(idx, "idx")
        if idx.shape[1] == 0:
            raise ValueError("idx has no tokens (T = 0): pass at least one token per row")
        if state is not None:
            _check_state(state, self.cell, (self.n_layers, idx.shape[0], self.hidden_size))
        x = self.drop(self.emb(idx)) if self.emb is not None \
            else F.one_hot(idx.long(), self.vocab_size).to(self.head.weight.dtype)  # (B, T, I)
        out, state = self.rnn(x, state)  # (B, T, H)
        return self.head(self.drop(out)), state

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: RecurrentCache | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits, loss)``: logits (B, T, |V|) and, with targets (B, T), the mean cross-entropy in nats (else None).

        With a ``cache`` (from :meth:`new_cache`) the model starts from the state it holds and leaves the final
        state in it, so that the next call continues the sequence (as ``lmcourse.sampling.generate`` does).
        """
        logits, state = self.forward_with_state(idx, None if cache is None else cache.state)
        if cache is not None:
            cache.state = state
        if targets is None:
            return logits, None
        self._check_ids(targets, "targets")
        if targets.shape != idx.shape:
            raise ValueError(f"targets must have the shape of idx {tuple(idx.shape)}, got {tuple(targets.shape)}")
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten().long())

    def new_cache(self, B: int) -> RecurrentCache:
        """An empty cache (the zero state) for B sequences: a recurrent network's memory of what it has read."""
        return RecurrentCache()

    def _check_ids(self, ids: torch.Tensor, name: str) -> None:
        check_ids(ids, self.vocab_size, name, 2, "(B, T)", "; use ids[None] for a single sequence")


class LSTMLM(RNNLM):
    """:class:`RNNLM` with LSTM cells."""

    def __init__(self, vocab_size: int, hidden_size: int, n_layers: int = 1, fused: bool = False,
                 dropout: float = 0.0, n_embd: int | None = None, forget_bias: float = 0.0, seed: int = 0) -> None:
        super().__init__(vocab_size, hidden_size, n_layers, "lstm", fused, dropout, n_embd, forget_bias, seed)


def evaluate_stream(model: RNNLM, ids: torch.Tensor, batch_size: int = 32, block_size: int = 256) -> float:
    """Mean next-token loss in nats over a whole text w_1..w_N read in order, carrying the hidden state.

    The N - 1 (input, target) pairs are cut into ``batch_size`` contiguous streams of equal length (up to
    batch_size - 1 pairs at the end are dropped); each stream is read ``block_size`` tokens at a time with
    the state carried over, so every target is predicted from everything before it in its stream.
    """
    check_id_stream(ids)
    check_positive_int(batch_size, "batch_size")
    check_positive_int(block_size, "block_size")
    n = (len(ids) - 1) // batch_size  # pairs per stream
    if n < 1:
        raise ValueError(f"{len(ids)} tokens are too few for {batch_size} streams; pass a smaller batch_size")
    x = ids[:n * batch_size].view(batch_size, n)  # (B, n): stream b is x[b]
    y = ids[1:n * batch_size + 1].view(batch_size, n)
    chunks = ((x[:, t:t + block_size], y[:, t:t + block_size]) for t in range(0, n, block_size))
    return mean_loss(model, chunks, next(model.parameters()).device, cache=model.new_cache(batch_size))
