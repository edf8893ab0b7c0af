"""The Mamba backbone: shapes, initialisation, padding, adapter states as parameter deltas,
scan backends and bidirectional mode."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import attd_core
from attd_core import Backbone, DeltaSSMAdapter, MambaBackbone
from attd_core.backbones import mamba
from attd_core.backbones.mamba import A_UPPER_BOUND, WEIGHT_SLOTS, reverse_real_tokens
from attd_core.options import DeltaSSMOptions, MambaOptions

D_MODEL, D_STATE, D_INNER = 16, 4, 32
DT_RANK = 1
F64 = torch.float64  # an untrained block barely reacts to A: compare deltas far above rounding
MIXER_SLOTS = {  # name -> (kind, base shape)
    "A": ("A", (D_INNER, D_STATE)),
    "A_log": ("A_log", (D_INNER, D_STATE)),
    "dt_bias": ("dt_bias", (D_INNER,)),
    "D": ("D", (D_INNER,)),
    "h0": ("initial_state", (D_INNER, D_STATE)),
    "in_proj": ("weight", (2 * D_INNER, D_MODEL)),
    "x_proj": ("weight", (DT_RANK + 2 * D_STATE, D_INNER)),
    "dt_proj": ("weight", (D_INNER, DT_RANK)),
    "out_proj": ("weight", (D_MODEL, D_INNER)),
}
NORM_SLOTS = {"norm.weight": ("norm_weight", (D_MODEL,)), "norm.bias": ("norm_bias", (D_MODEL,))}
FINAL_SLOTS = {
    "norm_f.weight": ("norm_weight", (D_MODEL,)),
    "norm_f.bias": ("norm_bias", (D_MODEL,)),
}


def expected_slots(n_layers: int = 2, bidirectional: bool = False) -> dict[str, tuple]:
    mixers = ("", "reverse.") if bidirectional else ("",)
    slots = {
        f"layers.{i}.{mixer}{name}": spec
        for i in range(n_layers)
        for mixer in mixers
        for name, spec in MIXER_SLOTS.items()
    }
    slots |= {
        f"layers.{i}.{name}": spec for i in range(n_layers) for name, spec in NORM_SLOTS.items()
    }
    return slots | FINAL_SLOTS


def make_backbone(seed: int = 0, dtype: torch.dtype = torch.float32, **overrides) -> MambaBackbone:
    torch.manual_seed(seed)
    options = MambaOptions(**{"d_model": D_MODEL, "n_layers": 2, "d_state": D_STATE, **overrides})
    return MambaBackbone(options).to(dtype).eval()


def make_inputs(
    batch: int = 3, length: int = 9, seed: int = 1, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, D_MODEL, generator=gen, dtype=dtype)


def test_shapes():
    backbone = make_backbone()
    assert isinstance(backbone, Backbone)
    x = make_inputs()
    assert backbone(x).shape == x.shape


def test_initial_values():
    backbone = make_backbone(n_layers=4, dt_min=2e-3, dt_max=5e-2)
    for block in (layer.mixer for layer in backbone.layers):
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
    for name in WEIGHT_SLOTS:
        shape = MIXER_SLOTS[name][1]
        state[f"layers.1.{name}"] = 0.3 * torch.randn(shape, generator=gen, dtype=F64)
    for name in ("layers.0.norm", "layers.1.norm", "norm_f"):
        for part in ("weight", "bias"):
            state[f"{name}.{part}"] = torch.randn(D_MODEL, generator=gen, dtype=F64)
    edited = copy.deepcopy(backbone)
    with torch.no_grad():
        block0 = edited.layers[0].mixer
        block0.A_log.copy_(torch.log(-(block0.base_A() + delta_A)))
        block0.dt_proj.bias += delta_bias
        edited.layers[1].mixer.D += delta_D
        for name in WEIGHT_SLOTS:
            getattr(edited.layers[1].mixer, name).weight += state[f"layers.1.{name}"]
        for norm, name in (
            (edited.layers[0].norm, "layers.0.norm"),
            (edited.layers[1].norm, "layers.1.norm"),
            (edited.norm_f, "norm_f"),
        ):
            norm.weight += state[f"{name}.weight"]
            norm.bias += state[f"{name}.bias"]
    adapted = backbone(x, adapter_state=state)
    torch.testing.assert_close(adapted, edited(x), rtol=1e-10, atol=1e-12)
    for key, delta in state.items():  # each delta matters on its own
        assert (backbone(x, adapter_state={key: delta}) - backbone(x)).abs().max() > 1e-6, key


def test_a_per_sample_state_changes_only_its_sample():
    backbone = make_backbone(dtype=F64)
    x = make_inputs(dtype=F64)
    base_A = backbone.layers[0].mixer.base_A().detach()
    delta_A, delta_bias = (
        torch.zeros(3, D_INNER, D_STATE, dtype=F64),
        torch.zeros(3, D_INNER, dtype=F64),
    )
    delta_A[1], delta_bias[1] = -0.9 * base_A, 4.0  # slower decay, larger steps
    base = backbone(x)
    adapted = backbone(x, adapter_state={"layers.0.A": delta_A, "layers.0.dt_bias": delta_bias})
    torch.testing.assert_close(adapted[[0, 2]], base[[0, 2]], rtol=1e-12, atol=1e-12)
    assert (adapted[1] - base[1]).abs().max() > 1e-3


def test_adapted_A_is_clamped_below_zero():
    backbone = make_backbone()
    x = make_inputs()
    delta = torch.zeros(3, D_INNER, D_STATE)
    delta[0, :2] = 10.0  # two rows of sample 0 pushed far above zero
    out = backbone(x, adapter_state={"layers.1.A": delta})
    assert torch.isfinite(out).all()
    at_bound = torch.full((3, D_INNER, D_STATE), 0.0)
    at_bound[0, :2] = A_UPPER_BOUND - backbone.layers[1].mixer.base_A()[:2].detach()
    out_at = backbone(x, adapter_state={"layers.1.A": at_bound})
    torch.testing.assert_close(out_at, out)


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
    expected = expected_slots()
    assert sorted(slots) == sorted(expected)
    for name, slot in slots.items():
        assert slot.name == name
        assert (slot.kind, tuple(slot.base.shape)) == expected[name], name
        assert slot.kind in attd_core.interfaces.SLOT_KINDS
        assert slot.upper_bound == (A_UPPER_BOUND if slot.kind == "A" else None)
        assert not slot.base.requires_grad
    torch.testing.assert_close(slots["layers.1.A"].base, backbone.layers[1].mixer.base_A())
    assert torch.equal(slots["layers.1.A_log"].base, backbone.layers[1].mixer.A_log)
    assert torch.equal(slots["layers.1.x_proj"].base, backbone.layers[1].mixer.x_proj.weight)
    assert torch.equal(slots["layers.0.norm.bias"].base, backbone.layers[0].norm.bias)
    assert torch.equal(slots["norm_f.weight"].base, backbone.norm_f.weight)
    assert not slots["layers.0.h0"].base.any()


def test_initial_state_slot_starts_the_scan(monkeypatch):
    """A delta on h0 is the scan's initial state (the scan tests check what that means);
    per sample or shared."""
    backbone = make_backbone(dtype=F64, n_layers=1)
    x = make_inputs(dtype=F64)
    h0 = torch.zeros(3, D_INNER, D_STATE, dtype=F64)
    h0[1] = torch.randn(D_INNER, D_STATE, dtype=F64)
    starts = []
    scan = mamba.selective_scan

    def spy(*args, **kwargs):
        starts.append(kwargs["initial_state"])
        return scan(*args, **kwargs)

    monkeypatch.setattr(mamba, "selective_scan", spy)
    adapted = backbone(x, adapter_state={"layers.0.h0": h0})
    assert torch.equal(starts[-1], h0)
    base = backbone(x)
    torch.testing.assert_close(adapted[[0, 2]], base[[0, 2]], rtol=0, atol=1e-12)
    assert (adapted[1] - base[1]).abs().max() > 1e-3
    shared = backbone(x, adapter_state={"layers.0.h0": h0[1]})  # one h0 for every sample
    torch.testing.assert_close(shared[1], adapted[1], rtol=0, atol=1e-12)


def test_gradients_reach_base_weights_and_adapter_state():
    backbone = make_backbone()
    state = DeltaSSMAdapter(DeltaSSMOptions(per_sample=True)).init_state(
        backbone, 3, generator=torch.Generator()
    )
    for tensor in state.values():
        tensor.requires_grad_()
    backbone(make_inputs(), adapter_state=state).square().sum().backward()
    assert backbone.layers[0].mixer.A_log.grad is not None
    assert state["layers.0.A_log.U"].grad.abs().sum() > 0


def test_dropout_on_block_outputs_only_in_training():
    backbone = make_backbone(dropout=0.5)
    x = make_inputs()
    assert torch.equal(backbone(x), backbone(x))
    backbone.train()
    assert not torch.equal(backbone(x), backbone(x))


def test_A_log_and_D_are_exempt_from_weight_decay():
    backbone = make_backbone(dtype=F64, bidirectional=True)
    marked = {name for name, p in backbone.named_parameters() if getattr(p, "_no_weight_decay", 0)}
    assert marked == {
        f"layers.{i}.{mixer}.{p}"
        for i in range(2)
        for mixer in ("mixer", "reverse")
        for p in ("A_log", "D")
    }


def test_scan_backend_option_reaches_the_scan_and_is_reported():
    x = make_inputs(dtype=F64)
    mask = torch.arange(9).expand(3, 9) < torch.tensor([[9], [6], [3]])
    state = {"layers.0.A": 0.1 * torch.rand(3, D_INNER, D_STATE, dtype=F64)}
    outputs = {}
    for backend in ("reference", "recompute"):
        backbone = make_backbone(dtype=F64, scan_backend=backend)
        assert backbone.scan_backend_used is None
        outputs[backend] = backbone(x, mask=mask, adapter_state=state)
        assert backbone.scan_backend_used == backend
    torch.testing.assert_close(outputs["reference"], outputs["recompute"], rtol=0, atol=1e-12)
    auto = make_backbone()
    auto(make_inputs())
    assert auto.scan_backend_used in attd_core.available_backends()
    assert auto.scan_backend_used != "reference"  # the slow ground truth is never chosen


def test_masked_tokens_output_zero_and_leave_the_state_unchanged():
    backbone = make_backbone(dtype=F64, d_conv=1)  # no convolution mixing across tokens
    x = make_inputs(batch=1, dtype=F64)
    mask = torch.tensor([[True, False, False, True, True, False, True, True, False]])
    y = backbone.layers[0].mixer(x, mask)
    assert torch.equal(y[~mask], torch.zeros_like(y[~mask]))
    # a hole mid-sequence is skipped: real tokens see the state as if it were not there
    holes = backbone(x, mask=mask)[mask]
    torch.testing.assert_close(holes, backbone(x[mask].unsqueeze(0))[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_left_and_right_padding_leave_real_positions_unchanged(bidirectional):
    backbone = make_backbone(dtype=F64, bidirectional=bidirectional)
    with torch.no_grad():  # make pads matter if they leaked: a trained LayerNorm has a bias
        for layer in backbone.layers:
            layer.norm.bias.normal_()
    x = make_inputs(batch=1, length=6, dtype=F64)
    noise = 100 * torch.randn(1, 3, D_MODEL, dtype=F64)
    alone = backbone(x)
    right = backbone(torch.cat([x, noise], 1), mask=torch.arange(9).unsqueeze(0) < 6)
    left = backbone(torch.cat([noise, x], 1), mask=torch.arange(9).unsqueeze(0) >= 3)
    torch.testing.assert_close(right[:, :6], alone, rtol=0, atol=1e-12)
    torch.testing.assert_close(left[:, 3:], alone, rtol=0, atol=1e-12)


def test_reverse_real_tokens_mirrors_real_tokens_and_keeps_pads_in_place():
    x = torch.arange(6.0).expand(3, 6).unsqueeze(-1)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0]]).bool()
    reversed_ = reverse_real_tokens(x, mask).squeeze(-1)
    expected = torch.tensor([[5, 4, 3, 2, 1, 0], [3, 2, 1, 0, 4, 5], [0, 1, 4, 3, 2, 5]])
    assert torch.equal(reversed_, expected.double().float())
    assert torch.equal(reverse_real_tokens(reverse_real_tokens(x, mask), mask), x)
    assert torch.equal(reverse_real_tokens(x, None), x.flip(1))


def test_bidirectional_outputs_depend_on_later_tokens():
    x = make_inputs(dtype=F64)
    later = x.clone()
    later[:, -1] = make_inputs(length=1, seed=5, dtype=F64)[:, 0]
    causal, bidirectional = make_backbone(dtype=F64), make_backbone(dtype=F64, bidirectional=True)
    torch.testing.assert_close(causal(later)[:, :-1], causal(x)[:, :-1], rtol=0, atol=1e-12)
    assert (bidirectional(later)[:, 0] - bidirectional(x)[:, 0]).abs().max() > 1e-6


def test_bidirectional_slots_name_the_reverse_mixer_and_each_acts():
    backbone = make_backbone(dtype=F64, bidirectional=True)
    slots = backbone.adapter_slots()
    expected = expected_slots(bidirectional=True)
    assert sorted(slots) == sorted(expected)
    assert all(slots[name].kind == kind for name, (kind, _) in expected.items())
    torch.testing.assert_close(
        slots["layers.1.reverse.A"].base, backbone.layers[1].reverse.base_A()
    )
    assert slots["layers.1.reverse.A"].upper_bound == A_UPPER_BOUND
    x = make_inputs(dtype=F64)
    delta = torch.ones(D_INNER, dtype=F64)
    forward_only = backbone(x, adapter_state={"layers.0.D": delta})
    reverse_only = backbone(x, adapter_state={"layers.0.reverse.D": delta})
    for adapted in (forward_only, reverse_only):
        assert (adapted - backbone(x)).abs().max() > 1e-6
    assert (forward_only - reverse_only).abs().max() > 1e-6
    h0 = torch.randn(D_INNER, D_STATE, dtype=F64)
    for name in ("layers.0.reverse.h0", "layers.0.reverse.in_proj.U"):
        state = (
            {name: h0}
            if name.endswith("h0")
            else {
                name: torch.randn(2 * D_INNER, 1, dtype=F64),
                "layers.0.reverse.in_proj.V": torch.randn(1, D_MODEL, dtype=F64),
            }
        )
        assert (backbone(x, adapter_state=state) - backbone(x)).abs().max() > 1e-6, name


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_size", [None, 3])
def test_zero_deltas_on_every_slot_change_nothing(bidirectional, batch_size):
    backbone = make_backbone(bidirectional=bidirectional)
    x = make_inputs()
    lead = () if batch_size is None else (batch_size,)
    zeros = {
        name: torch.zeros(*lead, *slot.base.shape)
        for name, slot in backbone.adapter_slots().items()
    }
    assert torch.equal(backbone(x, adapter_state=zeros), backbone(x))


def test_convolution_falls_back_to_torch_off_cuda(monkeypatch):
    backbone = make_backbone()
    x = make_inputs()
    expected = backbone(x)

    def fused(*args, **kwargs):
        raise AssertionError("the fused kernel takes CUDA tensors only")

    monkeypatch.setattr(mamba, "causal_conv1d_fn", fused)
    assert torch.equal(backbone(x), expected)


def test_on_cpu_the_scan_gets_the_conv_output_as_contiguous_rows(monkeypatch):
    """x_proj and the CPU scans read (B, L, d_inner) rows; a transposed view of the
    convolution's (B, d_inner, L) output would be copied in each of them instead."""
    backbone = make_backbone(n_layers=1)
    seen = []
    scan = mamba.selective_scan

    def spy(x, *args, **kwargs):
        seen.append(x.is_contiguous())
        return scan(x, *args, **kwargs)

    monkeypatch.setattr(mamba, "selective_scan", spy)
    backbone(make_inputs())
    assert seen == [True]
