"""lmcourse.autodiff (chapter 2): gradients checked against torch.autograd (float64) and central finite differences,
on random expression graphs and on the modules (Linear, MLP, softmax, cross-entropy)."""

import math
import random
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcourse.autodiff import MLP, Linear, Module, Neuron, Value, cross_entropy, softmax, topological_order

# --- random expression graphs ---------------------------------------------------------------------------------
# A program is a list of leaf values and a list of instructions (op, i, j, c): node i (and node j for binary
# ops, the constant c for ops with a number) -> a new node. The same program runs on Values and on torch
# tensors, because both spell the operations the same way. Its output is the sum of all nodes, so every node
# is used at least twice and gradients must accumulate.

OPS: dict[str, Callable] = {
    "add": lambda a, b, c: a + b, "sub": lambda a, b, c: a - b, "mul": lambda a, b, c: a * b,
    "div": lambda a, b, c: a / b,
    "add_c": lambda a, b, c: a + c, "radd_c": lambda a, b, c: c + a, "sub_c": lambda a, b, c: a - c,
    "rsub_c": lambda a, b, c: c - a, "mul_c": lambda a, b, c: a * c, "rmul_c": lambda a, b, c: c * a,
    "div_c": lambda a, b, c: a / c, "rdiv_c": lambda a, b, c: c / a,
    "neg": lambda a, b, c: -a, "exp": lambda a, b, c: a.exp(), "log": lambda a, b, c: a.log(),
    "tanh": lambda a, b, c: a.tanh(), "relu": lambda a, b, c: a.relu(),
    "pow2": lambda a, b, c: a**2, "pow3": lambda a, b, c: a**3, "pow-1": lambda a, b, c: a**-1,
    "pow0.5": lambda a, b, c: a**0.5, "pow1.5": lambda a, b, c: a**1.5, "pow-0.5": lambda a, b, c: a**-0.5,
}
# Safe domains, with margins so that finite differences never step across a kink or a pole.
DOMAIN: dict[str, Callable[[float, float], bool]] = {
    "div": lambda x, y: abs(y) > 0.2, "rdiv_c": lambda x, y: abs(x) > 0.2, "pow-1": lambda x, y: abs(x) > 0.2,
    "exp": lambda x, y: x < 2.5, "log": lambda x, y: x > 0.1, "relu": lambda x, y: abs(x) > 0.05,
    "pow0.5": lambda x, y: x > 0.1, "pow1.5": lambda x, y: x > 0.1, "pow-0.5": lambda x, y: x > 0.1,
}
BOUND = 20.0  # every node stays in [-BOUND, BOUND], so gradients stay moderate
nonzero = st.floats(-2.0, 2.0).filter(lambda v: abs(v) > 0.1)


@st.composite
def programs(draw) -> tuple[list[float], list[tuple[str, int, int, float]]]:
    leaves = draw(st.lists(nonzero, min_size=1, max_size=4))
    nodes = [Value(v) for v in leaves]
    instructions = []
    for _ in range(draw(st.integers(1, 15))):
        i, j = draw(st.integers(0, len(nodes) - 1)), draw(st.integers(0, len(nodes) - 1))
        c = draw(nonzero)
        x, y = nodes[i].data, nodes[j].data
        safe = [op for op in OPS if DOMAIN.get(op, lambda x, y: True)(x, y)
                and abs(OPS[op](nodes[i], nodes[j], c).data) < BOUND]
        op = draw(st.sampled_from(safe))  # never empty: tanh is always safe
        instructions.append((op, i, j, c))
        nodes.append(OPS[op](nodes[i], nodes[j], c))
    return leaves, instructions


def run(leaves: list, instructions: list):
    """Evaluate a program on Values or 0-d tensors; the output is the sum of all nodes."""
    nodes = list(leaves)
    for op, i, j, c in instructions:
        nodes.append(OPS[op](nodes[i], nodes[j], c))
    return sum(nodes[1:], nodes[0])


