"""Delta-SSM adapter states: shapes, reproducibility, the norm cap and parameter counts."""

from __future__ import annotations

import pytest
import torch

from attd_core import Adapter, AdapterSlot, ConfigError, DeltaSSMAdapter, MambaBackbone
from attd_core.options import DeltaSSMOptions, MambaOptions

D_INNER, D_STATE, RANK = 32, 4, 3


@pytest.fixture(scope="module")
def backbone() -> MambaBackbone:
    torch.manual_seed(0)
    return MambaBackbone(MambaOptions(d_model=16, n_layers=2, d_state=D_STATE))


def adapter(**overrides) -> DeltaSSMAdapter:
    return DeltaSSMAdapter(DeltaSSMOptions(**{"rank": RANK, **overrides}))


@pytest.mark.parametrize(
    "per_sample, batch_size, lead", [(True, 5, (5,)), (True, None, ()), (False, 5, ())]
)
def test_state_shapes(backbone, per_sample, batch_size, lead):
    state = adapter(per_sample=per_sample).init_state(backbone, batch_size)
    assert sorted(state) == ["layers.0.A.U", "layers.0.A.V", "layers.1.A.U", "layers.1.A.V"]
    for layer in range(2):
        u, v = state[f"layers.{layer}.A.U"], state[f"layers.{layer}.A.V"]
        assert u.shape == (*lead, D_INNER, RANK) and v.shape == (*lead, RANK, D_STATE)
        assert torch.equal(u, torch.zeros_like(u))
        assert v.abs().max() > 0


def test_state_follows_the_backbone_dtype_and_v_has_the_init_scale(backbone):
    double = MambaBackbone(MambaOptions(d_model=16, n_layers=2, d_state=D_STATE)).double()
    state = adapter(init_scale=0.1, rank=8).init_state(double, 256)
    assert all(t.dtype == torch.float64 for t in state.values())
    assert 0.09 < float(state["layers.0.A.V"].std()) < 0.11


def test_init_is_deterministic_given_the_generator(backbone):
    def init(seed: int) -> dict[str, torch.Tensor]:
        return adapter().init_state(backbone, 4, generator=torch.Generator().manual_seed(seed))

    first, again, other = init(7), init(7), init(8)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["layers.0.A.V"], other["layers.0.A.V"])
    assert not torch.equal(first["layers.0.A.V"], first["layers.1.A.V"])


def test_backbone_without_state_matrix_slots_is_a_clear_error():
    class Plain(torch.nn.Module):
        d_model = 4

        def adapter_slots(self) -> dict[str, AdapterSlot]:
            return {"layers.0.D": AdapterSlot(name="layers.0.D", base=torch.ones(4))}

    with pytest.raises(ConfigError, match="Plain"):
        adapter().init_state(Plain(), 2)


def test_projection_caps_the_delta_norm_per_sample_and_layer(backbone):
    delta_ssm = adapter(max_delta_norm=0.5)
    state = delta_ssm.init_state(backbone, 3, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    state["layers.0.A.U"] = 100 * torch.randn(3, D_INNER, RANK, generator=gen)
    state["layers.0.A.U"][1] *= 1e-6  # sample 1 of layer 0 stays inside the cap
    state["layers.1.A.U"] = 1e-4 * torch.randn(3, D_INNER, RANK, generator=gen)
    originals = {k: v.clone() for k, v in state.items()}

    projected, stats = delta_ssm.project(state)

    assert int(stats["delta_norm_capped"]) == 2
    for key in state:  # the input state is left untouched
        assert torch.equal(state[key], originals[key])
    norms = {
        layer: torch.linalg.matrix_norm(projected[f"{layer}.U"] @ projected[f"{layer}.V"])
        for layer in ("layers.0.A", "layers.1.A")
    }
    torch.testing.assert_close(norms["layers.0.A"][[0, 2]], torch.full((2,), 0.5))
    assert torch.equal(projected["layers.0.A.U"][1], state["layers.0.A.U"][1])
    assert torch.equal(projected["layers.1.A.U"], state["layers.1.A.U"])
    assert all(torch.equal(projected[k], state[k]) for k in state if k.endswith(".V"))


def test_a_projected_state_counts_as_inside_the_cap(backbone):
    """Rounding may leave a rescaled norm a hair above the cap: it must not fire again."""
    delta_ssm = adapter(max_delta_norm=0.5)
    gen = torch.Generator().manual_seed(2)
    state = delta_ssm.init_state(backbone, 64, generator=gen)
    state = {
        k: 100 * torch.randn(v.shape, generator=gen) if k.endswith(".U") else v
        for k, v in state.items()
    }
    projected, stats = delta_ssm.project(state)
    assert int(stats["delta_norm_capped"]) == 2 * 64
    again, stats = delta_ssm.project(projected)
    assert int(stats["delta_norm_capped"]) == 0
    assert all(torch.equal(again[k], projected[k]) for k in projected)


def test_num_parameters_counts_one_sample(backbone):
    per_layer = D_INNER * RANK + RANK * D_STATE
    for per_sample in (True, False):
        delta_ssm = adapter(per_sample=per_sample)
        assert delta_ssm.num_parameters(delta_ssm.init_state(backbone, 6)) == 2 * per_layer


def test_satisfies_the_adapter_protocol():
    assert isinstance(adapter(), Adapter)
