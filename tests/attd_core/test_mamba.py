"""The Mamba backbone: shapes, initialisation, padding, and adapter states as parameter deltas."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from attd_core import Backbone, DeltaSSMAdapter, MambaBackbone, ModelOutput
from attd_core.backbones.mamba import A_UPPER_BOUND
from attd_core.options import DeltaSSMOptions, MambaOptions

D_MODEL, D_STATE, D_INNER = 16, 4, 32
F64 = torch.float64  # an untrained block barely reacts to A: compare deltas far above rounding


def make_backbone(seed: int = 0, dtype: torch.dtype = torch.float32, **overrides) -> MambaBackbone:
    torch.manual_seed(seed)
    options = MambaOptions(**{"d_model": D_MODEL, "n_layers": 2, "d_state": D_STATE, **overrides})
    return MambaBackbone(options).to(dtype).eval()


def make_inputs(
    batch: int = 3, length: int = 9, seed: int = 1, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, D_MODEL, generator=gen, dtype=dtype)


def test_shapes_and_features_output():
    backbone = make_backbone()
    assert isinstance(backbone, Backbone)
    x = make_inputs()
    y = backbone(x)
    assert y.shape == x.shape
    out = backbone(x, return_features=True)
    assert isinstance(out, ModelOutput)
    assert torch.equal(out.features, y) and torch.equal(out.logits, y)
    assert out.stats == {"a_clamped": 0.0}


def test_initial_values():
    backbone = make_backbone(n_layers=4, dt_min=2e-3, dt_max=5e-2)
    for block in backbone.layers:
        rows = torch.arange(1, D_STATE + 1, dtype=torch.float32).expand(D_INNER, D_STATE)
        torch.testing.assert_close(-block.base_A(), rows)
        assert torch.equal(block.D.detach(), torch.ones(D_INNER))
        dt = F.softplus(block.dt_proj.bias.detach())
        assert dt.min() >= 2e-3 * (1 - 1e-5) and dt.max() <= 5e-2 * (1 + 1e-5)
        assert dt.max() / dt.min() > 5, "dt should spread over its range, not sit at one value"
        assert block.dt_rank == math.ceil(D_MODEL / 16)
        assert block.dt_proj.weight.abs().max() <= block.dt_rank**-0.5
        out_bound = 1 / math.sqrt(D_INNER) / math.sqrt(4)
        assert 0.9 * out_bound < block.out_proj.weight.abs().max() <= out_bound * (1 + 1e-6)
        assert block.in_proj.bias is None and block.x_proj.bias is None
        assert block.out_proj.bias is None


def test_right_padding_does_not_change_real_positions():
    backbone = make_backbone()
    x = make_inputs(length=6)
    padded = torch.cat([x, 100 * torch.randn(3, 4, D_MODEL)], dim=1)
    mask = torch.arange(10).expand(3, 10) < 6
    torch.testing.assert_close(backbone(padded, mask=mask)[:, :6], backbone(x), rtol=0, atol=1e-6)


def test_padded_inputs_are_zeroed():
    backbone = make_backbone()
    x = make_inputs(length=8)
    mask = torch.arange(8).expand(3, 8) < torch.tensor([[8], [5], [2]])
    other = torch.where(mask.unsqueeze(-1), x, torch.randn_like(x))
    assert torch.equal(backbone(x, mask=mask), backbone(other, mask=mask))


@pytest.mark.parametrize("batch_size", [None, 3])
def test_fresh_delta_ssm_state_leaves_outputs_bitwise_unchanged(batch_size):
    backbone = make_backbone()
    x = make_inputs()
    state = DeltaSSMAdapter().init_state(backbone, batch_size, generator=torch.Generator())
    assert torch.equal(backbone(x, adapter_state=state), backbone(x))


def test_dense_and_factored_deltas_agree():
    backbone = make_backbone(dtype=F64)
    x = make_inputs(dtype=F64)
    gen = torch.Generator().manual_seed(2)
    u, v = (
        0.3 * torch.randn(3, D_INNER, 2, generator=gen, dtype=F64),
        torch.randn(3, 2, D_STATE, generator=gen, dtype=F64),
    )
    factored = backbone(x, adapter_state={"layers.1.A.U": u, "layers.1.A.V": v})
    dense = backbone(x, adapter_state={"layers.1.A": u @ v})
    half = backbone(
        x, adapter_state={"layers.1.A": u @ v / 2, "layers.1.A.U": u / 2, "layers.1.A.V": v}
    )
    torch.testing.assert_close(factored, dense, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(half, dense, rtol=1e-12, atol=1e-12)
    assert (dense - backbone(x)).abs().max() > 1e-6


def test_each_slot_acts_as_a_delta_on_its_parameter():
    """A delta in the state must give the same output as editing the weight itself."""
    backbone = make_backbone(dtype=F64)
    x = make_inputs(dtype=F64)
    gen = torch.Generator().manual_seed(3)
    delta_A = 0.5 * torch.rand(D_INNER, D_STATE, generator=gen, dtype=F64)  # keeps A <= -0.5
    delta_bias = torch.randn(D_INNER, generator=gen, dtype=F64)
    delta_D = torch.randn(D_INNER, generator=gen, dtype=F64)
    state = {"layers.0.A": delta_A, "layers.0.dt_bias": delta_bias, "layers.1.D": delta_D}
    edited = copy.deepcopy(backbone)
    with torch.no_grad():
        block0 = edited.layers[0]
        block0.A_log.copy_(torch.log(-(block0.base_A() + delta_A)))
        block0.dt_proj.bias += delta_bias
        edited.layers[1].D += delta_D
    adapted = backbone(x, adapter_state=state)
    torch.testing.assert_close(adapted, edited(x), rtol=1e-10, atol=1e-12)
    for key, delta in state.items():  # each delta matters on its own
        assert (backbone(x, adapter_state={key: delta}) - backbone(x)).abs().max() > 1e-6, key


def test_a_per_sample_state_changes_only_its_sample():
    backbone = make_backbone(dtype=F64)
    x = make_inputs(dtype=F64)
    base_A = backbone.layers[0].base_A().detach()
    delta_A, delta_bias = (
        torch.zeros(3, D_INNER, D_STATE, dtype=F64),
        torch.zeros(3, D_INNER, dtype=F64),
    )
    delta_A[1], delta_bias[1] = -0.9 * base_A, 4.0  # slower decay, larger steps
    base = backbone(x)
    adapted = backbone(x, adapter_state={"layers.0.A": delta_A, "layers.0.dt_bias": delta_bias})
    torch.testing.assert_close(adapted[[0, 2]], base[[0, 2]], rtol=1e-12, atol=1e-12)
    assert (adapted[1] - base[1]).abs().max() > 1e-3


def test_adapted_A_is_clamped_below_zero_and_counted():
    backbone = make_backbone()
    x = make_inputs()
    delta = torch.zeros(3, D_INNER, D_STATE)
    delta[0, :2] = 10.0  # two rows of sample 0 pushed far above zero
    out = backbone(x, adapter_state={"layers.1.A": delta}, return_features=True)
    assert out.stats["a_clamped"] == 2 * D_STATE
    assert torch.isfinite(out.features).all()
    at_bound = torch.full((3, D_INNER, D_STATE), 0.0)
    at_bound[0, :2] = A_UPPER_BOUND - backbone.layers[1].base_A()[:2].detach()
    out_at = backbone(x, adapter_state={"layers.1.A": at_bound}, return_features=True)
    torch.testing.assert_close(out_at.features, out.features)


def test_unknown_state_key_names_the_key_and_the_valid_slots():
    backbone = make_backbone()
    with pytest.raises(ValueError, match=r"'layers\.2\.A\.U'.*layers\.0\.A.*layers\.1\.D"):
        backbone(make_inputs(), adapter_state={"layers.2.A.U": torch.zeros(D_INNER, 1)})


def test_malformed_deltas_are_rejected():
    backbone = make_backbone()
    with pytest.raises(ValueError, match="shape"):
        backbone(make_inputs(), adapter_state={"layers.0.D": torch.zeros(D_STATE)})
    with pytest.raises(ValueError, match="only one of"):
        backbone(make_inputs(), adapter_state={"layers.0.A.U": torch.zeros(D_INNER, 1)})


def test_adapter_slots_describe_bases_without_exposing_weights():
    backbone = make_backbone()
    slots = backbone.adapter_slots()
    assert sorted(slots) == sorted(
        f"layers.{i}.{p}" for i in range(2) for p in ("A", "dt_bias", "D")
    )
    assert slots["layers.0.A"].upper_bound == A_UPPER_BOUND
    assert slots["layers.0.D"].upper_bound is None
    torch.testing.assert_close(slots["layers.1.A"].base, backbone.layers[1].base_A())
    assert all(not slot.base.requires_grad for slot in slots.values())


def test_gradients_reach_base_weights_and_adapter_state():
    backbone = make_backbone()
    state = DeltaSSMAdapter(DeltaSSMOptions(per_sample=True)).init_state(
        backbone, 3, generator=torch.Generator()
    )
    for tensor in state.values():
        tensor.requires_grad_()
    backbone(make_inputs(), adapter_state=state).square().sum().backward()
    assert backbone.layers[0].A_log.grad is not None
    assert state["layers.0.A.U"].grad.abs().sum() > 0


def test_dropout_on_block_outputs_only_in_training():
    backbone = make_backbone(dropout=0.5)
    x = make_inputs()
    assert torch.equal(backbone(x), backbone(x))
    backbone.train()
    assert not torch.equal(backbone(x), backbone(x))
