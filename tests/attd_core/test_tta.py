"""The batched inner loop, its guards and the strategies built on it."""

from __future__ import annotations

import math
from typing import ClassVar

import pytest
import torch

from attd_core import (
    AttdModel,
    Batch,
    ConfigError,
    DeltaSSMAdapter,
    EntropyKL,
    InnerLoopStrategy,
    MambaBackbone,
    ModelOutput,
    StrategySpec,
    TTAStrategy,
    UnknownComponentError,
    hookimpl,
    parse_component,
)
from attd_core.adapters.norm_affine import NormAffineAdapter
from attd_core.interfaces import AdapterState
from attd_core.model import BoundModel
from attd_core.options import (
    AdaptiveOptions,
    DeltaSSMOptions,
    EntropyKLOptions,
    FixedOptions,
    GateOptions,
    InnerLoopOptions,
    MambaOptions,
    NoneOptions,
    NormAffineOptions,
    OracleOptions,
)
from attd_core.testing import TinyTask, new_plugin_manager
from attd_core.tta.engine import _Loop, adapt_batch
from attd_core.tta.strategies import AdaptiveSteps, FixedSteps, NoAdaptation, OracleSteps

LENGTHS = TinyTask().lengths  # (9, 5, 14, 7): a padded batch
LR = 30.0  # a fresh Delta-SSM moves slowly: U's gradient is scaled by V (init_scale)
OBJECTIVE = EntropyKL(EntropyKLOptions(kl_weight=1.0))
CORE = new_plugin_manager()  # where the adaptive strategies find their controllers


def make_bound(norms: bool = False, **adapter_options) -> BoundModel:
    """A tiny classifier with confident, A-sensitive predictions (like a trained model's)."""
    torch.manual_seed(0)
    task = TinyTask()
    backbone = MambaBackbone(
        MambaOptions(d_model=16, n_layers=2, d_state=4, dt_min=0.1, dt_max=1.0)
    )
    model = AttdModel(task, backbone).eval()
    with torch.no_grad():
        model.head.weight *= 10
        for layer in backbone.layers:
            layer.mixer.out_proj.weight *= 5
    options = {"rank": 2, "init_scale": 1.0, "max_delta_norm": 5.0, **adapter_options}
    adapters = {"delta-ssm": DeltaSSMAdapter(DeltaSSMOptions(**options))}
    if norms:
        per_sample = options.get("per_sample", True)
        adapters["norm-affine"] = NormAffineAdapter(NormAffineOptions(per_sample=per_sample))
    for param in model.parameters():
        param.requires_grad_(False)  # as the evaluator freezes them
    return BoundModel(model, adapters)


@pytest.fixture(scope="module")
def batch() -> Batch:
    task = TinyTask()
    return task.preprocess(task.load_split("test"))


def loop(**options) -> InnerLoopOptions:
    return InnerLoopOptions(**{"lr": LR, "grad_clip": None, **options})


def fixed(k: int, **options) -> FixedSteps:
    return FixedSteps(FixedOptions(k=k, **{"lr": LR, "grad_clip": None, **options}))


def inner_losses(bound: BoundModel, batch: Batch, state: AdapterState | None) -> torch.Tensor:
    with torch.no_grad():
        return OBJECTIVE(bound, batch, state, bound(batch))


def row_distance(state: AdapterState, start: AdapterState, keys=None) -> torch.Tensor:
    keys = keys or list(start)
    return (
        torch.stack([(state[k] - start[k]).flatten(1).square().sum(1) for k in keys]).sum(0).sqrt()
    )


# --- the contract points of the engine ---------------------------------------------------------


def test_strategies_satisfy_the_protocol():
    assert isinstance(NoAdaptation(NoneOptions()), TTAStrategy)
    assert isinstance(fixed(1), TTAStrategy)
    assert isinstance(OracleSteps(OracleOptions(k_max=2)), TTAStrategy)


