"""The Transformer backbone: shapes, padding, causality, and LoRA and norm states as deltas."""

from __future__ import annotations

import copy

import pytest
import torch

from attd_core import Backbone
from attd_core.backbones.transformer import WEIGHT_SLOTS, TransformerBackbone
from attd_core.options import TransformerOptions

D_MODEL, HIDDEN, RANK = 16, 32, 2
F64 = torch.float64
SHAPES = {  # slot -> (out, in)
    "q": (D_MODEL, D_MODEL),
    "k": (D_MODEL, D_MODEL),
    "v": (D_MODEL, D_MODEL),
    "out": (D_MODEL, D_MODEL),
    "mlp_in": (HIDDEN, D_MODEL),
    "mlp_out": (D_MODEL, HIDDEN),
}
NORMS = ("norm1", "norm2")


def make_backbone(seed: int = 0, dtype: torch.dtype = F64, **overrides) -> TransformerBackbone:
    torch.manual_seed(seed)
    options = {"d_model": D_MODEL, "n_layers": 2, "n_heads": 4, "mlp_ratio": 2, **overrides}
    return TransformerBackbone(TransformerOptions(**options)).to(dtype).eval()


def make_inputs(batch: int = 3, length: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, length, D_MODEL, generator=torch.Generator().manual_seed(seed)).to(
        F64
    )


def lora_state(backbone, batch_size: int | None, seed: int = 2, zero_u: bool = False) -> dict:
    """Random U and V on every slot (U = 0 if `zero_u`, as a fresh LoRA state starts)."""
    gen = torch.Generator().manual_seed(seed)
    lead = () if batch_size is None else (batch_size,)
    state = {}
    for name, slot in backbone.adapter_slots().items():
        if slot.kind != "weight":
            continue
        out, in_ = slot.base.shape
        u = 0.3 * torch.randn(*lead, out, RANK, generator=gen, dtype=F64)
        state[f"{name}.U"] = torch.zeros_like(u) if zero_u else u
        state[f"{name}.V"] = torch.randn(*lead, RANK, in_, generator=gen, dtype=F64)
    return state


def test_shapes_and_slots():
    backbone = make_backbone()
    assert isinstance(backbone, Backbone)
    x = make_inputs()
    assert backbone(x).shape == x.shape
    slots = backbone.adapter_slots()
    weights = [f"layers.{i}.{name}" for i in range(2) for name in WEIGHT_SLOTS]
    norms = [f"layers.{i}.{n}" for i in range(2) for n in NORMS] + ["norm_f"]
    norm_parts = [f"{norm}.{part}" for norm in norms for part in ("weight", "bias")]
    assert sorted(slots) == sorted(weights + norm_parts)
    for name, slot in slots.items():
        assert slot.name == name and slot.upper_bound is None and not slot.base.requires_grad
        if name in weights:
            assert slot.kind == "weight" and slot.base.shape == SHAPES[name.split(".")[-1]]
        else:
            assert slot.kind == f"norm_{name.split('.')[-1]}" and slot.base.shape == (D_MODEL,)
    assert torch.equal(slots["layers.1.mlp_in"].base, backbone.layers[1].mlp_in.weight)
    assert torch.equal(slots["layers.1.norm2.bias"].base, backbone.layers[1].norm2.bias)
    assert torch.equal(slots["norm_f.weight"].base, backbone.norm_f.weight)