def value_grads(leaves: list[float], instructions: list) -> tuple[float, list[float]]:
    xs = [Value(v) for v in leaves]
    out = run(xs, instructions)
    out.backward()
    return out.data, [x.grad for x in xs]


def torch_grads(leaves: list[float], instructions: list) -> tuple[float, list[float]]:
    xs = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in leaves]
    out = run(xs, instructions)
    out.backward()
    return out.item(), [0.0 if x.grad is None else x.grad.item() for x in xs]


def finite_differences(f: Callable[[list[float]], float], xs: list[float], h: float = 1e-6) -> list[float]:
    """Central differences (f(x + h e_i) - f(x - h e_i)) / 2h, error O(h^2) + rounding O(eps / h)."""
    grads = []
    for i in range(len(xs)):
        up, down = list(xs), list(xs)
        up[i] += h
        down[i] -= h
        grads.append((f(up) - f(down)) / (2 * h))
    return grads


@settings(max_examples=300, deadline=None)
@given(programs())
def test_random_graphs_match_torch_autograd(program):
    leaves, instructions = program
    out, grads = value_grads(leaves, instructions)
    ref_out, ref_grads = torch_grads(leaves, instructions)
    assert out == pytest.approx(ref_out, rel=1e-12, abs=1e-12)
    assert grads == pytest.approx(ref_grads, rel=1e-10, abs=1e-10)


@settings(max_examples=200, deadline=None)
@given(programs())
def test_random_graphs_match_finite_differences(program):
    leaves, instructions = program
    _, grads = value_grads(leaves, instructions)
    numeric = finite_differences(lambda xs: run([Value(x) for x in xs], instructions).data, leaves)
    assert grads == pytest.approx(numeric, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("op", list(OPS))
def test_every_operation_matches_torch(op):
    """Each operation on its own, at points inside its domain (the random graphs may miss a rare one)."""
    rng = random.Random(op)
    points = 0
    while points < 20:
        x, y, c = rng.uniform(-3, 3), rng.uniform(-3, 3), rng.choice([-1.5, 0.5, 2.0])
        if not DOMAIN.get(op, lambda x, y: True)(x, y):
            continue
        program = ([x, y], [(op, 0, 1, c)])
        out, grads = value_grads(*program)
        ref_out, ref_grads = torch_grads(*program)
        assert out == pytest.approx(ref_out, rel=1e-12)
        assert grads == pytest.approx(ref_grads, rel=1e-12, abs=1e-14), (op, x, y, c)
        points += 1


# --- the backward pass: accumulation, topological order, repeated passes -------------------------------------


def test_a_node_used_twice_accumulates():
    a = Value(3.0)
    (a + a).backward()
    assert a.grad == 2.0  # assigning instead of accumulating would give 1
    a = Value(3.0)
    (a * a + a).backward()
    assert a.grad == 2 * 3.0 + 1  # d/da (a^2 + a)


def test_reused_interior_node():
    a = Value(0.7)
    b = a.tanh()  # b feeds three operations
    out = b * b + b.exp() - b
    out.backward()
    t = math.tanh(0.7)
    assert b.grad == pytest.approx(2 * t + math.exp(t) - 1, rel=1e-14)
    assert a.grad == pytest.approx((2 * t + math.exp(t) - 1) * (1 - t * t), rel=1e-14)


def test_backward_twice_accumulates_leaves_like_torch():
    """Leaves accumulate across backward passes (as in torch with retain_graph); interior nodes hold the last pass."""
    x, w = Value(0.5), Value(-1.3)
    h = (x * w).tanh()
    loss = h * h + h
    loss.backward()
    once = (x.grad, w.grad, h.grad)
    loss.backward()
    assert (x.grad, w.grad) == pytest.approx((2 * once[0], 2 * once[1]), rel=1e-15)
    assert h.grad == once[2]
    xt, wt = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.5, -1.3))
    ht = (xt * wt).tanh()
    loss_t = ht * ht + ht
    loss_t.backward(retain_graph=True)
    loss_t.backward()
    assert (x.grad, w.grad) == pytest.approx((xt.grad.item(), wt.grad.item()), rel=1e-12)