def test_none_adapts_nothing(batch):
    result = NoAdaptation().adapt(make_bound(), batch, OBJECTIVE)
    assert result.state is None and torch.equal(result.steps, torch.zeros(4, dtype=torch.long))


def test_fixed_zero_predicts_bitwise_like_none(batch):
    bound = make_bound()
    result = fixed(0).adapt(bound, batch, OBJECTIVE)
    assert torch.equal(result.steps, torch.zeros(4, dtype=torch.long))
    none = NoAdaptation().adapt(bound, batch, OBJECTIVE)
    with torch.no_grad():
        assert torch.equal(bound(batch, result.state).logits, bound(batch, none.state).logits)


def test_a_fresh_state_changes_no_output(batch):
    bound = make_bound(norms=True)
    with torch.no_grad():
        fresh = bound(batch, bound.init_adapter_state(len(batch))).logits
        torch.testing.assert_close(fresh, bound(batch).logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "strategy",
    [
        fixed(3),
        fixed(2, optimizer="adam", lr=0.1, rollback=True, trust_region=1.0),
        OracleSteps(OracleOptions(k_max=2, lr=LR)),
    ],
    ids=["fixed", "fixed-adam-guards", "oracle"],
)
def test_adaptation_never_changes_base_weights(batch, strategy):
    bound = make_bound(norms=True)
    before = {name: p.detach().clone() for name, p in bound.model.named_parameters()}
    result = strategy.adapt(bound, batch, OBJECTIVE)
    assert result.state is not None
    for name, p in bound.model.named_parameters():
        assert p.grad is None, name
        assert torch.equal(p.detach(), before[name]), name
    assert all(not t.requires_grad for t in result.state.values())


def test_the_inner_loop_declares_all_its_state_before_it_runs(batch):
    options = loop(rollback=True, trust_region=1.0, optimizer="adam", entropy_filter=0.99)
    inner = _Loop(make_bound(), batch, OBJECTIVE, options, None, None, False, False)
    declared = set(vars(inner))
    inner.run(torch.full((len(batch),), 2), None)
    assert set(vars(inner)) == declared


def test_fixed_steps_reduce_the_inner_objective(batch):
    bound = make_bound()
    result = fixed(5).adapt(bound, batch, OBJECTIVE)
    assert (
        inner_losses(bound, batch, result.state).mean()
        < inner_losses(bound, batch, None).mean() - 1e-5
    )


def test_adapting_under_no_grad_still_moves_the_state(batch):
    bound = make_bound()
    with torch.no_grad():
        result = fixed(2).adapt(bound, batch, OBJECTIVE)
    assert result.state["layers.0.A_log.U"].abs().max() > 0


def test_adaptation_is_episodic(batch):
    bound = make_bound()
    first = fixed(2).adapt(bound, batch, OBJECTIVE)
    bound.reset_generator()
    again = fixed(2).adapt(bound, batch, OBJECTIVE)
    for key, value in first.state.items():
        assert torch.equal(value, again.state[key]), key


def test_each_sample_stops_at_its_own_step_count(batch):
    bound = make_bound()
    start = bound.init_adapter_state(len(batch))
    mixed = adapt_batch(
        bound, batch, OBJECTIVE, loop(), torch.tensor([0, 2, 3, 1]), initial_state=start
    )
    uniform = adapt_batch(bound, batch, OBJECTIVE, loop(), torch.full((4,), 2), initial_state=start)
    assert torch.equal(mixed.steps, torch.tensor([0, 2, 3, 1]))
    for key, value in mixed.state.items():
        assert torch.equal(value[0], start[key][0]), key
        torch.testing.assert_close(value[1], uniform.state[key][1], rtol=1e-5, atol=1e-6)
    key = "layers.0.A_log.U"
    assert not torch.allclose(mixed.state[key][2], uniform.state[key][2])


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"optimizer": "adam", "lr": 0.05},
        {"momentum": 0.9, "grad_clip": 0.5, "trust_region": 2.0, "rollback": True},
    ],
    ids=["sgd", "adam", "momentum-guards"],
)
def test_batched_adaptation_equals_adapting_each_sample_alone(batch, options):
    bound = make_bound(norms=True)
    start = bound.init_adapter_state(len(batch))
    steps = torch.tensor([3, 1, 0, 2])
    together = adapt_batch(bound, batch, OBJECTIVE, loop(**options), steps, initial_state=start)
    for i, length in enumerate(LENGTHS):
        alone_batch = Batch(
            inputs=batch.inputs[i : i + 1, :length],
            mask=batch.mask[i : i + 1, :length],
            labels=batch.labels[i : i + 1],
        )
        alone_start = {key: value[i : i + 1] for key, value in start.items()}
        alone = adapt_batch(
            bound,
            alone_batch,
            OBJECTIVE,
            loop(**options),
            steps[i : i + 1],
            initial_state=alone_start,
        )
        assert int(alone.steps) == int(together.steps[i])
        alone_state = alone.state or alone_start
        for key, value in alone_state.items():
            torch.testing.assert_close(value[0], together.state[key][i], rtol=1e-5, atol=1e-5)


