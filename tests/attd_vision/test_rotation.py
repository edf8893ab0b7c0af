"""The `rotation` objective: TTT's quarter-turn prediction through a head of its own."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attd_core
from attd_core import Batch, ConfigError, testing
from attd_core.runtime.run import build_components
from attd_vision import (
    IMAGE_SIZE_KEY,
    ImageClassificationOptions,
    ImageClassificationTask,
    Rotation,
    rotated_copies,
)
from attd_vision.collate import ImageCollator
from attd_vision.encoders import PixelEncoder
from attd_vision.options import PixelsOptions


def digits_batch(n: int = 4) -> tuple[ImageClassificationTask, Batch]:
    task = ImageClassificationTask(ImageClassificationOptions(limit_test=n))
    return task, testing.task_batch(task, "test", n)


def test_each_copy_is_the_image_turned_and_odd_turns_swap_the_size():
    gen = torch.Generator().manual_seed(0)
    images = [
        torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8).numpy()
        for shape in ((2, 3, 1), (3, 3, 1))
    ]
    for dtype in ("int", "float"):
        collate = ImageCollator(PixelEncoder(PixelsOptions(dtype=dtype)))
        batch = collate(images, [0, 1])
        turned = rotated_copies(batch)
        assert turned.inputs.shape[0] == 8 and turned.labels is None
        assert torch.equal(turned.mask, batch.mask.repeat_interleave(4, dim=0))  # padding kept
        for row, (height, width) in enumerate(batch.aux[IMAGE_SIZE_KEY].tolist()):
            real = batch.inputs[row][batch.mask[row]]
            image = real.reshape(height, width, -1)
            for turn in range(4):
                copy = row * 4 + turn
                got = turned.inputs[copy][turned.mask[copy]]
                assert torch.equal(got, torch.rot90(image, turn).reshape(real.shape))
                want = [width, height] if turn % 2 else [height, width]
                assert turned.aux[IMAGE_SIZE_KEY][copy].tolist() == want


def test_the_loss_is_the_head_cross_entropy_over_four_turns_per_sample():
    task, batch = digits_batch()
    model = testing.tiny_model(task)
    objective = Rotation()
    head = objective.build_head(model.backbone.d_model, task)
    assert isinstance(head, torch.nn.Linear) and head.out_features == 4
    loss = objective(model, batch, None, model(batch))
    logits = head(model(rotated_copies(batch)).pooled)
    expected = F.cross_entropy(logits, torch.arange(4).repeat(4), reduction="none")
    torch.testing.assert_close(loss, expected.reshape(4, 4).mean(dim=1))
    alone = objective(model, batch.select(torch.tensor([3])), None, model(batch))
    torch.testing.assert_close(alone, loss[3:4])  # a sample's loss is its own


def test_gradient_reaches_each_sample_s_own_adapter_state():
    task, batch = digits_batch()
    bound = testing.tiny_bound_model(task)
    objective = Rotation()
    objective.build_head(bound.model.backbone.d_model, task)
    state = {k: v.requires_grad_() for k, v in bound.init_adapter_state(len(batch)).items()}
    loss = objective(bound, batch, state, bound(batch))
    key = next(k for k in state if k.endswith(".U"))
    (grad,) = torch.autograd.grad(loss[1], [state[key]])
    assert grad[1].abs().sum() > 0
    assert not grad[[0, 2, 3]].any()


def test_images_without_their_sizes_are_refused():
    _, batch = digits_batch()
    with pytest.raises(ConfigError, match="image_size"):
        rotated_copies(Batch(batch.inputs, batch.mask))


def test_rotation_is_registered_and_needs_the_aligned_regime():
    manager = attd_core.PluginManager()
    assert "rotation" in manager.names("objective")
    resolved = attd_core.resolve_run_config(
        manager, task="image-classification", overrides=["eval.objective=rotation"]
    )
    with pytest.raises(ConfigError, match=r"rotation.*train\.regime=aligned"):
        build_components(resolved, manager, torch.device("cpu"))
