"""Scalar reverse-mode automatic differentiation (in the style of micrograd) and small neural modules on it.

A :class:`Value` wraps one Python float. Every operation on Values computes its result (the forward pass)
*and* the local derivative of the result with respect to each input, and records the inputs, so the
forward pass builds the computation graph as a side effect. :meth:`Value.backward` then visits the graph
in reverse topological order and applies the chain rule: each node adds ``local derivative * its own
gradient`` to the gradient of each of its inputs. Gradients *accumulate* (``+=``), because a node used
twice receives a contribution along each use.

On top of Value: :class:`Neuron`, :class:`Linear` (a layer of neurons), :class:`MLP`, :func:`softmax` and
:func:`cross_entropy`, enough to train a small next-token classifier with mini-batch SGD. Everything is
scalar Python, so it is slow; the later chapters use tensors.

Wrong operand types raise ``TypeError``; values outside an operation's domain (``log`` of a non-positive
number, division by zero, ...) raise ``ValueError``. Both messages say what to do instead.
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Sequence

from lmcourse.core import check_positive_int, is_number

__all__ = ["Value", "topological_order", "Module", "Neuron", "Linear", "MLP", "softmax", "cross_entropy"]


class Value:
    """One scalar in a computation graph: its ``data``, the gradient ``grad`` of the final output with
    respect to it, the input nodes it was computed from and the local derivatives with respect to them."""

    __slots__ = ("data", "grad", "_children", "_local_grads", "_op", "label")

    def __init__(self, data: float, label: str = "", *, _children: tuple[Value, ...] = (),
                 _local_grads: tuple[float, ...] = (), _op: str = "") -> None:
        if not is_number(data):
            raise TypeError(f"a Value holds one Python number (int or float), got {type(data).__name__}; "
                            "for a vector use a list of Values")
        self.data = float(data)
        self.grad = 0.0
        self._children = _children  # the inputs of the operation that produced this node (leaves: none)
        self._local_grads = _local_grads  # d self / d child, one per child, computed in the forward pass
        self._op = _op
        self.label = label

    def __repr__(self) -> str:
        label = f"{self.label!r}, " if self.label else ""
        return f"Value({label}data={self.data:.6g}, grad={self.grad:.6g})"

    # --- operations: forward value and local derivatives ------------------------------------------------

    def __add__(self, other: Value | float) -> Value:
        other = _lift(other, "+")
        return Value(self.data + other.data, _children=(self, other), _local_grads=(1.0, 1.0), _op="+")

    def __mul__(self, other: Value | float) -> Value:
        other = _lift(other, "*")
        return Value(self.data * other.data, _children=(self, other), _local_grads=(other.data, self.data), _op="*")

    def __pow__(self, p: float) -> Value:
        if isinstance(p, Value):
            raise TypeError("Value ** Value is not supported: the exponent must be a constant Python number; "
                            "for a variable exponent y write (y * x.log()).exp()")
        if not is_number(p):
            raise TypeError(f"the exponent of ** must be an int or a float, got {type(p).__name__}")
        x, p = self.data, float(p)
        if x < 0 and not p.is_integer():
            raise ValueError(f"({x:g}) ** {p:g} is not a real number: a negative base needs an integer exponent")
        if x == 0 and p < 1 and p != 0:
            raise ValueError(f"0 ** {p:g}: the power or its derivative is infinite at 0; keep the base away from 0")
        local = p * x ** (p - 1) if p != 0 else 0.0
        return Value(x**p, _children=(self,), _local_grads=(local,), _op=f"**{p:g}")

    def exp(self) -> Value:
        try:
            e = math.exp(self.data)
        except OverflowError:
            raise ValueError(f"exp({self.data:g}) overflows a float; "
                             "subtract the maximum first (as softmax does)") from None
        return Value(e, _children=(self,), _local_grads=(e,), _op="exp")

    def log(self) -> Value:
        if self.data <= 0:
            raise ValueError(f"log is only defined for positive numbers, got log({self.data:g}); "
                             "take the log of a probability, or add a small epsilon")
        return Value(math.log(self.data), _children=(self,), _local_grads=(1.0 / self.data,), _op="log")

    def tanh(self) -> Value:
        t = math.tanh(self.data)
        return Value(t, _children=(self,), _local_grads=(1.0 - t * t,), _op="tanh")

    def relu(self) -> Value:
        positive = self.data > 0
        return Value(self.data if positive else 0.0, _children=(self,), _local_grads=(float(positive),), _op="relu")

    # --- the rest, written with the operations above ------------------------------------------------------

    def __neg__(self) -> Value:
        return self * -1.0

    def __sub__(self, other: Value | float) -> Value:
        return self + -_lift(other, "-")

    def __truediv__(self, other: Value | float) -> Value:
        other = _lift(other, "/")
        if other.data == 0:
            raise ValueError(f"division by zero: {self.data:g} / 0; keep the denominator away from 0")
        return self * other**-1

    def __radd__(self, other: float) -> Value:
        return self + other

    def __rmul__(self, other: float) -> Value:
        return self * other

    def __rsub__(self, other: float) -> Value:
        return _lift(other, "-") - self

    def __rtruediv__(self, other: float) -> Value:
        return _lift(other, "/") / self

    def __rpow__(self, base: float) -> Value:
        raise TypeError("number ** Value is not supported: only constant exponents are; "
                        "for c ** x write (x * math.log(c)).exp()")

    # --- the backward pass ------------------------------------------------------------------------------

    def backward(self) -> None:
        """Fill in ``grad`` = d self / d node for every node of the graph that produced ``self``.

        Leaves (inputs and parameters) *accumulate*: a second ``backward`` adds to their ``grad``, as in
        PyTorch, so call ``zero_grad`` between training steps. Interior nodes hold this pass's gradient.
        """
        order = topological_order(self)
        for node in order:
            if node._children:
                node.grad = 0.0
        self.grad += 1.0  # d self / d self
        for node in reversed(order):  # every node is finished before any of its children is visited
            for child, local in zip(node._children, node._local_grads, strict=True):
                child.grad += local * node.grad  # the chain rule; += because a child may be used more than once


def _lift(x: Value | float, op: str) -> Value:
    """A Value for ``x``: Values pass through, Python numbers become constants (leaves)."""
    if isinstance(x, Value):
        return x
    if is_number(x):
        return Value(x)
    raise TypeError(f"unsupported operand for {op}: a Value combines with Values and Python numbers, "
                    f"not {type(x).__name__}")


def topological_order(root: Value) -> list[Value]:
    """Every node of ``root``'s graph once, each after all of its children (inputs); ``root`` is last.

    An iterative depth-first search, so that deep graphs (long sums) do not hit Python's recursion limit.
    """
    if not isinstance(root, Value):
        raise TypeError(f"topological_order needs a Value, got {type(root).__name__}")
    order: list[Value] = []
    visited: set[Value] = set()
    stack: list[tuple[Value, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            order.append(node)
        elif node not in visited:
            visited.add(node)
            stack.append((node, True))
            stack.extend((child, False) for child in node._children if child not in visited)
    return order


# --- neural-network modules on Value -------------------------------------------------------------------

_ACTIVATIONS = ("tanh", "relu", None)


def _rng(seed: int | random.Random) -> random.Random:
    return seed if isinstance(seed, random.Random) else random.Random(seed)


class Module:
    """Anything with parameters (leaf Values that training updates)."""

    def parameters(self) -> list[Value]:
        return []

    def zero_grad(self) -> None:
        """Reset every parameter's gradient before the next backward pass (gradients accumulate)."""
        for p in self.parameters():
            p.grad = 0.0


