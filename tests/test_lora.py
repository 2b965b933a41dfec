"""LoRA (lmcourse.lora) against Hugging Face peft's LoRA layer, and inside the course's GPT."""

import copy

import pytest
import torch
import torch.nn as nn

from lmcourse.lora import LoRALinear, add_lora, lora_parameters, merge_lora
from lmcourse.models import GPT, GPTConfig

peft = pytest.importorskip("peft")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 20)
        self.out = nn.Linear(20, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.fc(x)))


@pytest.mark.parametrize("r, alpha", [(1, 1.0), (4, 8.0), (8, 32.0)])
def test_lora_layer_equals_peft_outputs_gradients_and_merge(r, alpha):
    """The same base weights and the same A, B (random, so that the update is not zero): the same outputs, the same
    gradients for A, B and the input, and the same merged layer as peft's merge_and_unload."""
    torch.manual_seed(0)
    base = TwoLayers().double()
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=["fc"])
    reference = peft.get_peft_model(copy.deepcopy(base), config)  # the same base weights
    theirs = reference.base_model.model.fc
    with torch.no_grad():
        theirs.lora_B["default"].weight.normal_()
    ours = LoRALinear(base.fc, r=r, alpha=alpha)
    with torch.no_grad():
        ours.A.copy_(theirs.lora_A["default"].weight)
        ours.B.copy_(theirs.lora_B["default"].weight)
    assert torch.equal(ours.base.weight, theirs.base_layer.weight) and ours.scaling == theirs.scaling["default"]

    x = torch.randn(5, 7, 12, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y_ours, y_theirs = ours(x), theirs(x2)
    assert (y_ours - y_theirs).abs().max() < 1e-12
    g = torch.randn_like(y_ours)
    y_ours.backward(g)
    y_theirs.backward(g)
    assert (ours.A.grad - theirs.lora_A["default"].weight.grad).abs().max() < 1e-12
    assert (ours.B.grad - theirs.lora_B["default"].weight.grad).abs().max() < 1e-12
    assert (x.grad - x2.grad).abs().max() < 1e-12
    assert ours.base.weight.grad is None  # frozen

    merged_theirs = reference.merge_and_unload().fc
    merged_ours = ours.merged()
    assert (merged_ours.weight - merged_theirs.weight).abs().max() < 1e-12
    assert torch.equal(merged_ours.bias, merged_theirs.bias)
    assert (ours.weight - merged_ours.weight).abs().max() < 1e-12  # the effective weight is the merged one


def test_a_fresh_lora_layer_is_the_pretrained_layer_and_its_init_matches_peft():
    torch.manual_seed(1)
    base = nn.Linear(16, 24)
    lora = LoRALinear(base, r=4, alpha=8)
    x = torch.randn(3, 16)
    assert torch.equal(lora(x), base(x))  # B = 0: training starts at the pretrained model
    bound = 1 / 16 ** 0.5  # kaiming_uniform(a=sqrt(5)) on (r, in): U(-1/sqrt(in), 1/sqrt(in)), as peft and nn.Linear
    assert lora.A.abs().max() <= bound and lora.A.std() > bound / 3


def test_lora_in_the_gpt_trains_only_the_update_and_merges_to_the_same_logits():
    torch.manual_seed(2)
    model = GPT(GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=16))
    x = torch.randint(17, (3, 8), generator=torch.Generator().manual_seed(0))
    before = model(x)[0]
    add_lora(model, ("q_proj", "v_proj", "fc"), r=2, alpha=4)
    assert torch.equal(model(x)[0], before)  # B = 0
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == 3 * 2 * 2 and all(n.endswith((".A", ".B")) for n in trainable)
    assert len(lora_parameters(model)) == len(trainable)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.normal_()
    adapted = model(x)[0]
    assert (adapted - before).abs().max() > 1e-3  # the update reaches the logits (the stacked q, k, v product too)
    _, loss = model(x, x)
    loss.backward()
    assert all(p.grad is not None for p in lora_parameters(model))
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert (model(x)[0] - adapted).abs().max() < 1e-5


def test_bad_lora_settings_are_explained():
    with pytest.raises(ValueError, match="adapts an nn.Linear"):
        LoRALinear(nn.Embedding(3, 4))
    with pytest.raises(ValueError, match="r=9 is larger than the layer allows: min\\(in, out\\) = 8"):
        LoRALinear(nn.Linear(8, 16), r=9)
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        LoRALinear(nn.Linear(8, 16), r=2, alpha=0)
    with pytest.raises(ValueError, match="no nn.Linear named \\['query'\\].*'fc'"):
        add_lora(TwoLayers(), ("query",))
