"""The GPT model (chapter 7): layers against their formulas and torch.nn, GPT against Hugging Face's GPT-2."""

import dataclasses
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from lmcourse.models import GPT, EncoderDecoder, GPTConfig
from lmcourse.models.layers import MLP, RMSNorm, SwiGLU, sinusoidal_positions
from lmcourse.train import TrainConfig, train

V, T = 13, 8


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run on one thread: these tiny tensors gain nothing from more, and on a loaded machine OpenMP's waiting
    threads make small ops many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**kwargs) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{"vocab_size": V, "block_size": T, "n_layer": 2, "n_head": 2, "n_embd": 16, **kwargs}))


def ids(B=3, T_=T, seed=1, vocab=V):
    return torch.randint(0, vocab, (B, T_), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------- layers


def test_rmsnorm_equals_formula_and_torch():
    norm = RMSNorm(6).double()
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    assert (norm(x) - expected).abs().max() < 1e-12
    if hasattr(nn, "RMSNorm"):  # torch >= 2.4
        ref = nn.RMSNorm(6, eps=1e-5, dtype=torch.float64)
        ref.load_state_dict(norm.state_dict())
        assert (norm(x) - ref(x)).abs().max() < 1e-12


def test_swiglu_and_mlp_equal_their_formulas():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    f = SwiGLU(12).double()
    W1, W2, W3 = f.w1.weight, f.w2.weight, f.w3.weight
    gate = x @ W1.T + f.w1.bias
    expected = ((gate * torch.sigmoid(gate)) * (x @ W3.T + f.w3.bias)) @ W2.T + f.w2.bias
    assert (f(x) - expected).abs().max() < 1e-12
    mlp = MLP(12).double()
    h = x @ mlp.fc.weight.T + mlp.fc.bias
    gelu = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))  # GPT-2's gelu
    assert (mlp(x) - (gelu @ mlp.proj.weight.T + mlp.proj.bias)).abs().max() < 1e-12
    relu2 = MLP(12, activation="relu2").double()
    h = x @ relu2.fc.weight.T + relu2.fc.bias
    assert (relu2(x) - (torch.clamp(h, min=0) ** 2 @ relu2.proj.weight.T + relu2.proj.bias)).abs().max() < 1e-12
    with pytest.raises(ValueError, match="'gelu' or 'relu2'"):
        MLP(12, activation="relu")


def test_qk_norm_equals_its_formula():
    """With QK-norm, each head's q and k are divided by their RMS and scaled by learned gains before the scores."""
    model = tiny(qk_norm=True, pos="rope", n_layer=1).double()
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.q_norm.weight.normal_()
        attn.k_norm.weight.normal_()
    x = torch.randn(2, T, 16, dtype=torch.float64)
    B, H, hd = 2, 2, 8
    heads = lambda w: (x @ w.T + 0).view(B, T, H, hd).transpose(1, 2)  # noqa: E731 -- (B, H, T, hd)
    q = heads(attn.q_proj.weight) + attn.q_proj.bias.view(H, 1, hd)
    k = heads(attn.k_proj.weight) + attn.k_proj.bias.view(H, 1, hd)
    v = heads(attn.v_proj.weight) + attn.v_proj.bias.view(H, 1, hd)
    rms = lambda t: torch.sqrt(t.pow(2).mean(-1, keepdim=True) + 1e-5)  # noqa: E731
    q, k = model.rope(q / rms(q) * attn.q_norm.weight), model.rope(k / rms(k) * attn.k_norm.weight)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(~torch.ones(T, T).tril().bool(), -math.inf)
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, 16)
    expected = attn.o_proj(y)
    assert (attn(x, model.rope) - expected).abs().max() < 1e-12


def test_sinusoidal_positions_equal_formula():
    pe = sinusoidal_positions(7, 6)
    for t in range(7):
        for i in range(3):
            angle = t / 10000 ** (2 * i / 6)
            assert abs(pe[t, 2 * i] - math.sin(angle)) < 1e-6 and abs(pe[t, 2 * i + 1] - math.cos(angle)) < 1e-6


