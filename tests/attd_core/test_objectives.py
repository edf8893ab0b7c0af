"""Inner objectives: formulas, per-sample independence, padding, gradients, determinism."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest
import torch
import torch.nn.functional as F

from attd_core.adapters.delta_ssm import DeltaSSMAdapter
from attd_core.backbones.mamba import MambaBackbone
from attd_core.interfaces import AdapterState, Batch, InputSpec, ModelOutput
from attd_core.model import AttdModel, BoundModel
from attd_core.options import (
    ConsistencyOptions,
    DeltaSSMOptions,
    EntropyKLOptions,
    EntropyOptions,
    MambaOptions,
    MaskedReconstructionOptions,
    MemoOptions,
)
from attd_core.tasks import ClassificationTask
from attd_core.testing import new_plugin_manager
from attd_core.tta.objectives import (
    Consistency,
    Entropy,
    EntropyKL,
    MaskedReconstruction,
    Memo,
    NextStep,
    NextToken,
)

VOCAB = 12
LENGTHS = (9, 5, 14, 1, 7)


class TinyClassification(ClassificationTask):
    input_spec = InputSpec(vocab_size=VOCAB, pad_id=0)
    num_classes = 3


class TinyLM(TinyClassification):
    """Language modelling: the head maps every position's features to next-token logits."""

    num_classes = VOCAB
    token_level = True


def fresh_state(bound: BoundModel, batch_size: int) -> AdapterState:
    bound.reset_generator()
    return bound.init_adapter_state(batch_size)


def moved_state(bound: BoundModel, batch_size: int) -> AdapterState:
    """An adapted-looking state: U nonzero, so the adapter changes the output."""
    state = fresh_state(bound, batch_size)
    generator = torch.Generator().manual_seed(2)
    for key in state:
        if key.endswith(".U"):
            state[key] = 0.3 * torch.randn(state[key].shape, generator=generator)
    return state


@dataclass
class Fixed:
    """A model whose forward returns a fixed output, for formula checks."""

    output: ModelOutput
    input_spec: InputSpec = InputSpec(vocab_size=VOCAB, pad_id=0)

    def __call__(self, batch: Batch, adapter_state: AdapterState | None = None) -> ModelOutput:
        return self.output


def build(task: ClassificationTask) -> BoundModel:
    torch.manual_seed(0)
    backbone = MambaBackbone(MambaOptions(d_model=16, n_layers=1, d_state=4))
    model = AttdModel(task, backbone).eval()
    with torch.no_grad():  # nonzero norm biases, as after training: a blank token's gate opens
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.bias.normal_()
    adapter = DeltaSSMAdapter(DeltaSSMOptions(rank=2, init_scale=1.0))
    return BoundModel(model, {"delta-ssm": adapter})


@pytest.fixture(scope="module")
def classifier() -> BoundModel:
    return build(TinyClassification())


@pytest.fixture(scope="module")
def lm() -> BoundModel:
    return build(TinyLM())


