"""memo: the marginal entropy over augmented views, per-sample views, states, errors, strategies.

The properties every objective has (per-sample loss, padding, gradient to the state,
determinism) are checked for memo in test_objectives.py with the others.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from attd_core import Batch, ConfigError, sample_views
from attd_core.interfaces import AdapterState, InputSpec, ModelOutput
from attd_core.tasks import ClassificationTask
from attd_core.testing import TinyTask, new_plugin_manager, task_batch, tiny_bound_model
from attd_core.tta.objectives import Memo
from attd_core.tta.strategies import FixedSteps, OracleSteps

SUBSTITUTION = ["token-substitution:3"]


class AugmentedTinyTask(TinyTask):
    """TinyTask with the token edits memo takes by default."""

    augmentations = ("token-substitution:3",)


@pytest.fixture(scope="module")
def manager():
    return new_plugin_manager()


def memo(manager, **options) -> Memo:
    return manager.create("objective", "memo", {"augmentations": SUBSTITUTION, **options})


def per_sample_state(bound, batch_size: int) -> AdapterState:
    """A moved per-sample state: every sample's rows differ, so each changes its output."""
    bound.reset_generator()
    state = bound.init_adapter_state(batch_size)
    generator = torch.Generator().manual_seed(3)
    return {
        key: value + 0.3 * torch.randn(value.shape, generator=generator)
        for key, value in state.items()
    }


def batch_of(bound, n: int = 4) -> Batch:
    return task_batch(bound.task, "test", n)


# -- the loss ---------------------------------------------------------------------------


def test_loss_is_the_entropy_of_the_mean_prediction_over_the_views(manager):
    """Against an independent computation: each view forwarded alone with its sample's
    state rows, probabilities averaged, then -sum p log p."""
    bound = tiny_bound_model()
    batch = batch_of(bound)
    state = per_sample_state(bound, len(batch))
    objective = memo(manager, views=5)
    loss = objective(bound, batch, state, bound(batch))
    views = sample_views(batch, objective.augmentations(None), 5, 0, bound.input_spec.fill_id)
    for i in range(len(batch)):
        probs = []
        for v in range(5):
            row = torch.tensor([i * 5 + v])
            one = views.select(row)
            width = int(one.mask.sum())
            one = replace(one, inputs=one.inputs[:, :width], mask=one.mask[:, :width])
            rows = {key: value[i : i + 1] for key, value in state.items()}
            probs.append(bound(one, rows).logits.softmax(dim=-1)[0].double())
        mean = torch.stack(probs).mean(dim=0)
        expected = -(mean * mean.log()).sum()
        torch.testing.assert_close(loss[i].double(), expected, rtol=1e-5, atol=1e-6)


def test_views_that_disagree_raise_the_loss_above_each_views_entropy(manager):
    """The marginal's entropy is at least the mean entropy of the views (concavity), and
    strictly more where the views' predictions differ: what single-sample entropy misses."""
    bound = tiny_bound_model()
    batch = batch_of(bound)
    state = per_sample_state(bound, len(batch))
    objective = memo(manager, views=6)
    loss = objective(bound, batch, state, bound(batch))
    views = sample_views(batch, objective.augmentations(None), 6, 0, bound.input_spec.fill_id)
    rows = {key: value.repeat_interleave(6, dim=0) for key, value in state.items()}
    log_p = bound(views, rows).logits.log_softmax(dim=-1)
    view_entropy = -(log_p.exp() * log_p).sum(dim=-1).reshape(len(batch), 6).mean(dim=1)
    assert (loss >= view_entropy - 1e-6).all() and (loss > view_entropy + 1e-4).any()


# -- the views --------------------------------------------------------------------------


def test_a_samples_views_depend_on_it_alone_and_repeat_at_every_call(manager):
    bound = tiny_bound_model()
    shifts = memo(manager).augmentations(None)
    batch = batch_of(bound)
    views = sample_views(batch, shifts, 4, 7, 0)
    again = sample_views(batch, shifts, 4, 7, 0)
    assert torch.equal(views.inputs, again.inputs) and torch.equal(views.mask, again.mask)
    # sample 2 alone, then last in another batch with left padding added
    alone = sample_views(batch.select(torch.tensor([2])), shifts, 4, 7, 0)
    moved = batch.select(torch.tensor([3, 0, 2]))
    padded = replace(
        moved,
        inputs=torch.cat([torch.zeros(3, 5, dtype=torch.long), moved.inputs], dim=1),
        mask=torch.cat([torch.zeros(3, 5, dtype=torch.bool), moved.mask], dim=1),
    )
    there = sample_views(padded, shifts, 4, 7, 0)
    width = int(alone.mask.sum(dim=1).max())
    assert torch.equal(there.inputs[8:, :width], alone.inputs[:, :width])
    assert torch.equal(there.mask[8:, :width], alone.mask[:, :width])
    assert not there.mask[8:, width:].any()