class Neuron(Module):
    """z = activation(sum_i w_i x_i + b) for n_in inputs x; weights and bias ~ U(-1/sqrt(n_in), 1/sqrt(n_in)),
    the same distribution as ``torch.nn.Linear``'s default initialisation."""

    def __init__(self, n_in: int, activation: str | None = None, seed: int | random.Random = 0) -> None:
        check_positive_int(n_in, "n_in", " (a Neuron's number of inputs)")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: choose 'tanh', 'relu' or None (linear)")
        rng, bound = _rng(seed), 1.0 / math.sqrt(n_in)
        self.w = [Value(rng.uniform(-bound, bound), f"w{i}") for i in range(n_in)]
        self.b = Value(rng.uniform(-bound, bound), "b")
        self.activation = activation

    def __call__(self, x: Sequence[Value | float]) -> Value:
        if len(x) != len(self.w):
            raise ValueError(f"this Neuron takes {len(self.w)} inputs, got {len(x)}")
        z = sum((wi * xi for wi, xi in zip(self.w, x, strict=True)), self.b)
        return z.tanh() if self.activation == "tanh" else z.relu() if self.activation == "relu" else z

    def parameters(self) -> list[Value]:
        return [*self.w, self.b]

    def __repr__(self) -> str:
        return f"Neuron({len(self.w)}, activation={self.activation!r})"