# ----------------------------------------------------------------------------------- Hugging Face GPT-2


def hf_gpt2(seed=0, **kwargs) -> GPT2LMHeadModel:
    """A random HF GPT-2 from a local config (no download), with non-trivial biases and norm gains."""
    torch.manual_seed(seed)
    config = GPT2Config(bos_token_id=0, eos_token_id=0, **kwargs)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:  # biases and LayerNorm parameters start at 0 / 1: randomise them
                p.add_(0.1 * torch.randn_like(p))
    return model


SHAPES = [dict(n_layer=1, n_head=1, n_embd=8, vocab_size=17, n_positions=8),
          dict(n_layer=2, n_head=4, n_embd=32, vocab_size=50, n_positions=16),
          dict(n_layer=3, n_head=2, n_embd=24, vocab_size=31, n_positions=12, activation_function="gelu_pytorch_tanh"),
          dict(n_layer=2, n_head=3, n_embd=12, vocab_size=20, n_positions=10, tie_word_embeddings=False)]


@pytest.mark.parametrize("shape", SHAPES)
def test_from_hf_gives_the_same_logits_and_loss(shape):
    hf = hf_gpt2(**shape)
    ours = GPT.from_hf(hf)
    assert not ours.training
    assert (ours.head.weight is ours.wte.weight) == hf.config.tie_word_embeddings
    x = ids(B=3, T_=shape["n_positions"], vocab=shape["vocab_size"])
    with torch.no_grad():
        expected = hf(x, labels=x)  # HF shifts the labels inside
        logits, _ = ours(x)
        # our targets are already shifted: position t predicts x[t+1]; the last position has none (-1)
        _, loss = ours(x, torch.cat([x[:, 1:], torch.full((3, 1), -1)], dim=1))
    assert (logits - expected.logits).abs().max() < 1e-4
    assert abs(loss.item() - expected.loss.item()) < 1e-5
    assert ours.num_params(non_embedding=False) == hf.num_parameters()


def test_from_hf_keeps_dtype_and_training_mode():
    hf = hf_gpt2(**SHAPES[1]).double().train()
    ours = GPT.from_hf(hf)
    assert ours.training and next(ours.parameters()).dtype == torch.float64
    x = ids(vocab=50, T_=16)
    assert (ours.eval()(x)[0] - hf.eval()(x).logits).abs().max() < 1e-12