def test_views_differ_from_each_other_and_follow_the_seed(manager):
    bound = tiny_bound_model()
    shifts = memo(manager).augmentations(None)
    batch = batch_of(bound)
    views = sample_views(batch, shifts, 6, 0, 0)
    other_seed = sample_views(batch, shifts, 6, 1, 0)
    longest = views.inputs[12:18]  # sample 2 has 14 tokens
    assert len({tuple(row.tolist()) for row in longest}) > 1
    assert not torch.equal(views.inputs, other_seed.inputs)
    assert views.labels is None and len(views) == 6 * len(batch)


# -- adapter states ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("adapter", "options"),
    [
        ("delta-ssm", {"rank": 2, "init_scale": 1.0, "max_delta_norm": 5.0}),
        ("norm-affine", {}),
        ("lora", {"rank": 2}),
    ],
)
def test_each_samples_loss_reaches_its_own_state_rows_only(manager, adapter, options):
    adapters = {adapter: manager.create("adapter", adapter, options)}
    bound = tiny_bound_model(adapters=adapters)
    batch = batch_of(bound)
    state = {
        key: value.requires_grad_() for key, value in per_sample_state(bound, len(batch)).items()
    }
    loss = memo(manager, views=3)(bound, batch, state, bound(batch))
    loss[1].backward()
    grads = [value.grad for value in state.values() if value.grad is not None]
    assert grads
    reached = torch.stack([g.flatten(1).abs().sum(dim=1) for g in grads]).sum(dim=0)
    assert reached[1] > 0 and (reached[[0, 2, 3]] == 0).all()


def test_a_shared_state_serves_every_view(manager):
    adapters = {"delta-ssm": manager.create("adapter", "delta-ssm", {"per_sample": False})}
    bound = tiny_bound_model(adapters=adapters)
    batch = batch_of(bound)
    state = {
        key: value.requires_grad_() for key, value in bound.init_adapter_state(len(batch)).items()
    }
    loss = memo(manager, views=3)(bound, batch, state, bound(batch))
    loss.sum().backward()
    assert loss.shape == (len(batch),)
    assert any(value.grad is not None and value.grad.abs().sum() > 0 for value in state.values())


# -- strategies -------------------------------------------------------------------------


def test_memo_drives_fixed_adaptive_and_oracle_steps(manager):
    bound = tiny_bound_model(task=AugmentedTinyTask())
    batch = batch_of(bound)
    objective = manager.create("objective", "memo", {"views": 3})
    objective.check(bound.task)
    fixed = FixedSteps(manager.get("strategy", "fixed").config(k=2, lr=0.05))
    adaptive = manager.create("strategy", "adaptive", {"k_max": 2, "controller": "fixed"})
    oracle = OracleSteps(manager.get("strategy", "oracle").config(k_max=2, lr=0.05))
    for strategy, expected in ((fixed, 2), (adaptive, 2)):
        adaptation = strategy.adapt(bound, batch, objective)
        assert (adaptation.steps == expected).all() and adaptation.state is not None
    adaptation = oracle.adapt(bound, batch, objective)
    assert ((adaptation.steps >= 0) & (adaptation.steps <= 2)).all()


# -- errors -----------------------------------------------------------------------------


class Unaugmented(ClassificationTask):
    input_spec = InputSpec(vocab_size=12, pad_id=0)
    num_classes = 3


def test_a_task_without_augmentations_is_a_config_error_naming_the_option(manager):
    objective = manager.create("objective", "memo")
    with pytest.raises(ConfigError, match=r"Unaugmented provides none.*augmentations"):
        objective.check(Unaugmented())
    bound = tiny_bound_model()  # TinyTask offers none either
    batch = batch_of(bound)
    with pytest.raises(ConfigError, match="eval.objective.augmentations"):
        objective(bound, batch, None, bound(batch))
    memo(manager).check(Unaugmented())  # the option is enough


def test_unknown_or_example_drawing_augmentations_are_refused(manager):
    with pytest.raises(ConfigError, match="augmentation 'no-such-shift'"):
        memo(manager, augmentations=["no-such-shift"])
    with pytest.raises(ConfigError, match="severity"):
        memo(manager, augmentations=["token-substitution:9"])


def test_an_augmentation_that_does_not_fit_the_inputs_names_the_option(manager):
    class FloatTask(Unaugmented):
        input_spec = InputSpec(channels=2)

    bound = tiny_bound_model(task=FloatTask())
    inputs = torch.randn(2, 5, 2)
    batch = Batch(inputs=inputs, mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ConfigError, match=r"integer token inputs.*`augmentations` option"):
        memo(manager)(bound, batch, None, ModelOutput(logits=torch.zeros(2, 3)))


@pytest.mark.parametrize("views", [0, 257])
def test_views_are_bounded(manager, views):
    with pytest.raises(Exception, match="views"):
        manager.create("objective", "memo", {"views": views})