class Linear(Module):
    """A layer of n_out neurons on the same n_in inputs: y = activation(W x + b), W of shape (n_out, n_in)."""

    def __init__(self, n_in: int, n_out: int, activation: str | None = None, seed: int | random.Random = 0) -> None:
        check_positive_int(n_out, "n_out", " (a Linear layer's number of neurons)")
        rng = _rng(seed)
        self.neurons = [Neuron(n_in, activation, rng) for _ in range(n_out)]

    def __call__(self, x: Sequence[Value | float]) -> list[Value]:
        """x: n_in numbers -> n_out Values."""
        return [neuron(x) for neuron in self.neurons]

    def parameters(self) -> list[Value]:
        return [p for neuron in self.neurons for p in neuron.parameters()]

    def __repr__(self) -> str:
        n = self.neurons[0]
        return f"Linear({len(n.w)}, {len(self.neurons)}, activation={n.activation!r})"


class MLP(Module):
    """Layers of sizes n_in -> sizes[0] -> ... -> sizes[-1]; ``activation`` after every layer but the last,
    which outputs the logits. All layers draw their initial weights from one ``random.Random(seed)``."""

    def __init__(self, n_in: int, sizes: Sequence[int], activation: str | None = "tanh",
                 seed: int | random.Random = 0) -> None:
        if not sizes:
            raise ValueError("an MLP needs at least one layer: give sizes such as [16, n_out]")
        rng, dims = _rng(seed), [n_in, *sizes]
        self.layers = [Linear(dims[i], dims[i + 1], activation if i < len(sizes) - 1 else None, rng)
                       for i in range(len(sizes))]

    def __call__(self, x: Sequence[Value | float]) -> list[Value]:
        """x: n_in numbers -> sizes[-1] Values (logits)."""
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for p in layer.parameters()]

    def __repr__(self) -> str:
        return f"MLP([{', '.join(map(repr, self.layers))}])"


def softmax(logits: Sequence[Value | float]) -> list[Value]:
    """p_j = exp(z_j - m) / sum_k exp(z_k - m) with m = max_k z_k (a constant): the same p, no overflow."""
    if len(logits) == 0:
        raise ValueError("softmax needs at least one logit")
    z = [_lift(zj, "softmax") for zj in logits]
    m = max(zj.data for zj in z)
    e = [(zj - m).exp() for zj in z]
    total = sum(e[1:], e[0])
    return [ej / total for ej in e]


def cross_entropy(logits: Sequence[Value | float], target: int) -> Value:
    """-log softmax(z)_target = log sum_k exp(z_k - m) - (z_target - m), with m = max_k z_k.

    Computed as a log-sum-exp rather than log(softmax(...)), so that it stays finite when the target's
    probability underflows to 0.
    """
    if len(logits) == 0:
        raise ValueError("cross_entropy needs at least one logit")
    if isinstance(target, bool) or not isinstance(target, numbers.Integral):
        raise TypeError(f"target must be an int class index, got {type(target).__name__}")
    if not 0 <= target < len(logits):
        raise ValueError(f"target {target} is outside the {len(logits)} classes (0..{len(logits) - 1})")
    z = [_lift(zj, "cross_entropy") for zj in logits]
    m = max(zj.data for zj in z)
    e = [(zj - m).exp() for zj in z]
    return sum(e[1:], e[0]).log() - (z[target] - m)
