"""The hybrid backbone (Mamba and attention layers interleaved) and the backbone plugins."""

from __future__ import annotations

import pytest
import torch

import attd_core
from attd_core import Backbone, DeltaSSMAdapter
from attd_core.backbones.hybrid import HybridBackbone
from attd_core.backbones.mamba import MambaLayer
from attd_core.backbones.transformer import WEIGHT_SLOTS, TransformerLayer
from attd_core.options import DeltaSSMOptions, HybridOptions

D_MODEL = 16
F64 = torch.float64
MAMBA_SLOTS = (
    "A", "A_log", "dt_bias", "D", "h0", "in_proj", "x_proj", "dt_proj", "out_proj",
    "norm.weight", "norm.bias",
)  # fmt: skip
ATTENTION_SLOTS = (*WEIGHT_SLOTS, "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias")


def make_backbone(dtype: torch.dtype = F64, **overrides) -> HybridBackbone:
    torch.manual_seed(0)
    options = {"d_model": D_MODEL, "n_layers": 5, "pattern": "MMA", "d_state": 4, **overrides}
    return HybridBackbone(HybridOptions(**options)).to(dtype).eval()


def make_inputs(batch: int = 3, length: int = 7) -> torch.Tensor:
    return torch.randn(batch, length, D_MODEL, generator=torch.Generator().manual_seed(1)).to(F64)


def test_layers_follow_the_pattern_and_slots_are_their_union():
    backbone = make_backbone()
    assert isinstance(backbone, Backbone)
    kinds = [type(layer) for layer in backbone.layers]
    assert kinds == [MambaLayer, MambaLayer, TransformerLayer, MambaLayer, MambaLayer]
    expected = [f"layers.{i}.{p}" for i in (0, 1, 3, 4) for p in MAMBA_SLOTS]
    expected += [f"layers.2.{name}" for name in ATTENTION_SLOTS]
    expected += ["norm_f.weight", "norm_f.bias"]
    slots = backbone.adapter_slots()
    assert sorted(slots) == sorted(expected)
    kinds = {name: slot.kind for name, slot in slots.items()}
    assert kinds["layers.0.A"] == "A" and kinds["layers.0.h0"] == "initial_state"
    assert kinds["layers.0.in_proj"] == kinds["layers.2.q"] == "weight"
    assert kinds["layers.0.norm.weight"] == kinds["layers.2.norm1.weight"] == "norm_weight"
    assert kinds["norm_f.bias"] == "norm_bias"
    bidirectional = make_backbone(bidirectional=True, pattern="AM", n_layers=2)
    assert set(bidirectional.adapter_slots()) >= {
        "layers.1.reverse.A",
        "layers.1.reverse.h0",
        "layers.1.reverse.out_proj",
        "layers.0.q",
        "layers.0.norm2.bias",
    }


def test_pattern_needs_a_mamba_layer():
    with pytest.raises(ValueError, match="pattern"):
        HybridOptions(pattern="AA")
    with pytest.raises(ValueError, match="pattern"):
        HybridOptions(pattern="MXA")


def test_forward_adapts_both_kinds_of_layer():
    backbone = make_backbone()
    x = make_inputs()
    gen = torch.Generator().manual_seed(3)
    delta_ssm = DeltaSSMAdapter(DeltaSSMOptions(rank=2, init_scale=1.0))
    state = delta_ssm.init_state(backbone, 3, generator=gen)
    assert {key.rsplit(".", 2)[0] for key in state} == {f"layers.{i}" for i in (0, 1, 3, 4)}
    v = torch.randn(3, 2, D_MODEL, generator=gen, dtype=F64)
    state |= {"layers.2.v.U": torch.zeros(3, D_MODEL, 2, dtype=F64), "layers.2.v.V": v}
    base = backbone(x)
    assert torch.equal(backbone(x, adapter_state=state), base)  # fresh: U = 0 everywhere
    mamba_only = dict(state, **{"layers.3.A_log.U": torch.randn(3, 32, 2, dtype=F64)})
    attention_only = dict(state, **{"layers.2.v.U": torch.randn(3, D_MODEL, 2, dtype=F64)})
    for adapted in (mamba_only, attention_only):
        assert (backbone(x, adapter_state=adapted) - base).abs().max() > 1e-6
    with pytest.raises(ValueError, match=r"'layers\.2\.A'"):
        backbone(x, adapter_state={"layers.2.A": torch.zeros(32, 4, dtype=F64)})


def test_right_padding_and_scan_backend():
    backbone = make_backbone(scan_backend="reference", causal=True)
    assert backbone.scan_backend_used is None
    x = make_inputs(batch=1, length=5)
    padded = torch.cat([x, 100 * torch.randn(1, 3, D_MODEL, dtype=F64)], 1)
    out = backbone(padded, mask=torch.arange(8).unsqueeze(0) < 5)
    torch.testing.assert_close(out[:, :5], backbone(x), rtol=0, atol=1e-12)
    assert backbone.scan_backend_used == "reference"


@pytest.mark.parametrize("name", ["mamba", "transformer", "hybrid"])
def test_backbones_are_registered_plugins(name):
    backbone = attd_core.get_plugin_manager().create("backbone", name, {"d_model": 8})
    assert isinstance(backbone, Backbone) and backbone.d_model == 8
    x = torch.randn(2, 4, 8)
    assert backbone(x, mask=torch.ones(2, 4, dtype=torch.bool)).shape == x.shape
