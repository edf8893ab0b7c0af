"""Delta-SSM adapter states: shapes, reproducibility, the norm cap, keeping A below its
bound, the optional dt-bias and D deltas, and parameter counts; most tests in the
original script's linear space, then the default log space."""

from __future__ import annotations

import copy

import pytest
import torch

from attd_core import Adapter, AdapterSlot, ConfigError, DeltaSSMAdapter, MambaBackbone
from attd_core.backbones.mamba import A_UPPER_BOUND
from attd_core.options import DeltaSSMOptions, MambaOptions

D_INNER, D_STATE, RANK = 32, 4, 3


@pytest.fixture(scope="module")
def backbone() -> MambaBackbone:
    torch.manual_seed(0)
    return MambaBackbone(MambaOptions(d_model=16, n_layers=2, d_state=D_STATE))


def adapter(**overrides) -> DeltaSSMAdapter:
    """Linear space, `A = A0 + U V`, unless `space` says otherwise."""
    return DeltaSSMAdapter(DeltaSSMOptions(**{"rank": RANK, "space": "linear", **overrides}))


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
            return {"layers.0.D": AdapterSlot(name="layers.0.D", base=torch.ones(4), kind="D")}

    with pytest.raises(ConfigError, match=r"delta-ssm.*kind 'A'.*Plain"):
        adapter().init_state(Plain(), 2)


def test_dt_bias_and_D_options_add_dense_zero_deltas(backbone):
    state = adapter(dt_bias=True, D=True).init_state(backbone, 5)
    dense = sorted(key for key in state if not key.endswith((".U", ".V")))
    assert dense == sorted(f"layers.{i}.{p}" for i in range(2) for p in ("D", "dt_bias"))
    for key in dense:
        assert state[key].shape == (5, D_INNER) and not state[key].any()
    assert sorted(adapter(D=True).init_state(backbone)) == sorted(
        [*(f"layers.{i}.A.{f}" for i in range(2) for f in "UV"), "layers.0.D", "layers.1.D"]
    )