@pytest.mark.parametrize("setting,match", [
    (dict(activation_function="relu"), "activation_function"),
    (dict(n_inner=20), "n_inner"),
    (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
    (dict(reorder_and_upcast_attn=True), "reorder_and_upcast_attn"),
    (dict(layer_norm_epsilon=1e-6), "layer_norm_epsilon"),
    (dict(scale_attn_weights=False), "scale_attn_weights"),
    (dict(attn_pdrop=0.2), "pdrop"),
])
def test_from_hf_refuses_settings_we_do_not_implement(setting, match):
    hf = hf_gpt2(**{**SHAPES[0], **setting})
    with pytest.raises(ValueError, match=match):
        GPT.from_hf(hf)


def test_from_hf_refuses_other_models():
    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        GPT.from_hf(nn.Linear(2, 2))


# ----------------------------------------------------------------------------------- the model


def test_config_round_trips_and_rejects_bad_values():
    config = GPTConfig(V, T, 2, 2, 16, pos="rope", n_kv_head=1, window=3)
    assert GPTConfig(**dataclasses.asdict(config)) == config
    bad = [dict(vocab_size=0), dict(n_head=3), dict(pos="alibi"), dict(norm="batchnorm"), dict(mlp="relu"),
           dict(n_kv_head=3, n_head=4), dict(window=0), dict(window=2, causal=False), dict(dropout=1.0),
           dict(n_layer=2.0), dict(pos="rope", n_embd=12, n_head=4), dict(n_kv_head=True), dict(window=True),
           dict(dropout="0.1"), dict(dropout=True)]
    for kwargs in bad:
        with pytest.raises(ValueError):
            GPTConfig(**{"vocab_size": V, "block_size": T, "n_layer": 2, "n_head": 2, "n_embd": 16, **kwargs})


def test_loss_is_mean_cross_entropy_and_ignores_minus_one():
    model = tiny()
    x, y = ids(seed=1), ids(seed=2)
    logits, loss = model(x, y)
    assert logits.shape == (3, T, V)
    assert torch.allclose(loss, F.cross_entropy(logits.reshape(-1, V), y.reshape(-1)))
    y_masked = y.clone()
    y_masked[:, :3] = -1
    _, loss_masked = model(x, y_masked)
    assert torch.allclose(loss_masked, F.cross_entropy(logits[:, 3:].reshape(-1, V), y[:, 3:].reshape(-1)))
    assert abs(loss.item() - math.log(V)) < 0.1  # small init: close to uniform


def test_bad_input_raises_value_error():
    model = tiny()
    with pytest.raises(ValueError, match="block_size"):
        model(ids(T_=T + 1))
    with pytest.raises(ValueError, match="integer"):
        model(ids().float())
    with pytest.raises(ValueError, match="2-D"):
        model(ids()[0])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(ids() + V)
    with pytest.raises(ValueError, match="shape"):
        model(ids(), ids()[:, :-1])
    with pytest.raises(ValueError, match="-1"):
        model(ids(), ids() - 2)
    with pytest.raises(ValueError, match="integer"):
        model(ids(), ids().float())



def test_off_the_cpu_the_checks_read_no_values():
    """On CUDA, reading min/max would make the host wait for the GPU at every step. The meta device holds no
    values at all (reading one raises) and, like CUDA, is not in _READ_VALUES_ON, so a forward pass on it shows
    that only dtype and shape are checked there."""
    model = tiny().to("meta")
    x = ids().to("meta")
    logits, loss = model(x, x)
    assert logits.shape == (3, T, V) and loss.device.type == "meta"
    with pytest.raises(ValueError, match="integer"):
        model(x.float())
    with pytest.raises(ValueError, match=r"2-D with shape \(B, T\), got shape \(8,\)"):
        model(x[0])
    with pytest.raises(ValueError, match="shape"):
        model(x, x[:, :-1])

@pytest.mark.parametrize("kwargs", [{}, {"pos": "rope"}, {"pos": "sinusoidal"}, {"n_kv_head": 1},
                                    {"causal": False}, {"window": 2, "n_layer": 1}])
def test_causality(kwargs):
    """Changing token t changes the logits at positions >= t only (decoder); with causal=False also before t;
    with a window w and one layer, only at positions t..t+w-1."""
    model = tiny(**kwargs).eval()
    x = ids(B=1)
    t = 4
    x2 = x.clone()
    x2[0, t] = (x[0, t] + 1) % V
    with torch.no_grad():
        changed = (model(x)[0] - model(x2)[0]).abs().amax(-1)[0] > 1e-6  # (T,)
    if kwargs.get("causal", True) is False:
        assert changed.all()
    elif "window" in kwargs:
        assert changed.tolist() == [t <= i < t + kwargs["window"] for i in range(T)]
    else:
        assert changed.tolist() == [i >= t for i in range(T)]


@pytest.mark.parametrize("kwargs", [{}, {"pos": "rope"}, {"pos": "sinusoidal"}, {"norm": "rmsnorm"},
                                    {"mlp": "swiglu"}, {"n_kv_head": 1}, {"window": 3}, {"causal": False},
                                    {"bias": False, "tie_weights": False, "dropout": 0.1},
                                    {"mlp": "relu2", "qk_norm": True}])
def test_every_variant_trains(kwargs):
    model = tiny(**kwargs)
    x, y = ids(B=4, seed=3), ids(B=4, seed=4)
    optimizer = torch.optim.AdamW(model.param_groups(0.1), lr=1e-2)
    losses = []
    for _ in range(15):
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses


@pytest.mark.parametrize("tie", [True, False])
def test_param_groups(tie):
    model = tiny(tie_weights=tie)
    decay, no_decay = model.param_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    ids_of = lambda ps: [id(p) for p in ps]
    assert sorted(ids_of(decay["params"] + no_decay["params"])) == sorted(ids_of(model.parameters()))
    names = {id(p): n for n, p in model.named_parameters()}
    decay_names = {names[id(p)] for p in decay["params"]}
    linear = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert decay_names == (linear if not tie else linear - {"head.weight"})
    assert {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias", "blocks.0.attn.q_proj.bias"} <= {
        names[id(p)] for p in no_decay["params"]}


def test_train_uses_param_groups(monkeypatch):
    model = tiny()
    calls = []
    original = model.param_groups
    monkeypatch.setattr(model, "param_groups", lambda wd: calls.append(wd) or original(wd))
    batches = lambda: (ids(B=2, seed=5), ids(B=2, seed=6))
    train(model, batches, TrainConfig(max_steps=1, weight_decay=0.3), progress=False)
    assert calls == [0.3]


def test_init_is_gpt2s():
    model = GPT(GPTConfig(vocab_size=500, block_size=64, n_layer=8, n_head=4, n_embd=64))
    assert abs(model.wte.weight.std().item() - 0.02) < 2e-3
    assert abs(model.blocks[0].attn.q_proj.weight.std().item() - 0.02) < 2e-3
    assert abs(model.blocks[0].mlp.proj.weight.std().item() - 0.02 / math.sqrt(16)) < 5e-4
    assert abs(model.blocks[0].attn.o_proj.weight.std().item() - 0.02 / math.sqrt(16)) < 5e-4
    assert (model.blocks[0].attn.q_proj.bias == 0).all()
    assert model.num_params() == model.num_params(non_embedding=False) - 64 * 64


# ----------------------------------------------------------------------------------- encoder-decoder


def test_encoder_decoder_masks_and_training():
    torch.manual_seed(0)
    model = EncoderDecoder(GPTConfig(V, T, 2, 2, 16)).eval()
    src, tgt = ids(B=2, seed=7), ids(B=2, seed=8)
    src_mask = torch.arange(T) < torch.tensor([[T], [5]])  # the second source has 3 padding tokens
    with torch.no_grad():
        base, _ = model(src, tgt, src_mask=src_mask)
        tgt2 = tgt.clone()
        tgt2[:, 4] = (tgt[:, 4] + 1) % V
        changed = (model(src, tgt2, src_mask=src_mask)[0] - base).abs().amax(-1) > 1e-6  # (B, T)
        assert changed.tolist() == [[i >= 4 for i in range(T)]] * 2  # the decoder is causal
        src2 = src.clone()
        src2[:, 6] = (src[:, 6] + 1) % V  # a real token of row 0, a padding token of row 1
        changed = (model(src2, tgt, src_mask=src_mask)[0] - base).abs().amax(-1) > 1e-6
        assert changed[0].all() and not changed[1].any()  # every target position sees the whole (real) source
    with pytest.raises(ValueError, match="src_mask"):
        model(src, tgt, src_mask=src_mask.long())
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):  # learn to copy the source
        _, loss = model(src, tgt, targets=src, src_mask=src_mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses


def test_ids_of_a_dtype_the_embedding_cannot_read_are_explained_and_int32_works():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16))
    idx = torch.randint(0, 11, (2, 5))
    for bad in (idx.to(torch.uint8), idx.to(torch.int16)):
        with pytest.raises(ValueError, match=r"idx must hold int64 \(or int32\) token ids.*idx.long\(\)"):
            model(bad)
    with pytest.raises(ValueError, match="idx must be a tensor of integer token ids, got list"):
        model(idx.tolist())
    logits, loss = model(idx, idx)
    logits32, loss32 = model(idx.int(), idx.int())  # int32 ids and targets give the same numbers
    assert torch.equal(logits32, logits) and torch.equal(loss32, loss)