def test_two_losses_sharing_a_node_add_up():
    x = Value(0.3)
    h = x.exp()
    (h * 2.0).backward()
    (h * h).backward()
    assert x.grad == pytest.approx(2 * math.exp(0.3) + 2 * math.exp(0.6), rel=1e-14)


def test_topological_order_puts_children_first():
    a, b = Value(1.0), Value(2.0)
    c = a * b
    d = c + a
    e = d * c
    order = topological_order(e)
    assert len(order) == len(set(order)) == 5 and order[-1] is e
    position = {node: k for k, node in enumerate(order)}
    for node in order:
        for child in node._children:
            assert position[child] < position[node]


def test_deep_graph_does_not_hit_the_recursion_limit():
    x = Value(1.5)
    total = Value(0.0)
    for _ in range(20_000):
        total = total + x
    total.backward()
    assert x.grad == 20_000.0 and total.data == 30_000.0


def test_seed_gradient_is_one():
    x = Value(2.0)
    y = x.log()
    y.backward()
    assert y.grad == 1.0 and x.grad == 0.5


# --- modules ----------------------------------------------------------------------------------------------------


def torch_mlp(model: MLP) -> torch.nn.Sequential:
    """A float64 torch copy of an lmcourse MLP (same weights, same activations)."""
    layers = []
    for layer in model.layers:
        n_in, n_out = len(layer.neurons[0].w), len(layer.neurons)
        linear = torch.nn.Linear(n_in, n_out, dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.tensor([[w.data for w in n.w] for n in layer.neurons], dtype=torch.float64))
            linear.bias.copy_(torch.tensor([n.b.data for n in layer.neurons], dtype=torch.float64))
        layers.append(linear)
        activation = layer.neurons[0].activation
        if activation is not None:
            layers.append(torch.nn.Tanh() if activation == "tanh" else torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def torch_param_grads(model: torch.nn.Sequential) -> list[float]:
    """Gradients in the order of lmcourse's parameters(): per neuron, its weights then its bias."""
    grads = []
    for linear in (m for m in model if isinstance(m, torch.nn.Linear)):
        for row, b in zip(linear.weight.grad, linear.bias.grad, strict=True):
            grads += [*row.tolist(), b.item()]
    return grads


@settings(max_examples=25, deadline=None)
@given(n_in=st.integers(1, 5), sizes=st.lists(st.integers(1, 6), min_size=1, max_size=3),
       activation=st.sampled_from(["tanh", "relu", None]), seed=st.integers(0, 2**32 - 1),
       batch=st.integers(1, 5))
def test_mlp_cross_entropy_matches_torch(n_in, sizes, activation, seed, batch):
    model = MLP(n_in, sizes, activation=activation, seed=seed)
    reference = torch_mlp(model)
    rng = random.Random(seed)
    xs = [[rng.gauss(0, 1) for _ in range(n_in)] for _ in range(batch)]
    ys = [rng.randrange(sizes[-1]) for _ in range(batch)]
    loss = sum(cross_entropy(model(x), y) for x, y in zip(xs, ys, strict=True)) / batch
    loss.backward()
    logits = reference(torch.tensor(xs, dtype=torch.float64))
    ref_loss = F.cross_entropy(logits, torch.tensor(ys))
    ref_loss.backward()
    ours = [v.data for x in xs for v in model(x)]
    assert ours == pytest.approx(logits.flatten().tolist(), rel=1e-12, abs=1e-12)
    assert loss.data == pytest.approx(ref_loss.item(), rel=1e-12)
    assert [p.grad for p in model.parameters()] == pytest.approx(torch_param_grads(reference), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("activation", ["tanh", "relu", None])
def test_linear_matches_torch(activation):
    layer = Linear(4, 3, activation=activation, seed=1)
    x = [0.5, -1.0, 2.0, 0.1]
    coeffs = [1.0, -2.0, 0.5]  # a loss that weighs the outputs differently
    out = layer(x)
    sum(c * o for c, o in zip(coeffs, out, strict=True)).backward()
    reference = torch.nn.Linear(4, 3, dtype=torch.float64)
    with torch.no_grad():
        reference.weight.copy_(torch.tensor([[w.data for w in n.w] for n in layer.neurons], dtype=torch.float64))
        reference.bias.copy_(torch.tensor([n.b.data for n in layer.neurons], dtype=torch.float64))
    act = {"tanh": torch.tanh, "relu": torch.relu, None: lambda z: z}[activation]
    ref_out = act(reference(torch.tensor(x, dtype=torch.float64)))
    (torch.tensor(coeffs, dtype=torch.float64) * ref_out).sum().backward()
    assert [o.data for o in out] == pytest.approx(ref_out.tolist(), rel=1e-12)
    weight_grads = [w.grad for n in layer.neurons for w in n.w]
    assert weight_grads == pytest.approx(reference.weight.grad.flatten().tolist(), rel=1e-12, abs=1e-15)
    assert [n.b.grad for n in layer.neurons] == pytest.approx(reference.bias.grad.tolist(), rel=1e-12)


def test_mlp_gradients_match_finite_differences():
    model = MLP(3, [4, 3], activation="tanh", seed=7)
    data = [([0.2, -1.0, 0.7], 2), ([1.1, 0.3, -0.4], 0), ([-0.5, 0.9, 0.0], 1)]
    params = model.parameters()

    def loss_at(values: list[float]) -> float:
        for p, v in zip(params, values, strict=True):
            p.data = v
        return (sum(cross_entropy(model(x), y) for x, y in data) / len(data)).data

    start = [p.data for p in params]
    numeric = finite_differences(loss_at, start)
    for p, v in zip(params, start, strict=True):
        p.data = v
    model.zero_grad()
    (sum(cross_entropy(model(x), y) for x, y in data) / len(data)).backward()
    assert [p.grad for p in params] == pytest.approx(numeric, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("logits", [[0.5, -1.0, 2.0], [1000.0, 999.0, -5.0], [-800.0, -801.0], [3.0]])
def test_softmax_and_cross_entropy_match_torch_and_are_stable(logits):
    for target in range(len(logits)):
        z = [Value(v) for v in logits]
        probs = softmax(z)
        loss = cross_entropy(z, target)
        loss.backward()
        zt = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
        ref_loss = F.cross_entropy(zt[None], torch.tensor([target]))
        ref_loss.backward()
        assert [p.data for p in probs] == pytest.approx(torch.softmax(zt, 0).tolist(), rel=1e-12, abs=1e-300)
        assert loss.data == pytest.approx(ref_loss.item(), rel=1e-12, abs=1e-12)
        # dL/dz = softmax(z) - onehot(target), the gradient every classifier in the course uses
        assert [v.grad for v in z] == pytest.approx(zt.grad.tolist(), rel=1e-12, abs=1e-12)


def test_cross_entropy_stays_finite_when_the_target_probability_underflows():
    loss = cross_entropy([Value(0.0), Value(1000.0)], 0)
    assert loss.data == pytest.approx(1000.0) and math.isfinite(loss.data)


def test_softmax_gradient_matches_torch():
    z = [Value(v) for v in (0.3, -0.2, 1.5, 0.0)]
    weights = [0.1, -2.0, 0.7, 1.0]
    sum(w * p for w, p in zip(weights, softmax(z), strict=True)).backward()
    zt = torch.tensor([0.3, -0.2, 1.5, 0.0], dtype=torch.float64, requires_grad=True)
    (torch.tensor(weights, dtype=torch.float64) * torch.softmax(zt, 0)).sum().backward()
    assert [v.grad for v in z] == pytest.approx(zt.grad.tolist(), rel=1e-12, abs=1e-15)


def test_initialisation_is_seeded_and_bounded():
    a, b, c = MLP(3, [5, 2], seed=11), MLP(3, [5, 2], seed=11), MLP(3, [5, 2], seed=12)
    assert [p.data for p in a.parameters()] == [p.data for p in b.parameters()]
    assert [p.data for p in a.parameters()] != [p.data for p in c.parameters()]
    assert len(a.parameters()) == 3 * 5 + 5 + 5 * 2 + 2
    for layer in a.layers:
        bound = 1 / math.sqrt(len(layer.neurons[0].w))
        assert all(abs(p.data) <= bound for p in layer.parameters())
    assert [p.data for p in Linear(2, 2, seed=random.Random(5)).parameters()] == \
        [p.data for p in Linear(2, 2, seed=5).parameters()]
    assert [layer.neurons[0].activation for layer in a.layers] == ["tanh", None]  # logits come out linear


def test_zero_grad_and_parameters():
    neuron = Neuron(2, activation="relu", seed=0)
    assert isinstance(neuron, Module) and len(neuron.parameters()) == 3
    neuron([1.0, 2.0]).backward()
    neuron.zero_grad()
    assert all(p.grad == 0.0 for p in neuron.parameters())
    assert Module().parameters() == []


# --- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "error", "message"), [
    (lambda: Value(0.0).log(), ValueError, "positive"),
    (lambda: Value(-1.0).log(), ValueError, "positive"),
    (lambda: Value(2.0) ** Value(2.0), TypeError, "constant"),
    (lambda: 2.0 ** Value(2.0), TypeError, "constant exponents"),
    (lambda: Value(2.0) ** "2", TypeError, "exponent"),
    (lambda: Value(-2.0) ** 0.5, ValueError, "integer exponent"),
    (lambda: Value(0.0) ** -1, ValueError, "infinite"),
    (lambda: Value(1.0) / 0, ValueError, "division by zero"),
    (lambda: 1.0 / Value(0.0), ValueError, "division by zero"),
    (lambda: Value(1000.0).exp(), ValueError, "overflows"),
    (lambda: Value("3"), TypeError, "one Python number"),
    (lambda: Value([1.0, 2.0]), TypeError, "list of Values"),
    (lambda: Value(Value(1.0)), TypeError, "one Python number"),
    (lambda: Value(1.0) + "a", TypeError, "unsupported operand"),
    (lambda: None * Value(1.0), TypeError, "unsupported operand"),
    (lambda: topological_order(3.0), TypeError, "needs a Value"),
    (lambda: softmax([]), ValueError, "at least one"),
    (lambda: cross_entropy([], 0), ValueError, "at least one"),
    (lambda: cross_entropy([Value(1.0), Value(2.0)], 2), ValueError, "outside"),
    (lambda: cross_entropy([Value(1.0), Value(2.0)], -1), ValueError, "outside"),
    (lambda: cross_entropy([Value(1.0)], 0.0), TypeError, "int class index"),
    (lambda: Linear(3, 2)([1.0, 2.0]), ValueError, "takes 3 inputs"),
    (lambda: Neuron(0), ValueError, "n_in must be a positive integer"),
    (lambda: Neuron(2, activation="sigmoid"), ValueError, "unknown activation"),
    (lambda: Linear(2, 0), ValueError, "n_out must be a positive integer"),
    (lambda: MLP(2, []), ValueError, "at least one layer"),
])
def test_bad_input_gives_a_clear_error(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_edge_cases_of_pow_are_handled():
    x = Value(0.0)
    y = x**2 + x**0 + x**1
    y.backward()
    assert (y.data, x.grad) == (1.0, 1.0)  # d/dx (x^2 + 1 + x) at 0
    z = Value(-2.0)
    (z**3).backward()
    assert z.grad == 12.0
