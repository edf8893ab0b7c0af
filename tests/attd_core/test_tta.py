"""Test-time adaptation: the entropy-KL objective, the inner loop and the none/fixed strategies."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attd_core import (
    AttdModel,
    Batch,
    ClassificationTask,
    DeltaSSMAdapter,
    EntropyKL,
    FixedSteps,
    InputSpec,
    MambaBackbone,
    ModelOutput,
    NoAdaptation,
    TTAStrategy,
)
from attd_core.interfaces import AdapterState
from attd_core.model import BoundModel
from attd_core.options import (
    DeltaSSMOptions,
    EntropyKLOptions,
    FixedOptions,
    MambaOptions,
    NoneOptions,
)
from attd_core.tta.inner_loop import run_inner_loop

LENGTHS = (9, 5, 14, 7)
LR = 30.0  # a fresh Delta-SSM moves slowly: U's gradient is scaled by V (init_scale)


class TinyTask(ClassificationTask):
    input_spec = InputSpec(vocab_size=12)
    num_classes = 3

    def load_split(self, split: str) -> list[dict]:
        gen = torch.Generator().manual_seed(len(split))
        return [
            {"tokens": torch.randint(1, 12, (n,), generator=gen).tolist(), "label": i % 3}
            for i, n in enumerate(LENGTHS)
        ]

    def preprocess(self, raw_batch: list[dict]) -> Batch:
        return self.collate_tokens(
            [r["tokens"] for r in raw_batch], [r["label"] for r in raw_batch]
        )


class StartingFrom:
    """A bound model whose fresh state is a given one, to compare runs from equal starts."""

    def __init__(self, bound: BoundModel, state: AdapterState) -> None:
        self.bound, self.state = bound, state

    def __call__(self, batch: Batch, adapter_state: AdapterState | None = None) -> ModelOutput:
        return self.bound(batch, adapter_state)

    @property
    def per_sample(self) -> bool:
        return self.bound.per_sample

    def init_adapter_state(self, batch_size: int) -> AdapterState:
        return {key: value.clone() for key, value in self.state.items()}

    def project_adapter_state(self, state: AdapterState):
        return self.bound.project_adapter_state(state)


def make_bound(**adapter_options) -> BoundModel:
    """A tiny classifier with confident, A-sensitive predictions (like a trained model's)."""
    torch.manual_seed(0)
    task = TinyTask()
    backbone = MambaBackbone(
        MambaOptions(d_model=16, n_layers=2, d_state=4, dt_min=0.1, dt_max=1.0)
    )
    model = AttdModel(backbone, task.input_spec, task.build_head(16)).eval()
    with torch.no_grad():
        model.head.weight *= 10
        for layer in backbone.layers:
            layer.mixer.out_proj.weight *= 5
    options = {"rank": 2, "init_scale": 1.0, "max_delta_norm": 5.0, **adapter_options}
    return BoundModel(task, model, DeltaSSMAdapter(DeltaSSMOptions(**options)))


@pytest.fixture(scope="module")
def batch() -> Batch:
    task = TinyTask()
    return task.preprocess(task.load_split("test"))


def fixed(k: int, lr: float = LR, grad_clip: float | None = None) -> FixedSteps:
    return FixedSteps(FixedOptions(k=k, lr=lr, grad_clip=grad_clip))


OBJECTIVE = EntropyKL(EntropyKLOptions(kl_weight=1.0))


# --- the objective ---------------------------------------------------------------------------


def test_entropy_of_uniform_logits_is_log_classes_and_kl_to_itself_is_zero(batch):
    output = ModelOutput(logits=torch.zeros(4, 3))
    torch.testing.assert_close(EntropyKL()(output, batch, output), torch.full((4,), math.log(3)))


def test_kl_term_matches_its_definition_and_does_not_reach_the_reference(batch):
    logits = torch.randn(4, 3, requires_grad=True)
    reference = ModelOutput(logits=torch.randn(4, 3, requires_grad=True))
    loss = EntropyKL(EntropyKLOptions(kl_weight=0.5))(ModelOutput(logits=logits), batch, reference)
    p = logits.softmax(-1)
    entropy = -(p * p.log()).sum(-1)
    kl = F.kl_div(
        reference.logits.log_softmax(-1), logits.log_softmax(-1), log_target=True, reduction="none"
    ).sum(-1)
    torch.testing.assert_close(loss, entropy + 0.5 * kl)
    loss.sum().backward()
    assert logits.grad is not None and reference.logits.grad is None


def test_confidence_threshold_silences_unconfident_samples(batch):
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    loss = EntropyKL(EntropyKLOptions(confidence_threshold=0.9))(ModelOutput(logits=logits), batch)
    assert loss[0] > 0 and loss[1] == 0


def test_objective_rejects_token_level_logits(batch):
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        EntropyKL()(ModelOutput(logits=torch.zeros(4, 5, 3)), batch)


# --- the strategies --------------------------------------------------------------------------


def test_strategies_satisfy_the_protocol():
    assert isinstance(NoAdaptation(NoneOptions()), TTAStrategy)
    assert isinstance(fixed(1), TTAStrategy)


def test_none_adapts_nothing(batch):
    result = NoAdaptation().adapt(make_bound(), batch, OBJECTIVE)
    assert result.state is None and torch.equal(result.steps, torch.zeros(4, dtype=torch.long))


def test_fixed_zero_predicts_bitwise_like_none(batch):
    bound = make_bound()
    result = fixed(0).adapt(bound, batch, OBJECTIVE)
    assert torch.equal(result.steps, torch.zeros(4, dtype=torch.long))
    with torch.no_grad():
        assert torch.equal(bound(batch, result.state).logits, bound(batch).logits)


def test_fixed_steps_leave_base_weights_untouched_without_grads(batch):
    bound = make_bound()
    before = {name: p.detach().clone() for name, p in bound.model.named_parameters()}
    result = fixed(3).adapt(bound, batch, OBJECTIVE)
    assert torch.equal(result.steps, torch.full((4,), 3))
    for name, p in bound.model.named_parameters():
        assert p.grad is None, name
        assert torch.equal(p.detach(), before[name]), name
    assert all(not t.requires_grad for t in result.state.values())


def test_fixed_steps_reduce_the_inner_objective(batch):
    bound = make_bound()
    result = fixed(5).adapt(bound, batch, OBJECTIVE)
    with torch.no_grad():
        reference = bound(batch)
        before = OBJECTIVE(reference, batch, reference).mean()
        after = OBJECTIVE(bound(batch, result.state), batch, reference).mean()
    assert after < before - 1e-5


def test_the_objective_sees_the_unadapted_prediction_as_reference(batch):
    bound = make_bound()
    references = []

    def recording(output: ModelOutput, batch: Batch, reference: ModelOutput | None = None):
        references.append(reference)
        return OBJECTIVE(output, batch, reference)

    fixed(2).adapt(bound, batch, recording)
    with torch.no_grad():
        unadapted = bound(batch).logits
    assert len(references) == 2
    assert all(torch.equal(ref.logits, unadapted) for ref in references)


def test_adapting_under_no_grad_still_moves_the_state(batch):
    bound = make_bound()
    with torch.no_grad():
        result = fixed(2).adapt(bound, batch, OBJECTIVE)
    assert result.state["layers.0.A.U"].abs().max() > 0


def test_adaptation_is_episodic(batch):
    bound = make_bound()
    first = fixed(2).adapt(bound, batch, OBJECTIVE)
    bound.reset_generator()
    again = fixed(2).adapt(bound, batch, OBJECTIVE)
    for key, value in first.state.items():
        assert torch.equal(value, again.state[key]), key


def test_guards_are_counted(batch):
    clipped = fixed(3, grad_clip=1e-12).adapt(make_bound(), batch, OBJECTIVE)
    assert clipped.stats == {"grad_clipped": 3 * 4, "delta_norm_capped": 0}
    result = fixed(3).adapt(make_bound(max_delta_norm=1e-3), batch, OBJECTIVE)
    assert result.stats["delta_norm_capped"] > 0 and "grad_clipped" not in result.stats
    for layer in ("layers.0.A", "layers.1.A"):
        delta = result.state[f"{layer}.U"] @ result.state[f"{layer}.V"]
        assert torch.linalg.matrix_norm(delta).max() <= 1e-3 * (1 + 1e-4)
    assert all(isinstance(value, float) for value in result.stats.values())


def test_gradient_clipping_bounds_each_samples_step(batch):
    bound = make_bound()
    start = bound.init_adapter_state(len(batch))
    result = fixed(1, lr=1.0, grad_clip=1e-6).adapt(StartingFrom(bound, start), batch, OBJECTIVE)
    moved = (
        torch.stack([(result.state[k] - start[k]).flatten(1).square().sum(1) for k in start])
        .sum(0)
        .sqrt()
    )
    assert (moved <= 1e-6 * (1 + 1e-4)).all() and (moved > 0.5e-6).all()


def test_shared_state_adapts_the_whole_batch_together(batch):
    bound = make_bound(per_sample=False)
    result = fixed(2).adapt(bound, batch, OBJECTIVE)
    assert result.state["layers.0.A.U"].shape == (32, 2)
    assert result.state["layers.0.A.U"].abs().max() > 0
    with pytest.raises(ValueError, match="per-sample"):
        run_inner_loop(bound, batch, OBJECTIVE, torch.tensor([0, 1, 1, 1]), lr=LR)


# --- the inner loop with per-sample step counts ----------------------------------------------


def test_each_sample_stops_at_its_own_step_count(batch):
    bound = make_bound()
    start = bound.init_adapter_state(len(batch))
    model = StartingFrom(bound, start)
    mixed = run_inner_loop(model, batch, OBJECTIVE, torch.tensor([0, 2, 3, 1]), lr=LR)
    uniform = run_inner_loop(model, batch, OBJECTIVE, torch.tensor([2, 2, 2, 2]), lr=LR)
    assert torch.equal(mixed.steps, torch.tensor([0, 2, 3, 1]))
    for key, value in mixed.state.items():
        assert torch.equal(value[0], start[key][0]), key
        torch.testing.assert_close(value[1], uniform.state[key][1], rtol=1e-5, atol=1e-6)
    for sample in (1, 2, 3):
        assert not torch.equal(mixed.state["layers.0.A.U"][sample], start["layers.0.A.U"][sample])
    assert not torch.allclose(mixed.state["layers.0.A.U"][2], uniform.state["layers.0.A.U"][2])


def test_only_stepped_samples_are_projected(batch):
    class HalvingProjection(StartingFrom):
        def project_adapter_state(self, state: AdapterState):
            return {key: value / 2 for key, value in state.items()}, {"halved": torch.tensor(3)}

    bound = make_bound()
    start = bound.init_adapter_state(len(batch))
    model = HalvingProjection(bound, start)
    result = run_inner_loop(model, batch, OBJECTIVE, torch.tensor([0, 2, 1, 1]), lr=LR)
    assert result.stats == {"halved": 2 * 3}
    for key, value in result.state.items():
        assert torch.equal(value[0], start[key][0]), key
        assert not torch.equal(value[1:], start[key][1:]), key


def test_batched_adaptation_equals_adapting_each_sample_alone(batch):
    bound = make_bound()
    start = bound.init_adapter_state(len(batch))
    together = fixed(3).adapt(StartingFrom(bound, start), batch, OBJECTIVE)
    for i, length in enumerate(LENGTHS):
        alone_batch = Batch(
            inputs=batch.inputs[i : i + 1, :length],
            mask=batch.mask[i : i + 1, :length],
            labels=batch.labels[i : i + 1],
        )
        alone_start = {key: value[i : i + 1] for key, value in start.items()}
        alone = fixed(3).adapt(StartingFrom(bound, alone_start), alone_batch, OBJECTIVE)
        for key, value in alone.state.items():
            torch.testing.assert_close(value[0], together.state[key][i], rtol=1e-5, atol=1e-5)