# --- guards ------------------------------------------------------------------------------------


def test_gradient_clipping_bounds_each_samples_step_and_is_counted(batch):
    bound = make_bound()
    start = bound.init_adapter_state(len(batch))
    result = adapt_batch(
        bound, batch, OBJECTIVE, loop(lr=1.0, grad_clip=1e-6), torch.ones(4), initial_state=start
    )
    moved = row_distance(result.state, start)
    assert (moved <= 1e-6 * (1 + 1e-4)).all() and (moved > 0.5e-6).all()
    assert result.stats["grad_clipped"] == 4


def test_the_trust_region_keeps_each_sample_near_its_start(batch):
    bound = make_bound()
    start = bound.init_adapter_state(len(batch))
    result = adapt_batch(
        bound, batch, OBJECTIVE, loop(trust_region=0.05), torch.full((4,), 3), initial_state=start
    )
    assert (row_distance(result.state, start) <= 0.05 * (1 + 1e-5)).all()
    assert result.stats["trust_region"] > 0


def test_damping_scales_the_step(batch):
    bound = make_bound()
    start = bound.init_adapter_state(len(batch))
    steps = torch.ones(4)
    half = adapt_batch(bound, batch, OBJECTIVE, loop(damping=0.5), steps, initial_state=start)
    slow = adapt_batch(bound, batch, OBJECTIVE, loop(lr=LR / 2), steps, initial_state=start)
    for key, value in half.state.items():
        torch.testing.assert_close(value, slow.state[key])
    assert half.stats["damped"] == 4 and "damped" not in slow.stats


def test_a_learned_damping_gate_sets_each_samples_step(batch):
    bound = make_bound()
    start = bound.init_adapter_state(len(batch))
    steps = torch.ones(4)
    gated = adapt_batch(
        bound,
        batch,
        OBJECTIVE,
        loop(),
        steps,
        initial_state=start,
        gamma=lambda loss: 0.25 + 0 * loss,
    )
    slow = adapt_batch(bound, batch, OBJECTIVE, loop(lr=LR / 4), steps, initial_state=start)
    for key, value in gated.state.items():
        torch.testing.assert_close(value, slow.state[key])
    assert fixed(1, learned_damping=True).gate is not None


def test_rollback_never_leaves_a_sample_worse_than_its_start(batch):
    bound = make_bound(max_delta_norm=1.0)  # log space: within a factor e of A's rates
    start = bound.init_adapter_state(len(batch))
    wild = loop(lr=3000.0, rollback=True)  # steps this large overshoot and raise the loss
    result = adapt_batch(bound, batch, OBJECTIVE, wild, torch.full((4,), 4), initial_state=start)
    assert result.stats["rolled_back"] > 0
    assert result.flags["rolled_back"].any()
    after = inner_losses(bound, batch, result.state)
    assert (after <= inner_losses(bound, batch, start) + 1e-6).all()


