"""Every built-in adapter on every backbone it applies to: fresh states change nothing,
gradients reach the state and never the weights, per-sample states stay per sample,
parameter counts, target selection, clear errors, and combining adapters."""

from __future__ import annotations

from functools import cache

import pytest
import torch

from attd_core import Adapter, AdapterSlot, ConfigError
from attd_core.adapters.combined import CombinedAdapter
from attd_core.adapters.delta_ssm import DeltaSSMAdapter
from attd_core.adapters.lora import LoRAAdapter
from attd_core.adapters.norm_affine import NormAffineAdapter
from attd_core.adapters.state_offset import StateOffsetAdapter
from attd_core.backbones.hybrid import HybridBackbone
from attd_core.backbones.mamba import MambaBackbone
from attd_core.backbones.transformer import TransformerBackbone
from attd_core.options import (
    DeltaSSMOptions,
    HybridOptions,
    LoRAOptions,
    MambaOptions,
    NormAffineOptions,
    StateOffsetOptions,
    TransformerOptions,
)

D_MODEL, D_INNER, D_STATE, DT_RANK, RANK, BATCH, LENGTH = 16, 32, 4, 1, 2, 3, 8
F64 = torch.float64


@cache
def make_backbone(name: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Tiny two-layer backbones; the hybrid is one Mamba and one attention layer."""
    torch.manual_seed(0)
    mamba = {"d_model": D_MODEL, "n_layers": 2, "d_state": D_STATE}
    attention = {"d_model": D_MODEL, "n_layers": 2, "n_heads": 4, "mlp_ratio": 2}
    backbone = {
        "mamba": lambda: MambaBackbone(MambaOptions(**mamba)),
        "mamba-bi": lambda: MambaBackbone(MambaOptions(**mamba, bidirectional=True)),
        "mamba-rms": lambda: MambaBackbone(MambaOptions(**mamba, norm="rms")),
        "transformer": lambda: TransformerBackbone(TransformerOptions(**attention)),
        "hybrid": lambda: HybridBackbone(HybridOptions(**(mamba | attention), pattern="MA")),
    }[name]()
    return backbone.to(dtype).eval()


def make_adapter(name: str, **options) -> Adapter:
    if name == "delta-ssm":
        return DeltaSSMAdapter(
            DeltaSSMOptions(**{"rank": RANK, "dt_bias": True, "D": True, **options})
        )
    if name == "lora":
        return LoRAAdapter(LoRAOptions(**{"rank": RANK, **options}))
    if name == "state-offset":
        return StateOffsetAdapter(StateOffsetOptions(**options))
    return NormAffineAdapter(NormAffineOptions(**options))


SSM_BACKBONES = ("mamba", "mamba-bi", "hybrid")
ALL_BACKBONES = (*SSM_BACKBONES, "transformer")
APPLIES = {
    "delta-ssm": SSM_BACKBONES,
    "lora": ALL_BACKBONES,
    "state-offset": SSM_BACKBONES,
    "norm-affine": (*ALL_BACKBONES, "mamba-rms"),
}
PAIRS = [(adapter, backbone) for adapter, backbones in APPLIES.items() for backbone in backbones]


def inputs(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """`(B, L, D)` inputs and a mask with right padding on two samples."""
    x = torch.randn(BATCH, LENGTH, D_MODEL, generator=torch.Generator().manual_seed(1))
    mask = torch.arange(LENGTH).expand(BATCH, LENGTH) < torch.tensor([[LENGTH], [5], [3]])
    return x.to(dtype), mask


def fresh(adapter_name: str, backbone, batch_size: int | None = BATCH, **options) -> dict:
    adapter = make_adapter(adapter_name, **options)
    return adapter.init_state(backbone, batch_size, generator=torch.Generator().manual_seed(2))


def perturbed(state: dict, scale: float, seed: int = 3) -> dict:
    """Every tensor moved off its fresh value, so each has a gradient path (U = 0 blocks V's)."""
    gen = torch.Generator().manual_seed(seed)
    return {
        k: v + scale * torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in state.items()
    }


@pytest.mark.parametrize("adapter_name, backbone_name", PAIRS)
@pytest.mark.parametrize("batch_size", [BATCH, None])
def test_fresh_state_leaves_outputs_unchanged(adapter_name, backbone_name, batch_size):
    backbone = make_backbone(backbone_name)
    adapter = make_adapter(adapter_name)
    state = adapter.init_state(backbone, batch_size, generator=torch.Generator().manual_seed(2))
    assert state and adapter.per_sample
    x, mask = inputs()
    adapted = backbone(x, mask, adapter_state=adapter.deltas(state))
    base = backbone(x, mask)
    if adapter_name == "norm-affine" and batch_size is not None:
        # Per-sample scales and shifts are applied after an unfused layer_norm rather than
        # inside F.layer_norm: the same arithmetic up to rounding, not bitwise.
        torch.testing.assert_close(adapted, base, rtol=0, atol=1e-6)
    else:
        # Zero deltas add exact zeros (U = 0; dense zeros; a zero initial state is what the
        # scan starts from anyway), so the result is bitwise the base output.
        assert torch.equal(adapted, base)


@pytest.mark.parametrize("adapter_name, backbone_name", PAIRS)
def test_state_shapes_devices_and_reproducibility(adapter_name, backbone_name):
    backbone = make_backbone(backbone_name, F64)
    slots = backbone.adapter_slots()
    first, again = fresh(adapter_name, backbone), fresh(adapter_name, backbone)
    shared = fresh(adapter_name, backbone, per_sample=False)
    assert first.keys() == again.keys() == shared.keys()
    for key, tensor in first.items():
        assert torch.equal(tensor, again[key]) and tensor.dtype == F64
        assert tensor.shape[0] == BATCH and shared[key].shape == tensor.shape[1:]
        slot = key[:-2] if key.endswith((".U", ".V")) else key
        assert slot in slots
        if key.endswith(".U"):
            assert tensor.shape[1:] == (slots[slot].base.shape[0], RANK) and not tensor.any()
        elif key.endswith(".V"):
            assert tensor.shape[1:] == (RANK, slots[slot].base.shape[-1]) and tensor.any()
        else:
            assert tensor.shape[1:] == slots[slot].base.shape and not tensor.any()


@pytest.mark.parametrize("adapter_name, backbone_name", PAIRS)
def test_gradients_reach_every_state_tensor(adapter_name, backbone_name):
    backbone = make_backbone(backbone_name)
    adapter = make_adapter(adapter_name)
    state = perturbed(fresh(adapter_name, backbone), 0.05)
    state = {k: v.requires_grad_() for k, v in state.items()}
    x, mask = inputs()
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    loss = (backbone(x, mask, adapter_state=adapter.deltas(state)) * target).sum()
    grads = torch.autograd.grad(loss, list(state.values()))
    for key, grad in zip(state, grads, strict=True):
        assert grad.abs().sum() > 0, key


@pytest.mark.parametrize("adapter_name, backbone_name", PAIRS)
def test_sgd_on_the_state_never_touches_base_weights(adapter_name, backbone_name):
    backbone = make_backbone(backbone_name)
    weights = {k: v.clone() for k, v in backbone.state_dict().items()}
    adapter = make_adapter(adapter_name)
    slots = backbone.adapter_slots()
    state = fresh(adapter_name, backbone)
    x, mask = inputs()
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    for _ in range(3):
        state = {k: v.detach().requires_grad_() for k, v in state.items()}
        loss = (backbone(x, mask, adapter_state=adapter.deltas(state)) * target).sum()
        grads = torch.autograd.grad(loss, list(state.values()))
        state = {k: v - 0.05 * g for (k, v), g in zip(state.items(), grads, strict=True)}
        state, stats = adapter.project(state, slots)
        assert all(value.dim() == 0 for value in stats.values())
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, weights[key]), key
    with torch.no_grad():
        moved = backbone(x, mask, adapter_state=adapter.deltas(state)) - backbone(x, mask)
    assert moved.abs().max() > 1e-5


@pytest.mark.parametrize("adapter_name, backbone_name", PAIRS)
def test_a_per_sample_state_changes_only_its_sample(adapter_name, backbone_name):
    backbone = make_backbone(backbone_name)
    adapter = make_adapter(adapter_name)
    state = fresh(adapter_name, backbone)
    gen = torch.Generator().manual_seed(5)
    for tensor in state.values():
        tensor[1] += 0.1 * torch.randn(tensor.shape[1:], generator=gen)
    x, mask = inputs()
    with torch.no_grad():
        adapted = backbone(x, mask, adapter_state=adapter.deltas(state))
        base = backbone(x, mask)
    # Other samples see zero deltas through batched kernels (per-sample A in the scan,
    # batched matmuls, unfused norms), which may round differently from the shared path.
    torch.testing.assert_close(adapted[[0, 2]], base[[0, 2]], rtol=0, atol=1e-6)
    assert (adapted[1] - base[1]).abs().max() > 1e-4


MIXER = {  # one Mamba mixer's parameters per adapter, by hand (rank 2, defaults otherwise)
    "delta-ssm": D_INNER * RANK + RANK * D_STATE + 2 * D_INNER,  # U, V, dt bias, D
    "lora": sum(
        out * RANK + RANK * in_
        for out, in_ in [
            (2 * D_INNER, D_MODEL),  # in_proj
            (DT_RANK + 2 * D_STATE, D_INNER),  # x_proj
            (D_INNER, DT_RANK),  # dt_proj
            (D_MODEL, D_INNER),  # out_proj
        ]
    ),
    "state-offset": D_INNER * D_STATE,
}
ATTENTION_LORA = 4 * (D_MODEL * RANK + RANK * D_MODEL)  # q, k, v, out
NORM = 2 * D_MODEL  # one LayerNorm's weight and bias
EXPECTED_PARAMETERS = {
    ("delta-ssm", "mamba"): 2 * MIXER["delta-ssm"],
    ("delta-ssm", "mamba-bi"): 4 * MIXER["delta-ssm"],
    ("delta-ssm", "hybrid"): MIXER["delta-ssm"],
    ("lora", "mamba"): 2 * MIXER["lora"],
    ("lora", "mamba-bi"): 4 * MIXER["lora"],
    ("lora", "transformer"): 2 * ATTENTION_LORA,
    ("lora", "hybrid"): MIXER["lora"] + ATTENTION_LORA,
    ("state-offset", "mamba"): 2 * MIXER["state-offset"],
    ("state-offset", "mamba-bi"): 4 * MIXER["state-offset"],
    ("state-offset", "hybrid"): MIXER["state-offset"],
    ("norm-affine", "mamba"): 3 * NORM,  # a norm per layer, and norm_f
    ("norm-affine", "mamba-bi"): 3 * NORM,  # the reverse mixer shares its layer's norm
    ("norm-affine", "mamba-rms"): 3 * D_MODEL,  # an RMSNorm has a scale and no bias
    ("norm-affine", "transformer"): 5 * NORM,  # norm1 and norm2 per layer, and norm_f
    ("norm-affine", "hybrid"): 4 * NORM,
}


@pytest.mark.parametrize("adapter_name, backbone_name", PAIRS)
@pytest.mark.parametrize("per_sample", [True, False])
def test_num_parameters_counts_one_sample(adapter_name, backbone_name, per_sample):
    backbone = make_backbone(backbone_name)
    adapter = make_adapter(adapter_name, per_sample=per_sample)
    count = adapter.num_parameters(adapter.init_state(backbone, BATCH))
    assert count == EXPECTED_PARAMETERS[adapter_name, backbone_name]


@pytest.mark.parametrize("name", ["delta-ssm", "lora", "state-offset", "norm-affine"])
def test_satisfies_the_adapter_protocol(name):
    assert isinstance(make_adapter(name), Adapter)


def test_lora_deltas_scale_u_by_alpha_over_rank_exactly():
    lora = make_adapter("lora", alpha=3.0, rank=RANK)
    backbone = make_backbone("hybrid", F64)
    state = perturbed(fresh("lora", backbone, alpha=3.0), 0.3)
    state = {k: v.requires_grad_() for k, v in state.items()}
    deltas = lora.deltas(state)
    assert deltas is not state and deltas.keys() == state.keys()
    for key, value in deltas.items():
        expected = state[key] * 1.5 if key.endswith(".U") else state[key]
        assert torch.equal(value, expected), key
    (grad,) = torch.autograd.grad(deltas["layers.0.in_proj.U"].sum(), state["layers.0.in_proj.U"])
    assert torch.equal(grad, torch.full_like(grad, 1.5))
    x, mask = inputs(F64)
    dense = {
        key[:-2]: 1.5 * state[key] @ state[f"{key[:-2]}.V"] for key in state if key.endswith(".U")
    }
    with torch.no_grad():
        torch.testing.assert_close(
            backbone(x, mask, adapter_state=deltas),
            backbone(x, mask, adapter_state=dense),
            rtol=1e-10,
            atol=1e-12,
        )
    assert lora.project(state, backbone.adapter_slots()) == (state, {})


def test_lora_v_is_initialised_like_peft():
    backbone = make_backbone("mamba")
    state = fresh("lora", backbone, targets=["in_proj"], batch_size=256)
    v = state["layers.0.in_proj.V"]
    bound = D_MODEL**-0.5
    assert v.abs().max() <= bound and v.abs().max() > 0.9 * bound
    assert abs(float(v.mean())) < 0.02


@pytest.mark.parametrize(
    "backbone_name, targets, slots",
    [
        ("mamba", ["in_proj"], ["layers.0.in_proj", "layers.1.in_proj"]),
        (
            "mamba-bi",
            ["dt_proj"],
            [f"layers.{i}.{m}dt_proj" for i in range(2) for m in ("", "reverse.")],
        ),
        (
            "mamba",
            ["layers.1.*"],
            [f"layers.1.{p}" for p in ("in_proj", "x_proj", "dt_proj", "out_proj")],
        ),
        (
            "hybrid",
            ["out_proj", "q", "layers.1.mlp_*"],
            ["layers.0.out_proj", "layers.1.q", "layers.1.mlp_in", "layers.1.mlp_out"],
        ),
        ("transformer", ["layers.?.v"], ["layers.0.v", "layers.1.v"]),
    ],
)
def test_lora_targets_pick_weight_slots(backbone_name, targets, slots):
    state = fresh("lora", make_backbone(backbone_name), targets=targets)
    assert sorted(state) == sorted(f"{slot}.{factor}" for slot in slots for factor in "UV")


def test_lora_targets_that_match_nothing_list_the_weight_slots():
    with pytest.raises(ConfigError, match=r"lora.*\['nope'\].*MambaBackbone.*layers\.0\.in_proj"):
        fresh("lora", make_backbone("mamba"), targets=["nope"])
    with pytest.raises(ConfigError, match="layers.1.mlp_out"):  # norms are not weights
        fresh("lora", make_backbone("transformer"), targets=["norm1", "layers.0.norm1.*"])


@pytest.mark.parametrize(
    "backbone_name, targets, expected",
    [
        ("mamba", ["layers.0.*"], ["layers.0.norm.weight", "layers.0.norm.bias"]),
        (
            "transformer",
            ["*.norm2.*", "norm_f.weight"],
            [f"layers.{i}.norm2.{p}" for i in range(2) for p in ("weight", "bias")]
            + ["norm_f.weight"],
        ),
        (
            "hybrid",
            ["*.bias"],
            ["layers.0.norm.bias", "layers.1.norm1.bias", "layers.1.norm2.bias", "norm_f.bias"],
        ),
    ],
)
def test_norm_affine_targets_are_globs_over_norm_slots(backbone_name, targets, expected):
    state = fresh("norm-affine", make_backbone(backbone_name), targets=targets)
    assert sorted(state) == sorted(expected)


def test_norm_affine_targets_that_match_nothing_list_the_norm_slots():
    with pytest.raises(ConfigError, match=r"norm-affine.*TransformerBackbone.*layers\.0\.norm1"):
        fresh("norm-affine", make_backbone("transformer"), targets=["layers.0.q"])


@pytest.mark.parametrize(
    "adapter_name, needed", [("delta-ssm", "kind 'A_log'"), ("state-offset", "initial-state")]
)
def test_ssm_adapters_refuse_the_transformer(adapter_name, needed):
    with pytest.raises(ConfigError, match=f"{adapter_name}.*{needed}.*TransformerBackbone"):
        fresh(adapter_name, make_backbone("transformer"))


@pytest.mark.parametrize("adapter_name", ["lora", "norm-affine"])
def test_a_backbone_without_suitable_slots_is_a_clear_error(adapter_name):
    class Plain(torch.nn.Module):
        d_model = 4

        def adapter_slots(self) -> dict[str, AdapterSlot]:
            return {"layers.0.D": AdapterSlot(name="layers.0.D", base=torch.ones(4), kind="D")}

    with pytest.raises(ConfigError, match=f"{adapter_name}.*Plain has none$"):
        fresh(adapter_name, Plain())


def combined() -> CombinedAdapter:
    return CombinedAdapter(
        {
            "delta-ssm": make_adapter("delta-ssm"),
            "norm-affine": make_adapter("norm-affine"),
            "lora": make_adapter("lora", targets=["out_proj"]),
        }
    )


def test_combined_state_is_the_union_and_knows_its_owners():
    backbone = make_backbone("mamba")
    adapter = combined()
    state = adapter.init_state(backbone, BATCH, generator=torch.Generator().manual_seed(2))
    parts = {
        "delta-ssm": fresh("delta-ssm", backbone),
        "norm-affine": fresh("norm-affine", backbone),
        "lora": fresh("lora", backbone, targets=["out_proj"]),
    }
    assert sorted(state) == sorted(key for part in parts.values() for key in part)
    owners = adapter.owners(state)
    assert owners == {key: name for name, part in parts.items() for key in part}
    assert adapter.per_sample
    x, mask = inputs()
    with torch.no_grad():  # per-sample norm deltas: equal up to rounding (see above)
        unchanged = backbone(x, mask, adapter_state=adapter.deltas(state))
        torch.testing.assert_close(unchanged, backbone(x, mask), rtol=0, atol=1e-6)
    moved = perturbed(state, 0.1)
    deltas = adapter.deltas(moved)
    assert torch.equal(deltas["layers.0.out_proj.U"], moved["layers.0.out_proj.U"] * 4.0)
    assert torch.equal(deltas["layers.0.A_log.U"], moved["layers.0.A_log.U"])
    projected, stats = adapter.project(moved, backbone.adapter_slots())
    assert projected.keys() == state.keys()
    assert stats.keys() == {"delta_norm_capped"}  # log space needs no sign rule
    expected = sum(EXPECTED_PARAMETERS[name, "mamba"] for name in ("delta-ssm", "norm-affine"))
    expected += 2 * (D_MODEL * RANK + RANK * D_INNER)
    assert adapter.num_parameters(state) == expected


def test_combined_adapters_may_not_adapt_the_same_key():
    adapter = CombinedAdapter(
        {"ssm": make_adapter("delta-ssm", dt_bias=True), "again": make_adapter("delta-ssm")}
    )
    with pytest.raises(ConfigError, match=r"'ssm' and 'again' both adapt 'layers\.0\.A_log\.U'"):
        adapter.init_state(make_backbone("mamba"), BATCH)