def test_projection_caps_the_delta_norm_per_sample_and_layer(backbone):
    delta_ssm = adapter(max_delta_norm=0.5, keep_a_negative=False)
    state = delta_ssm.init_state(backbone, 3, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    state["layers.0.A.U"] = 100 * torch.randn(3, D_INNER, RANK, generator=gen)
    state["layers.0.A.U"][1] *= 1e-6  # sample 1 of layer 0 stays inside the cap
    state["layers.1.A.U"] = 1e-4 * torch.randn(3, D_INNER, RANK, generator=gen)
    originals = {k: v.clone() for k, v in state.items()}

    projected, stats = delta_ssm.project(state, backbone.adapter_slots())

    assert stats.keys() == {"delta_norm_capped"}
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
    slots = backbone.adapter_slots()
    gen = torch.Generator().manual_seed(2)
    state = delta_ssm.init_state(backbone, 64, generator=gen)
    state = {
        k: 100 * torch.randn(v.shape, generator=gen) if k.endswith(".U") else v
        for k, v in state.items()
    }
    projected, stats = delta_ssm.project(state, slots)
    assert int(stats["delta_norm_capped"]) == 2 * 64
    again, stats = delta_ssm.project(projected, slots)
    assert int(stats["delta_norm_capped"]) == 0 and int(stats["a_projected"]) == 0
    assert all(torch.equal(again[k], projected[k]) for k in projected)


def rising_state(backbone, batch: int, seed: int = 3) -> dict[str, torch.Tensor]:
    """U, V >= 0, so U V raises every entry of A, many far past zero."""
    gen = torch.Generator().manual_seed(seed)
    state = adapter().init_state(backbone, batch, generator=gen)
    return {k: 3 * torch.rand(v.shape, generator=gen) for k, v in state.items()}


def test_projection_keeps_adapted_A_below_the_bound_and_counts_it(backbone):
    delta_ssm = adapter(max_delta_norm=1e6)  # the cap never fires: only the A rule acts
    slots = backbone.adapter_slots()
    state = rising_state(backbone, 4)
    state["layers.1.A.U"][2] *= 1e-6  # sample 2 of layer 1 stays well inside
    projected, stats = delta_ssm.project(state, slots)
    assert int(stats["a_projected"]) == 4 + 3 and int(stats["delta_norm_capped"]) == 0
    for layer in ("layers.0.A", "layers.1.A"):
        base = slots[layer].base
        before = base + state[f"{layer}.U"] @ state[f"{layer}.V"]
        after = base + projected[f"{layer}.U"] @ projected[f"{layer}.V"]
        assert (after <= A_UPPER_BOUND).all()
        moved = (before > A_UPPER_BOUND).flatten(1).any(1)
        # s is the largest allowed up to the rounding slack: the tightest entry is at the bound
        gap = (A_UPPER_BOUND - after).flatten(1).amin(1)
        assert (gap[moved] < 1e-3).all()
        assert torch.equal(projected[f"{layer}.U"][~moved], state[f"{layer}.U"][~moved])
    assert torch.equal(projected["layers.1.A.U"][2], state["layers.1.A.U"][2])
    assert all(torch.equal(projected[k], state[k]) for k in state if k.endswith(".V"))
    again, stats = delta_ssm.project(projected, slots)
    assert int(stats["a_projected"]) == 0
    assert all(torch.equal(again[k], projected[k]) for k in projected)


def test_a_rule_follows_the_norm_cap_and_can_be_disabled(backbone):
    slots = backbone.adapter_slots()
    state = rising_state(backbone, 2)
    both, stats = adapter(max_delta_norm=0.5).project(state, slots)
    assert int(stats["delta_norm_capped"]) == 4
    for layer in ("layers.0.A", "layers.1.A"):
        delta = both[f"{layer}.U"] @ both[f"{layer}.V"]
        assert (torch.linalg.matrix_norm(delta) <= 0.5 * (1 + 1e-5)).all()
        assert (slots[layer].base + delta <= A_UPPER_BOUND).all()
    unbounded, stats = adapter(max_delta_norm=1e6, keep_a_negative=False).project(state, slots)
    assert stats.keys() == {"delta_norm_capped"}
    assert all(torch.equal(unbounded[k], state[k]) for k in state)


def test_shared_state_is_projected_per_layer(backbone):
    slots = backbone.adapter_slots()
    state = {k: v[0] for k, v in rising_state(backbone, 1).items()}
    projected, stats = adapter(max_delta_norm=1e6).project(state, slots)
    assert int(stats["a_projected"]) == 2
    delta = projected["layers.0.A.U"] @ projected["layers.0.A.V"]
    assert (slots["layers.0.A"].base + delta <= A_UPPER_BOUND).all()


def test_deltas_are_the_state_itself(backbone):
    state = adapter(dt_bias=True).init_state(backbone, 2)
    assert adapter().deltas(state) is state


def test_num_parameters_counts_one_sample(backbone):
    per_layer = D_INNER * RANK + RANK * D_STATE
    for per_sample in (True, False):
        delta_ssm = adapter(per_sample=per_sample)
        assert delta_ssm.num_parameters(delta_ssm.init_state(backbone, 6)) == 2 * per_layer
        with_vectors = adapter(per_sample=per_sample, dt_bias=True, D=True)
        count = with_vectors.num_parameters(with_vectors.init_state(backbone, 6))
        assert count == 2 * (per_layer + 2 * D_INNER)


def test_satisfies_the_adapter_protocol():
    assert isinstance(adapter(), Adapter)


# -- log space (the default): A = A0 * exp(U V) ------------------------------------------


def log_adapter(**overrides) -> DeltaSSMAdapter:
    return adapter(space="log", **overrides)


def test_log_space_is_the_default_and_adapts_A_log(backbone):
    assert DeltaSSMOptions().space == "log"
    state = DeltaSSMAdapter(DeltaSSMOptions(rank=8)).init_state(backbone, 256)
    assert sorted(state) == [f"layers.{i}.A_log.{f}" for i in range(2) for f in "UV"]
    assert not state["layers.0.A_log.U"].any()
    # V's rows have about unit norm: a step on U moves log A about as much as U
    assert 0.9 < float(state["layers.0.A_log.V"].std() * D_STATE**0.5) < 1.1


def test_a_log_space_delta_multiplies_A_by_exp_UV(backbone):
    gen = torch.Generator().manual_seed(4)
    state = log_adapter(per_sample=False).init_state(backbone, generator=gen)
    state["layers.1.A_log.U"] = 0.3 * torch.randn(D_INNER, RANK, generator=gen)
    x = torch.randn(2, 7, 16, generator=gen)
    moved = copy.deepcopy(backbone)
    with torch.no_grad():
        mixer = moved.layers[1].mixer
        mixer.A_log += state["layers.1.A_log.U"] @ state["layers.1.A_log.V"]
    with torch.no_grad():
        torch.testing.assert_close(backbone(x, adapter_state=state), moved(x))
        assert not torch.allclose(backbone(x, adapter_state=state), backbone(x))


def test_log_space_caps_the_rms_log_ratio_and_needs_no_sign_rule(backbone):
    slots = backbone.adapter_slots()
    gen = torch.Generator().manual_seed(5)
    delta_ssm = log_adapter(max_delta_norm=0.2)
    state = delta_ssm.init_state(backbone, 3, generator=gen)
    state = {
        k: 100 * torch.randn(v.shape, generator=gen) if k.endswith(".U") else v
        for k, v in state.items()
    }
    projected, stats = delta_ssm.project(state, slots)
    assert stats.keys() == {"delta_norm_capped"} and int(stats["delta_norm_capped"]) == 6
    for layer in ("layers.0.A_log", "layers.1.A_log"):
        delta = projected[f"{layer}.U"] @ projected[f"{layer}.V"]
        rms = delta.pow(2).mean(dim=(-2, -1)).sqrt()
        torch.testing.assert_close(rms, torch.full((3,), 0.2))
    again, stats = delta_ssm.project(projected, slots)
    assert int(stats["delta_norm_capped"]) == 0
    x = torch.randn(3, 5, 16, generator=gen)
    with torch.no_grad():  # any log delta keeps every mode decaying
        assert torch.isfinite(backbone(x, adapter_state=state)).all()


def test_log_space_without_A_log_slots_is_a_clear_error():
    class LinearOnly(torch.nn.Module):
        d_model = 4

        def adapter_slots(self) -> dict[str, AdapterSlot]:
            base = -torch.ones(4, 2)
            return {"layers.0.A": AdapterSlot(name="layers.0.A", base=base, kind="A")}

    with pytest.raises(ConfigError, match=r"delta-ssm.*kind 'A_log'.*LinearOnly"):
        log_adapter().init_state(LinearOnly(), 2)