class PoisonSample:
    """Entropy-KL, except sample 1's loss is NaN: the engine must revert and flag it alone."""

    def __call__(self, model, batch, state, reference):
        losses = OBJECTIVE(model, batch, state, reference)
        poisoned = batch.mask.sum(1) == LENGTHS[1]  # by content: rows move as samples finish
        return torch.where(poisoned, math.nan, losses)


def test_a_non_finite_sample_is_reverted_and_flagged_and_the_others_adapt():
    bound = make_bound()
    task = TinyTask()
    batch = task.preprocess(task.load_split("test"))
    start = bound.init_adapter_state(len(batch))
    result = adapt_batch(
        bound, batch, PoisonSample(), loop(), torch.full((4,), 2), initial_state=start
    )
    assert result.flags["nonfinite"].tolist() == [False, True, False, False]
    assert result.stats["nonfinite"] == 1
    for key, value in result.state.items():
        assert torch.equal(value[1], start[key][1]), key
        assert torch.isfinite(value).all(), key
    assert (row_distance(result.state, start)[[0, 2, 3]] > 0).all()


def test_the_entropy_filter_skips_uncertain_samples(batch):
    bound = make_bound()
    with torch.no_grad():
        log_p = bound(batch).logits.log_softmax(-1)
    entropy = -(log_p.exp() * log_p).sum(-1) / math.log(3)
    low, high = entropy.sort().values[1:3]
    c = float(low + high) / 2  # half the samples on each side, none on the boundary
    result = adapt_batch(bound, batch, OBJECTIVE, loop(entropy_filter=c), torch.full((4,), 2))
    uncertain = entropy > c
    assert uncertain.any() and not uncertain.all()
    assert torch.equal(result.steps, torch.where(uncertain, 0, 2))
    assert result.stats["entropy_filtered"] == int(uncertain.sum())


def test_the_adapter_projection_runs_and_is_counted(batch):
    result = fixed(3).adapt(make_bound(max_delta_norm=1e-3), batch, OBJECTIVE)
    assert result.stats["delta_norm_capped"] > 0
    for layer in ("layers.0.A_log", "layers.1.A_log"):
        delta = result.state[f"{layer}.U"] @ result.state[f"{layer}.V"]
        rms = delta.pow(2).mean(dim=(-2, -1)).sqrt()  # log space caps the mean log-ratio
        assert rms.max() <= 1e-3 * (1 + 1e-4)
    assert all(isinstance(value, float) for value in result.stats.values())


# --- what is adapted ----------------------------------------------------------------------------


def test_the_selector_adapts_only_what_it_names(batch):
    bound = make_bound(norms=True)
    start = bound.init_adapter_state(len(batch))
    steps = torch.full((4,), 2)
    norms_only = adapt_batch(
        bound, batch, OBJECTIVE, loop(adapt="norm-affine"), steps, initial_state=start
    )
    owners = bound.adapter_owners(start)
    for key, value in norms_only.state.items():
        moved = not torch.equal(value, start[key])
        if owners[key] == "delta-ssm":
            assert not moved, key
    assert any(
        not torch.equal(norms_only.state[k], start[k]) for k in owners if owners[k] == "norm-affine"
    )
    layer1 = adapt_batch(
        bound, batch, OBJECTIVE, loop(adapt="layers.1.*"), steps, initial_state=start
    )
    for key, value in layer1.state.items():
        if not key.startswith("layers.1."):
            assert torch.equal(value, start[key]), key
    with pytest.raises(ConfigError, match="'bogus' names no adapter"):
        adapt_batch(bound, batch, OBJECTIVE, loop(adapt="delta-ssm+bogus"), steps)


def test_a_shared_state_adapts_the_whole_batch_on_the_mean_loss(batch):
    bound = make_bound(per_sample=False)
    result = fixed(2).adapt(bound, batch, OBJECTIVE)
    assert result.state["layers.0.A_log.U"].shape == (32, 2)
    assert result.state["layers.0.A_log.U"].abs().max() > 0
    assert torch.equal(result.steps, torch.full((4,), 2))
    with pytest.raises(ValueError, match="per-sample"):
        adapt_batch(bound, batch, OBJECTIVE, loop(), torch.tensor([0, 1, 1, 1]))