def make_batch(lengths=LENGTHS, seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    sequences = [torch.randint(1, VOCAB, (n,), generator=generator).tolist() for n in lengths]
    return TinyClassification().collate_tokens(sequences, [i % 3 for i in range(len(lengths))])


def reference_of(bound: BoundModel, batch: Batch) -> ModelOutput:
    with torch.no_grad():
        return bound(batch)


OBJECTIVES = {
    "entropy": (Entropy(), "classifier"),
    "entropy-kl": (EntropyKL(EntropyKLOptions(kl_weight=0.5)), "classifier"),
    "next-token": (NextToken(), "lm"),
    "masked-reconstruction": (MaskedReconstruction(), "classifier"),
    "next-step": (NextStep(), "classifier"),
    "consistency": (Consistency(ConsistencyOptions(drop_ratio=0.3)), "classifier"),
    "memo": (
        Memo(
            MemoOptions(views=3, augmentations=["token-substitution:3"]),
            manager=new_plugin_manager(),
        ),
        "classifier",
    ),
}


@pytest.fixture(params=sorted(OBJECTIVES))
def case(request, classifier, lm):
    objective, which = OBJECTIVES[request.param]
    return objective, {"classifier": classifier, "lm": lm}[which]


def loss_of(objective, bound: BoundModel, batch: Batch, state: AdapterState | None) -> torch.Tensor:
    return objective(bound, batch, state, reference_of(bound, batch))


def pad(batch: Batch, extra: int, side: str) -> Batch:
    """The batch with `extra` padding columns added on one side."""

    def join(real: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        return torch.cat([real, padding] if side == "right" else [padding, real], dim=1)

    padding = torch.zeros(len(batch), extra, dtype=batch.inputs.dtype)
    return Batch(join(batch.inputs, padding), join(batch.mask, padding.bool()), batch.labels)


# --- properties every objective has ----------------------------------------------------------


def test_loss_is_per_sample_and_finite(case):
    objective, bound = case
    loss = loss_of(objective, bound, make_batch(), moved_state(bound, len(LENGTHS)))
    assert loss.shape == (len(LENGTHS),) and torch.isfinite(loss).all()
    assert (loss[[0, 1, 2, 4]] > 0).all()


def test_a_sample_loss_ignores_the_other_samples(case):
    objective, bound = case
    state = moved_state(bound, len(LENGTHS))
    batch = make_batch()
    changed_lengths = (*LENGTHS[:2], 20, *LENGTHS[3:])  # sample 2: new tokens, longer batch
    changed = make_batch(changed_lengths, seed=5)
    keep = [0, 1, 3, 4]
    changed.inputs[keep, : max(LENGTHS)] = batch.inputs[keep]
    changed.mask[keep, max(LENGTHS) :] = False
    changed.inputs[keep, max(LENGTHS) :] = 0
    before = loss_of(objective, bound, batch, state)
    after = loss_of(objective, bound, changed, state)
    torch.testing.assert_close(after[keep], before[keep], rtol=0, atol=1e-6)
    assert not torch.allclose(after[2], before[2])


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_never_matters(case, side):
    objective, bound = case
    state = moved_state(bound, len(LENGTHS))
    batch = make_batch()
    padded = pad(batch, 6, side)
    torch.testing.assert_close(
        loss_of(objective, bound, padded, state),
        loss_of(objective, bound, batch, state),
        rtol=0,
        atol=1e-6,
    )


def test_gradient_reaches_the_state_and_never_the_reference(case):
    objective, bound = case
    batch = make_batch()
    state = {k: v.requires_grad_() for k, v in fresh_state(bound, len(LENGTHS)).items()}
    clean = reference_of(bound, batch)
    leaves = {
        name: getattr(clean, name).clone().requires_grad_()
        for name in ("logits", "features", "embedded", "pooled")
        if getattr(clean, name) is not None
    }
    reference = ModelOutput(**leaves)
    objective(bound, batch, state, reference).sum().backward()
    grads = [v.grad for k, v in state.items() if k.endswith(".U")]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(leaf.grad is None for leaf in leaves.values())


def test_the_same_inputs_give_the_same_loss(case):
    objective, bound = case
    state = moved_state(bound, len(LENGTHS))
    batch = make_batch()
    assert torch.equal(
        loss_of(objective, bound, batch, state), loss_of(objective, bound, batch, state)
    )


def test_built_with_default_options():
    for objective in (Entropy, EntropyKL, NextToken, MaskedReconstruction, NextStep, Consistency):
        assert objective().options is not None


# --- entropy and entropy-kl ------------------------------------------------------------------


def test_entropy_of_uniform_logits_is_log_classes():
    uniform = ModelOutput(logits=torch.zeros(4, 5))
    expected = torch.full((4,), math.log(5))
    torch.testing.assert_close(Entropy()(Fixed(uniform), make_batch(), None, uniform), expected)
    torch.testing.assert_close(EntropyKL()(Fixed(uniform), make_batch(), None, uniform), expected)


def test_kl_term_matches_its_definition():
    logits = torch.randn(4, 3, requires_grad=True)
    reference = ModelOutput(logits=torch.randn(4, 3))
    objective = EntropyKL(EntropyKLOptions(kl_weight=0.5))
    loss = objective(Fixed(ModelOutput(logits=logits)), make_batch(), None, reference)
    p = logits.softmax(-1)
    entropy = -(p * p.log()).sum(-1)
    kl = F.kl_div(
        reference.logits.log_softmax(-1), logits.log_softmax(-1), log_target=True, reduction="none"
    ).sum(-1)
    torch.testing.assert_close(loss, entropy + 0.5 * kl)


def test_confidence_threshold_silences_unconfident_samples():
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    output = ModelOutput(logits=logits)
    loss = Entropy(EntropyOptions(confidence_threshold=0.9))(
        Fixed(output), make_batch(), None, output
    )
    assert loss[0] > 0 and loss[1] == 0


@pytest.mark.parametrize("objective", [Entropy(), EntropyKL(), Consistency()])
def test_classification_objectives_reject_per_token_logits(objective):
    output = ModelOutput(logits=torch.zeros(2, 7, 3))
    with pytest.raises(ValueError, match=r"\(B, C\).*\(2, 7, 3\)"):
        objective(Fixed(output), make_batch((7, 7)), None, output)


# --- next-token ------------------------------------------------------------------------------


def test_next_token_is_cross_entropy_on_the_shifted_input(lm):
    batch = make_batch()
    state = moved_state(lm, len(LENGTHS))
    loss = loss_of(NextToken(), lm, batch, state)
    logits = lm(batch, state).logits
    for i, n in enumerate(LENGTHS):
        if n < 2:
            assert loss[i] == 0
        else:
            expected = F.cross_entropy(logits[i, : n - 1], batch.inputs[i, 1:n])
            torch.testing.assert_close(loss[i], expected)


def test_next_token_rejects_float_inputs_and_classification_logits(classifier):
    floats = Fixed(ModelOutput(logits=torch.zeros(2, 4, 3)), InputSpec(channels=3))
    batch = Batch(torch.zeros(2, 4, 3), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="integer token inputs"):
        NextToken()(floats, batch, None, floats.output)
    with pytest.raises(ValueError, match=r"\(B, L, V\).*\(5, 3\)"):
        loss_of(NextToken(), classifier, make_batch(), None)


# --- masked reconstruction -------------------------------------------------------------------


def test_masked_reconstruction_blanks_a_fraction_of_real_tokens_only():
    objective = MaskedReconstruction(MaskedReconstructionOptions(mask_ratio=0.3))
    batch = make_batch()
    masked, blank = objective.blanked(batch)
    expected = [max(1, round(0.3 * n)) for n in LENGTHS]
    assert blank.sum(1).tolist() == expected
    assert not (blank & ~batch.mask).any()
    assert torch.equal(masked.inputs[~blank], batch.inputs[~blank])
    assert masked.mask is batch.mask  # replaced tokens stay real
    for row in range(len(LENGTHS)):  # replacements come from the sample's own tokens
        own = set(batch.inputs[row][batch.mask[row]].tolist())
        assert set(masked.inputs[row][blank[row]].tolist()) <= own
    assert not torch.equal(masked.inputs, batch.inputs)


def test_masked_reconstruction_draws_per_sample_whatever_the_padding():
    objective = MaskedReconstruction(MaskedReconstructionOptions(mask_ratio=0.3))
    batch = make_batch()
    masked, blank = objective.blanked(batch)
    row, length = 1, LENGTHS[1]
    alone = replace(batch, inputs=batch.inputs[row : row + 1, :length], mask=None)
    masked_alone, blank_alone = objective.blanked(alone)
    assert torch.equal(blank_alone[0], blank[row, :length])
    assert torch.equal(masked_alone.inputs[0], masked.inputs[row, :length])


def test_masked_reconstruction_moves_a_fresh_mamba_adapter():
    """Replaced positions depend on the adapter even in a fresh model, whose norms have
    zero bias: a pad token's zero embedding would be gated to zero in every Mamba layer
    there, leaving a constant loss with no gradient."""

    class Padded(TinyClassification):
        input_spec = InputSpec(vocab_size=VOCAB, pad_id=0)

    torch.manual_seed(0)
    task = Padded()
    backbone = MambaBackbone(MambaOptions(d_model=16, n_layers=2, d_state=4))
    model = AttdModel(task, backbone).eval()
    bound = BoundModel(model, {"delta-ssm": DeltaSSMAdapter(DeltaSSMOptions(rank=2))})
    batch = make_batch()
    state = moved_state(bound, len(LENGTHS))
    leaves = [value.requires_grad_() for value in state.values()]
    loss = loss_of(MaskedReconstruction(), bound, batch, state).sum()
    gradients = torch.autograd.grad(loss, leaves)
    assert any(float(g.abs().sum()) > 0 for g in gradients)


def test_masked_reconstruction_zeroes_float_inputs():
    inputs = torch.randn(2, 6, 3) + 5
    batch = Batch(inputs, torch.tensor([[True] * 6, [True] * 4 + [False] * 2]))
    masked, blank = MaskedReconstruction(MaskedReconstructionOptions(mask_ratio=0.5)).blanked(batch)
    assert blank.sum(1).tolist() == [3, 2]
    assert (masked.inputs[blank] == 0).all() and (masked.inputs[~blank] != 0).all()


def test_masked_reconstruction_compares_blanked_features_with_clean_ones(classifier):
    objective = MaskedReconstruction(MaskedReconstructionOptions(mask_ratio=0.3))
    batch = make_batch()
    loss = loss_of(objective, classifier, batch, None)
    masked, blank = objective.blanked(batch)
    with torch.no_grad():
        errors = (classifier(masked).features - classifier(batch).features).pow(2).mean(-1)
    expected = torch.stack([errors[i][blank[i]].mean() for i in range(len(LENGTHS))])
    torch.testing.assert_close(loss, expected)
    changed = (masked.inputs != batch.inputs).any(dim=1)
    assert changed.sum() >= 3 and (loss[changed] > 0).all()


def test_masks_and_views_follow_the_seed():
    batch = make_batch()
    same = [MaskedReconstruction().blanked(batch)[1] for _ in range(2)]
    other = MaskedReconstruction(MaskedReconstructionOptions(seed=3)).blanked(batch)[1]
    assert torch.equal(*same) and not torch.equal(same[0], other)
    views = [
        Consistency(ConsistencyOptions(drop_ratio=0.3, seed=seed)).views(batch)[0].mask
        for seed in (0, 0, 3)
    ]
    assert torch.equal(views[0], views[1]) and not torch.equal(views[0], views[2])


def test_masked_reconstruction_needs_reference_features(classifier):
    batch = make_batch()
    with pytest.raises(ValueError, match="reference.features"):
        MaskedReconstruction()(classifier, batch, None, ModelOutput(logits=torch.zeros(5, 3)))


# --- next-step -------------------------------------------------------------------------------


def test_next_step_is_the_mse_to_the_next_embedding(classifier):
    batch = make_batch()
    state = moved_state(classifier, len(LENGTHS))
    loss = loss_of(NextStep(), classifier, batch, state)
    output = classifier(batch, state)
    for i, n in enumerate(LENGTHS):
        if n < 2:
            assert loss[i] == 0
        else:
            expected = F.mse_loss(output.features[i, : n - 1], output.embedded[i, 1:n])
            torch.testing.assert_close(loss[i], expected)


def test_next_step_needs_features_and_embeddings():
    output = ModelOutput(logits=torch.zeros(5, 3), features=torch.zeros(5, 14, 16))
    with pytest.raises(ValueError, match="missing: embedded"):
        NextStep()(Fixed(output), make_batch(), None, output)


# --- consistency -----------------------------------------------------------------------------


def test_consistency_is_the_symmetric_kl_between_two_dropped_views(classifier):
    objective = Consistency(ConsistencyOptions(drop_ratio=0.3))
    batch = make_batch()
    state = moved_state(classifier, len(LENGTHS))
    loss = loss_of(objective, classifier, batch, state)
    first, second = objective.views(batch)
    dropped = [batch.mask & ~view.mask for view in (first, second)]
    assert [d.sum(1).tolist() for d in dropped] == [[3, 2, 4, 0, 2]] * 2
    assert not (dropped[0] & dropped[1]).any()  # 2 * count <= n here: disjoint drops
    assert not ((first.mask | second.mask) & ~batch.mask).any()
    log_p, log_q = (classifier(view, state).logits.log_softmax(-1) for view in (first, second))
    kl_pq = (log_p.exp() * (log_p - log_q)).sum(-1)
    kl_qp = (log_q.exp() * (log_q - log_p)).sum(-1)
    torch.testing.assert_close(loss, 0.5 * (kl_pq + kl_qp))
    assert loss[3] == 0  # one real token: nothing may be dropped, both views are the input


def test_consistency_keeps_a_token_and_differs_whenever_it_drops_one():
    mask = torch.ones(1, 3, dtype=torch.bool)
    first, second = Consistency(ConsistencyOptions(drop_ratio=0.9)).views(
        Batch(torch.ones(1, 3).long(), mask)
    )
    assert first.mask.sum() == second.mask.sum() == 1 and not torch.equal(first.mask, second.mask)


def test_consistency_is_zero_for_identical_views_and_symmetric(classifier, monkeypatch):
    objective = Consistency(ConsistencyOptions(drop_ratio=0.3))
    batch = make_batch()
    state = moved_state(classifier, len(LENGTHS))
    loss = loss_of(objective, classifier, batch, state)
    first, second = objective.views(batch)
    monkeypatch.setattr(objective, "views", lambda batch: (second, first))
    torch.testing.assert_close(loss_of(objective, classifier, batch, state), loss)
    monkeypatch.setattr(objective, "views", lambda batch: (first, first))
    same = loss_of(objective, classifier, batch, state)
    torch.testing.assert_close(same, torch.zeros_like(same), rtol=0, atol=1e-7)