def test_norm_deltas_equal_editing_the_norms():
    backbone = make_backbone()
    x = make_inputs()
    gen = torch.Generator().manual_seed(4)
    names = [f"layers.{i}.{n}" for i in range(2) for n in NORMS] + ["norm_f"]
    state = {
        f"{name}.{part}": torch.randn(D_MODEL, generator=gen, dtype=F64)
        for name in names
        for part in ("weight", "bias")
    }
    edited = copy.deepcopy(backbone)
    with torch.no_grad():
        for name, module in edited.named_modules():
            if name in names:
                module.weight += state[f"{name}.weight"]
                module.bias += state[f"{name}.bias"]
    adapted = backbone(x, adapter_state=state)
    torch.testing.assert_close(adapted, edited(x), rtol=1e-10, atol=1e-12)
    per_sample = {key: torch.stack([torch.zeros_like(d), d, d]) for key, d in state.items()}
    batched = backbone(x, adapter_state=per_sample)
    torch.testing.assert_close(batched[1:], adapted[1:], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(batched[0], backbone(x)[0], rtol=1e-10, atol=1e-12)
    for key, delta in state.items():  # each delta matters on its own
        assert (backbone(x, adapter_state={key: delta}) - backbone(x)).abs().max() > 1e-6, key


def test_n_heads_must_divide_the_width():
    with pytest.raises(ValueError, match="n_heads"):
        TransformerOptions(d_model=16, n_heads=3)


@pytest.mark.parametrize("causal", [False, True])
def test_padding_never_changes_real_positions(causal):
    backbone = make_backbone(causal=causal)
    x = make_inputs(batch=1, length=5)
    noise = 100 * torch.randn(1, 3, D_MODEL, dtype=F64)
    alone = backbone(x)
    right = backbone(torch.cat([x, noise], 1), mask=torch.arange(8).unsqueeze(0) < 5)
    left = backbone(torch.cat([noise, x], 1), mask=torch.arange(8).unsqueeze(0) >= 3)
    torch.testing.assert_close(right[:, :5], alone, rtol=0, atol=1e-12)
    torch.testing.assert_close(left[:, 3:], alone, rtol=0, atol=1e-12)
    assert torch.isfinite(left).all(), "a causal row of pads before the first real token"


def test_padded_inputs_are_ignored_entirely():
    backbone = make_backbone()
    x = make_inputs()
    mask = torch.arange(7).expand(3, 7) < torch.tensor([[7], [4], [0]])  # one sample all pads
    other = torch.where(mask.unsqueeze(-1), x, torch.randn_like(x))
    out = backbone(x, mask=mask)
    assert torch.equal(out, backbone(other, mask=mask)) and torch.isfinite(out).all()


def test_causal_flag_hides_later_tokens():
    x = make_inputs()
    later = x.clone()
    later[:, -1] = make_inputs(length=1, seed=5)[:, 0]
    causal, full = make_backbone(causal=True), make_backbone(causal=False)
    torch.testing.assert_close(causal(later)[:, :-1], causal(x)[:, :-1], rtol=0, atol=1e-12)
    assert (full(later)[:, 0] - full(x)[:, 0]).abs().max() > 1e-6
    assert (causal(later)[:, -1] - causal(x)[:, -1]).abs().max() > 1e-6


@pytest.mark.parametrize("batch_size", [None, 3])
def test_fresh_lora_state_leaves_outputs_bitwise_unchanged(batch_size):
    backbone = make_backbone(dtype=torch.float32)
    x = make_inputs().float()
    state = {k: v.float() for k, v in lora_state(backbone, batch_size, zero_u=True).items()}
    mask = torch.arange(7).expand(3, 7) < torch.tensor([[7], [4], [2]])
    assert torch.equal(backbone(x, adapter_state=state), backbone(x))
    assert torch.equal(backbone(x, mask, adapter_state=state), backbone(x, mask))


def test_lora_deltas_equal_editing_the_weights():
    backbone = make_backbone()
    x = make_inputs()
    state = lora_state(backbone, None)
    edited = copy.deepcopy(backbone)
    with torch.no_grad():
        for i, layer in enumerate(edited.layers):
            for name in WEIGHT_SLOTS:
                slot = f"layers.{i}.{name}"
                getattr(layer, name).weight += state[f"{slot}.U"] @ state[f"{slot}.V"]
    adapted = backbone(x, adapter_state=state)
    torch.testing.assert_close(adapted, edited(x), rtol=1e-10, atol=1e-12)
    dense = {k[:-2]: state[k] @ state[f"{k[:-2]}.V"] for k in state if k.endswith(".U")}
    torch.testing.assert_close(backbone(x, adapter_state=dense), adapted, rtol=1e-10, atol=1e-12)
    for name in WEIGHT_SLOTS:  # each slot matters on its own
        one = {f"layers.0.{name}.{f}": state[f"layers.0.{name}.{f}"] for f in "UV"}
        assert (backbone(x, adapter_state=one) - backbone(x)).abs().max() > 1e-6, name


def test_a_per_sample_state_changes_only_its_sample():
    backbone = make_backbone()
    x = make_inputs()
    state = lora_state(backbone, 3)
    for key in state:
        if key.endswith(".U"):
            state[key][[0, 2]] = 0
    base, adapted = backbone(x), backbone(x, adapter_state=state)
    assert torch.equal(adapted[[0, 2]], base[[0, 2]])
    assert (adapted[1] - base[1]).abs().max() > 1e-3


def test_gradients_reach_the_lora_factors():
    backbone = make_backbone()
    state = lora_state(backbone, 3, zero_u=True)
    for tensor in state.values():
        tensor.requires_grad_()
    backbone(make_inputs(), adapter_state=state).square().sum().backward()
    assert state["layers.0.q.U"].grad.abs().sum() > 0
    assert backbone.layers[0].q.weight.grad is not None


def test_bad_states_name_the_problem():
    backbone = make_backbone()
    x = make_inputs()
    with pytest.raises(ValueError, match=r"'layers\.0\.A'.*layers\.0\.q.*layers\.1\.mlp_out"):
        backbone(x, adapter_state={"layers.0.A": torch.zeros(1)})
    with pytest.raises(ValueError, match="only one of"):
        backbone(x, adapter_state={"layers.0.q.U": torch.zeros(D_MODEL, RANK)})
    with pytest.raises(ValueError, match=r"factor V for layers\.0\.mlp_in"):
        backbone(
            x,
            adapter_state={
                "layers.0.mlp_in.U": torch.zeros(HIDDEN, RANK, dtype=F64),
                "layers.0.mlp_in.V": torch.zeros(RANK, HIDDEN, dtype=F64),
            },
        )


def test_dropout_only_in_training():
    backbone = make_backbone(dropout=0.5)
    x = make_inputs()
    assert torch.equal(backbone(x), backbone(x))
    backbone.train()
    assert not torch.equal(backbone(x), backbone(x))