def test_a_continual_stream_carries_the_state_and_reset_restores_the_start(batch):
    bound = make_bound(per_sample=False)
    stream = fixed(1, reset="continual")
    first = stream.adapt(bound, batch, OBJECTIVE)
    second = stream.adapt(bound, batch, OBJECTIVE)
    episodic = fixed(2).adapt(make_bound(per_sample=False), batch, OBJECTIVE)
    for key, value in second.state.items():  # two carried steps are two steps
        torch.testing.assert_close(value, episodic.state[key], rtol=1e-5, atol=1e-6)
    assert not torch.equal(first.state["layers.0.A_log.U"], second.state["layers.0.A_log.U"])
    stream.reset()
    bound.reset_generator()
    fresh = make_bound(per_sample=False)
    restarted = stream.adapt(bound, batch, OBJECTIVE)
    one_step = fixed(1).adapt(fresh, batch, OBJECTIVE)
    for key, value in restarted.state.items():
        assert torch.equal(value, one_step.state[key]), key
    with pytest.raises(ConfigError, match="per_sample: false"):
        fixed(1, reset="continual").adapt(make_bound(), batch, OBJECTIVE)


def test_a_collapsing_stream_is_reset(batch):
    bound = make_bound(per_sample=False)
    stream = fixed(1, reset="continual", collapse_entropy=0.99)  # anything below ~ln C resets
    result = stream.adapt(bound, batch, OBJECTIVE)
    assert result.stats["collapse_resets"] == 1
    assert stream._carried is None


# --- strategies ---------------------------------------------------------------------------------


def calibrated(controller: str, bound: BoundModel, batch: Batch, **options) -> AdaptiveSteps:
    strategy = AdaptiveSteps(
        AdaptiveOptions(k_max=4, controller=controller, lr=LR, grad_clip=None, **options),
        manager=CORE,
    )
    assert strategy.needs_calibration
    strategy.calibrate(bound, [batch], OBJECTIVE)
    assert not strategy.needs_calibration
    return strategy


def test_adaptive_needs_calibration_before_it_adapts(batch):
    strategy = AdaptiveSteps(AdaptiveOptions(k_max=4, controller="quantile"), manager=CORE)
    with pytest.raises(ConfigError, match="not calibrated"):
        strategy.adapt(make_bound(), batch, OBJECTIVE)


@pytest.mark.parametrize("controller", ["threshold", "quantile", "halting", "isotonic"])
def test_adaptive_steps_grow_with_difficulty(batch, controller):
    bound = make_bound()
    strategy = calibrated(controller, bound, batch, target_k=2.0)
    result = strategy.adapt(bound, batch, OBJECTIVE)
    order = result.difficulty.argsort()
    assert (result.steps[order].diff() >= 0).all()
    assert result.steps.max() <= 4


def test_gate_gives_zero_or_k_max_steps(batch):
    bound = make_bound()
    strategy = AdaptiveSteps(GateOptions(k_max=3, lr=LR, target_k=1.5), manager=CORE)
    strategy.calibrate(bound, [batch], OBJECTIVE)
    result = strategy.adapt(bound, batch, OBJECTIVE)
    assert set(result.steps.tolist()) <= {0, 3}


def test_the_oracle_picks_each_samples_best_step(batch):
    bound = make_bound()
    start = bound.init_adapter_state(len(batch))
    oracle = OracleSteps(OracleOptions(k_max=3, lr=LR, grad_clip=None))
    bound.reset_generator()
    result = oracle.adapt(bound, batch, OBJECTIVE)
    assert oracle.uses_labels
    losses = []
    for k in range(4):
        state = adapt_batch(
            bound, batch, OBJECTIVE, loop(), torch.full((4,), k), initial_state=start
        ).state
        with torch.no_grad():
            losses.append(bound.sample_losses(bound(batch, state), batch))
    best = torch.stack(losses, 1).argmin(1)
    assert torch.equal(result.steps, best)
    with torch.no_grad():
        chosen = bound.sample_losses(bound(batch, result.state), batch)
    torch.testing.assert_close(chosen, torch.stack(losses, 1).min(1).values, rtol=1e-5, atol=1e-6)
    unlabelled = Batch(inputs=batch.inputs, mask=batch.mask)
    with pytest.raises(ConfigError, match="needs labels"):
        oracle.adapt(bound, unlabelled, OBJECTIVE)


