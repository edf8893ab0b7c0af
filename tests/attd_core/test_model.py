"""`AttdModel.forward`, the one forward pass: what the head reads for each kind of task,
and the path a strategy's adapter state takes (`BoundModel` -> `AttdModel` -> backbone)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from attd_core import AttdModel, Batch, BoundModel, ConfigError
from attd_core.model import resolve_pooling
from attd_core.testing import (
    TaskConformance,
    TinyTask,
    new_plugin_manager,
    task_batch,
    tiny_backbone,
)


class TokenLevelTask(TinyTask):
    num_classes = 12
    token_level = True


class ReversedSecondTower(TinyTask):
    """Pairs each sequence with itself reversed, to see both towers reach the head."""

    def build_head(self, d_model: int) -> torch.nn.Module:
        return torch.nn.Linear(2 * d_model, self.num_classes)

    def second_tower(self, batch: Batch) -> Batch:
        return Batch(inputs=batch.inputs.flip(1), mask=batch.mask.flip(1))

    def pair_towers(self, first: Tensor, second: Tensor) -> Tensor:
        return torch.cat([first, second], dim=-1)


def model_for(task) -> AttdModel:
    torch.manual_seed(0)
    return AttdModel(task, tiny_backbone()).eval()


@torch.no_grad()
def test_a_classification_head_reads_the_pooled_features():
    task = TinyTask()
    model, batch = model_for(task), task_batch(task)
    output = model(batch)
    embedded = model.embed(batch.inputs)
    features = model.backbone(embedded, mask=batch.mask)
    pooled = model.pool(features, batch.mask)
    assert torch.equal(output.embedded, embedded) and torch.equal(output.features, features)
    assert torch.equal(output.pooled, pooled)
    assert torch.equal(output.logits, model.head(pooled))


@torch.no_grad()
def test_a_token_level_head_reads_every_position():
    task = TokenLevelTask()
    model, batch = model_for(task), task_batch(task)
    output = model(batch)
    assert output.pooled is None
    assert output.logits.shape == (*batch.inputs.shape, task.num_classes)
    torch.testing.assert_close(output.logits, model.head(output.features))


@torch.no_grad()
def test_a_two_tower_head_reads_both_towers_with_one_adapter_state():
    task = ReversedSecondTower()
    model, batch = model_for(task), task_batch(task)
    state = {"norm_f.bias": torch.randn(16)}
    seen = []
    model.backbone.register_forward_hook(
        lambda module, args, kwargs, output: seen.append(kwargs["adapter_state"]),
        with_kwargs=True,
    )
    output = model(batch, state)
    assert len(seen) == 2 and all(given is state for given in seen)
    second = task.second_tower(batch)
    features = model.backbone(model.embed(second.inputs), mask=second.mask, adapter_state=state)
    expected = model.head(task.pair_towers(output.pooled, model.pool(features, second.mask)))
    torch.testing.assert_close(output.logits, expected)


def test_half_of_the_two_tower_hooks_is_refused():
    class SecondTowerOnly(TinyTask):
        def second_tower(self, batch: Batch) -> Batch:
            return batch

    with pytest.raises(ConfigError, match="needs both"):
        AttdModel(SecondTowerOnly(), tiny_backbone())


@torch.no_grad()
def test_the_bound_model_hands_the_adapters_deltas_to_the_models_forward():
    task = TinyTask()
    model, batch = model_for(task), task_batch(task)
    lora = new_plugin_manager().create("adapter", "lora", {"rank": 2, "alpha": 8})
    bound = BoundModel(model, {"lora": lora})
    state = bound.init_adapter_state(len(batch))
    state = {key: value + 0.1 if key.endswith(".U") else value for key, value in state.items()}
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(args))
    output = bound(batch, state)
    ((given_batch, given_deltas),) = calls
    assert given_batch is batch and given_deltas.keys() == state.keys()
    scaled = next(key for key in state if key.endswith(".U"))
    torch.testing.assert_close(given_deltas[scaled], state[scaled] * 4)  # alpha / rank
    assert bound.task is task and torch.equal(output.logits, model(batch, given_deltas).logits)


def test_the_task_conformance_suite_refuses_a_task_with_its_own_forward():
    class OldStyle(TinyTask):
        def forward(self, model, batch, adapter_state=None):
            raise AssertionError("never called")

    with pytest.raises(AssertionError, match="a Task has no forward"):
        TaskConformance().test_satisfies_the_task_protocol(OldStyle())


def full_batch(task, length: int = 12) -> Batch:
    """A batch of equal-length sequences: no padding, an all-True mask."""
    gen = torch.Generator().manual_seed(0)
    sequences = torch.randint(1, task.input_spec.vocab_size, (4, length), generator=gen)
    return task.collate_tokens(sequences.tolist(), [0, 1, 0, 1])


@torch.no_grad()
def test_a_batch_without_padding_reaches_the_backbone_and_pooling_with_no_mask():
    """An all-True mask is dropped once per forward, so no layer does masking work for it."""
    task = TinyTask()
    model, batch = model_for(task), full_batch(task)
    assert batch.mask is not None and bool(batch.mask.all())
    seen = []
    model.backbone.register_forward_hook(
        lambda module, args, kwargs, output: seen.append(kwargs["mask"]), with_kwargs=True
    )
    pooled = []
    pooling = model.pooling

    def spy(features: Tensor, mask: Tensor | None) -> Tensor:
        pooled.append(mask)
        return pooling(features, mask)

    model.pooling = spy
    model(batch)
    assert seen == [None] and pooled == [None]
    padded = task_batch(task)
    assert not bool(padded.mask.all())
    model(padded)
    assert seen[1] is padded.mask and pooled[1] is padded.mask


@pytest.mark.parametrize(
    "name, options",
    [
        ("mamba", {}),
        ("mamba", {"bidirectional": True}),
        ("transformer", {}),
        ("transformer", {"causal": True}),
        ("hybrid", {}),
    ],
)
@torch.no_grad()
def test_every_backbone_gives_the_same_features_with_no_mask_as_with_an_all_true_one(name, options):
    """What dropping an all-True mask relies on (up to float rounding: attention then
    takes SDPA's unmasked kernel)."""
    torch.manual_seed(0)
    backbone = tiny_backbone(name, **options)
    x = torch.randn(4, 12, backbone.d_model)
    mask = torch.ones(4, 12, dtype=torch.bool)
    torch.testing.assert_close(backbone(x, mask=mask), backbone(x, mask=None))


@pytest.mark.parametrize("pooling", ["masked-mean", "mean", "last", "cls"])
def test_every_pooling_gives_the_same_summary_with_no_mask_as_with_an_all_true_one(pooling):
    _, pool = resolve_pooling(pooling)
    features = torch.randn(4, 12, 16)
    mask = torch.ones(4, 12, dtype=torch.bool)
    torch.testing.assert_close(pool(features, mask), pool(features, None), rtol=1e-6, atol=1e-6)
