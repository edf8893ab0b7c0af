"""The aligned regime (task loss + lambda * inner objective) and the objectives' own heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import attd_core
from attd_core import ConfigError, testing
from attd_core.options import (
    MaskedReconstructionOptions,
    NextStepOptions,
)
from attd_core.runtime.finished_run import load_run
from attd_core.runtime.regimes import aligned_loss
from attd_core.runtime.run import build_components
from attd_core.tta.objectives import MaskedReconstruction, NextStep, NextToken

TINY = [
    "model.backbone.d_model=8",
    "model.backbone.n_layers=1",
    "model.backbone.d_state=4",
    "train.max_steps=4",
    "train.batch_size=8",
    "train.eval_split=null",
]
HEADED = "eval.objective={name: masked-reconstruction, target: inputs, mask_ratio: 0.3}"


@pytest.fixture
def manager(attd_pm: attd_core.PluginManager) -> attd_core.PluginManager:
    attd_pm.add_plugin(testing.ParityPlugin(), name="parity")
    return attd_pm


def resolve(manager, *overrides: str, output_dir=None):
    return attd_core.resolve_run_config(
        manager, task="parity", overrides=[*TINY, *overrides], output_dir=output_dir
    )


def test_masked_reconstruction_of_inputs_is_the_cross_entropy_at_blanked_tokens():
    task = testing.TinyTask()
    objective = MaskedReconstruction(MaskedReconstructionOptions(target="inputs", mask_ratio=0.4))
    model = testing.tiny_model(task)
    head = objective.build_head(model.backbone.d_model, task)
    assert isinstance(head, torch.nn.Linear) and head.out_features == task.input_spec.vocab_size
    batch = testing.task_batch(task, "test", 4)
    loss = objective(model, batch, None, model(batch))
    masked, blank = objective.blanked(batch)
    errors = F.cross_entropy(
        head(model(masked).features).transpose(1, 2), batch.inputs, reduction="none"
    )
    expected = torch.stack([errors[i][blank[i]].mean() for i in range(len(batch))])
    torch.testing.assert_close(loss, expected)
    alone = objective(model, batch.select(torch.tensor([2])), None, model(batch))
    torch.testing.assert_close(alone, loss[2:3])  # a sample's loss is its own


def test_objectives_build_a_head_only_when_they_need_one():
    tokens, d_model = testing.TinyTask(), 8
    assert MaskedReconstruction().build_head(d_model, tokens) is None  # features: no head
    assert NextStep().build_head(d_model, tokens) is None
    next_token = NextToken()
    assert next_token.build_head(d_model, tokens).out_features == tokens.input_spec.vocab_size
    with pytest.raises(ValueError, match="next-token"):
        NextStep(NextStepOptions(target="inputs")).build_head(d_model, tokens)


def test_the_aligned_loss_is_the_task_loss_plus_lambda_times_the_inner_loss():
    task = testing.TinyTask()
    objective = MaskedReconstruction(MaskedReconstructionOptions(target="inputs"))
    head = objective.build_head(8, task)
    model = attd_core.AttdModel(task, testing.tiny_backbone(d_model=8), objective_head=head)
    bound = attd_core.BoundModel(model, {"delta-ssm": attd_core.DeltaSSMAdapter()})
    batch = testing.task_batch(task, "train", 4)
    output = model(batch)
    expected = (
        task.compute_loss(output, batch) + 0.25 * objective(bound, batch, None, output).mean()
    )
    torch.testing.assert_close(aligned_loss(bound, objective, 0.25)(batch), expected)


def test_a_headed_objective_needs_the_aligned_regime(manager):
    resolved = resolve(manager, HEADED)
    with pytest.raises(ConfigError, match=r"masked-reconstruction.*train\.regime=aligned"):
        build_components(resolved, manager, torch.device("cpu"))
    resolved = resolve(manager, "eval.objective={name: next-step, target: inputs}")
    with pytest.raises(ConfigError, match="eval.objective 'next-step': .*next-token"):
        build_components(resolved, manager, torch.device("cpu"))


def test_an_aligned_run_trains_and_saves_the_objective_head(manager, tmp_path):
    out = tmp_path / "aligned"
    resolved = resolve(manager, "train.regime=aligned", "train.aligned_weight=0.5", HEADED)
    initial = build_components(resolved, manager, torch.device("cpu")).model.objective_head
    summary = attd_core.run_experiment(
        resolve(
            manager, "train.regime=aligned", "train.aligned_weight=0.5", HEADED, output_dir=out
        ),
        manager,
    )
    assert summary.train.regime == "aligned" and summary.train.steps == 4
    saved = load_file(out / "checkpoint" / "model.safetensors")
    assert not torch.equal(saved["objective_head.weight"], initial.weight)  # it trained
    _, parts, _ = load_run(out, manager, tta=["fixed:1"])
    assert torch.equal(parts.model.objective_head.weight, saved["objective_head.weight"])
    assert parts.objective.head is parts.model.objective_head  # the objective adapts with it
    _, other, _ = load_run(out, manager, tta=["fixed:1"], overrides=["eval.objective=entropy"])
    assert other.model.objective_head is None  # another objective: the head stays unused
    base = attd_core.run_experiment(resolve(manager, output_dir=tmp_path / "base"), manager)
    assert summary.train.loss != base.train.loss  # same seed, another objective


def test_the_aligned_regime_takes_no_training_strategy(manager):
    with pytest.raises(ConfigError, match="train.strategy"):
        resolve(manager, "train.regime=aligned", "train.strategy=fixed:1")
