"""Pretrained Mamba weights keep their meaning: the RMSNorm option."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from attd_core import MambaBackbone
from attd_core.adapters.norm_affine import NormAffineAdapter
from attd_core.backbones.slots import delta_layer_norm
from attd_core.options import MambaOptions, NormAffineOptions

D_MODEL, N_LAYERS, D_STATE = 32, 2, 8
SHAPE = {"d_model": D_MODEL, "n_layers": N_LAYERS, "d_state": D_STATE}
EPS = 1e-5


def inputs(length: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, length, D_MODEL, generator=torch.Generator().manual_seed(seed))


def rms_formula(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * weight


def randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter moved off its initial value (norm scales start at 1, conv biases
    at 0), so a loader that drops or misplaces one changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("A_log"):
                continue  # keep the modes decaying
            param.add_(0.2 * torch.randn(param.shape, generator=gen))
    return module.eval()


def attd_backbone(seed: int = 0, **options: Any) -> MambaBackbone:
    torch.manual_seed(seed)
    return randomised(MambaBackbone(MambaOptions(**{**SHAPE, **options})), seed)


# -- the norm option ---------------------------------------------------------------------


def test_layer_norm_stays_the_default():
    backbone = MambaBackbone(MambaOptions(**SHAPE))
    assert all(isinstance(layer.norm, torch.nn.LayerNorm) for layer in backbone.layers)
    assert isinstance(backbone.norm_f, torch.nn.LayerNorm)
    assert "norm_f.bias" in backbone.adapter_slots()


def test_rms_norm_scales_by_the_root_mean_square_with_adapter_deltas():
    norm = attd_backbone(norm="rms").norm_f
    assert isinstance(norm, torch.nn.RMSNorm)
    x = inputs()
    shared = torch.randn(D_MODEL)
    per_sample = torch.randn(2, D_MODEL)
    torch.testing.assert_close(norm(x), rms_formula(x, norm.weight))
    torch.testing.assert_close(
        delta_layer_norm(x, norm, {"norm_f.weight": shared}, "norm_f"),
        rms_formula(x, norm.weight + shared),
    )
    torch.testing.assert_close(
        delta_layer_norm(x, norm, {"norm_f.weight": per_sample}, "norm_f"),
        rms_formula(x, (norm.weight + per_sample).unsqueeze(1)),
    )


def test_an_rms_norm_has_a_scale_slot_and_no_bias_slot():
    backbone = attd_backbone(norm="rms")
    slots = backbone.adapter_slots()
    norms = sorted(name for name, slot in slots.items() if slot.kind.startswith("norm_"))
    assert norms == ["layers.0.norm.weight", "layers.1.norm.weight", "norm_f.weight"]
    state = NormAffineAdapter(NormAffineOptions()).init_state(backbone, batch_size=2)
    assert sorted(state) == norms
    with pytest.raises(ValueError, match="'norm_f.bias' names no slot"):
        backbone(inputs(), adapter_state={"norm_f.bias": torch.zeros(D_MODEL)})