def unadapted_forwards(bound: BoundModel) -> list[None]:
    """Filled with one entry per forward of `bound`'s model without an adapter state."""
    calls: list[None] = []
    bound.model.register_forward_hook(
        lambda module, args, output: calls.append(None) if args[1] is None else None
    )
    return calls


def test_a_given_reference_replaces_the_loops_own_unadapted_forward(batch):
    bound = make_bound()
    start = bound.init_adapter_state(len(batch))
    steps = torch.full((4,), 2)
    own = adapt_batch(bound, batch, OBJECTIVE, loop(), steps, initial_state=start)
    with torch.no_grad():
        reference = bound(batch)
    calls = unadapted_forwards(bound)
    given = adapt_batch(
        bound, batch, OBJECTIVE, loop(), steps, initial_state=start, reference=reference
    )
    assert calls == []
    assert all(torch.equal(given.state[key], own.state[key]) for key in own.state)


def test_the_oracle_runs_the_unadapted_forward_once(batch):
    bound = make_bound()
    calls = unadapted_forwards(bound)
    OracleSteps(OracleOptions(k_max=2, lr=LR)).adapt(bound, batch, OBJECTIVE)
    assert len(calls) == 1


def test_the_oracle_is_one_strategy_and_no_controller(attd_pm):
    oracle = parse_component("oracle:8", "strategy", attd_pm).create()
    assert isinstance(oracle, OracleSteps) and oracle.uses_labels
    with pytest.raises(UnknownComponentError, match="unknown controller 'oracle'"):
        parse_component("adaptive:8,controller=oracle", "strategy", attd_pm).create()


def test_the_objective_sees_the_unadapted_prediction_as_reference(batch):
    bound = make_bound()
    references: list[ModelOutput] = []

    def recording(model, batch, state, reference):
        references.append(reference)
        return OBJECTIVE(model, batch, state, reference)

    fixed(2).adapt(bound, batch, recording)
    with torch.no_grad():
        unadapted = bound(batch).logits
    assert len(references) == 2
    assert all(torch.equal(ref.logits, unadapted) for ref in references)


# --- a third party's strategy -------------------------------------------------------------------


class EveryOtherOptions(InnerLoopOptions):
    positional: ClassVar[tuple[str, ...]] = ("k",)

    k: int = 1


class EveryOther(InnerLoopStrategy):
    """k steps for even-indexed samples, none for the others: a strategy built on the engine."""

    def adapt(self, model, batch, objective):
        steps = (torch.arange(len(batch)) % 2 == 0).long() * self.options.k
        return self.run_engine(model, batch, objective, steps)


class EveryOtherPlugin:
    @hookimpl
    def attd_register(self, register):
        register(
            StrategySpec(
                name="every-other",
                summary="k steps for every other sample",
                factory=f"{__name__}:EveryOther",
                config=EveryOtherOptions,
            )
        )


def test_a_third_party_strategy_plugs_in_through_the_hook(fresh_plugin_manager, batch):
    fresh_plugin_manager.add_plugin(EveryOtherPlugin(), name="every-other")
    choice = parse_component(
        "every-other:2,lr=30.0,rollback=true", "strategy", fresh_plugin_manager
    )
    strategy = choice.create()
    assert isinstance(strategy, TTAStrategy)
    result = strategy.adapt(make_bound(), batch, OBJECTIVE)
    assert result.steps.tolist() == [2, 0, 2, 0]
