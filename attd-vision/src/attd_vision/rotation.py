"""`rotation`: TTT's image objective, predicting by how much each image was turned.

Sun et al. (2020) train a 4-way rotation head beside the task head (the `aligned`
regime) and minimise its loss at test time. Its target, the rotation, is the same
however noisy or occluded the image is, whereas reconstructing the pixels would fit the
corruption itself. Each sample is run at 0, 90, 180 and 270 degrees in one forward; its
loss is the head's cross-entropy on its four copies, so it depends on that sample alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attd_core import AdaptableModel, AdapterState, Batch, ConfigError, ModelOutput, Task
from attd_vision.options import IMAGE_SIZE_KEY, RotationOptions

TURNS = 4
"""Quarter turns: the head's classes."""


def rotated_copies(batch: Batch) -> Batch:
    """Each sample turned by 0..3 quarter turns, sample-major `(4 B, L, ...)`, padding
    where it was, `aux[IMAGE_SIZE_KEY]` swapped for odd turns, no labels."""
    sizes = batch.aux.get(IMAGE_SIZE_KEY)
    if sizes is None or not isinstance(sizes, Tensor) or sizes.shape != (len(batch), 2):
        raise ConfigError(
            f"rotation needs each image's size in Batch.aux[{IMAGE_SIZE_KEY!r}] as a "
            f"({len(batch)}, 2) tensor; use the `pixels` encoder"
        )
    mask = batch.mask if batch.mask is not None else torch.ones(batch.inputs.shape[:2]).bool()
    inputs = batch.inputs.repeat_interleave(TURNS, dim=0)
    turned_sizes = sizes.repeat_interleave(TURNS, dim=0)
    for row, (height, width) in enumerate(sizes.tolist()):
        real = batch.inputs[row][mask[row].bool()]
        if real.shape[0] % (height * width):
            raise ConfigError(
                f"rotation needs one token per pixel: sample {row} has {real.shape[0]} real "
                f"tokens for its {height}x{width} image; use the `pixels` encoder"
            )
        image = real.reshape(height, width, -1)
        for turn in range(TURNS):
            copy = row * TURNS + turn
            inputs[copy][mask[row].bool()] = torch.rot90(image, turn).reshape(real.shape)
            if turn % 2:
                turned_sizes[copy] = sizes[row].flip(0)
    aux = {key: value for key, value in batch.aux.items() if key != IMAGE_SIZE_KEY}
    repeated = {
        key: value.repeat_interleave(TURNS, dim=0) if isinstance(value, Tensor) else value
        for key, value in aux.items()
    }
    return Batch(
        inputs=inputs,
        mask=mask.repeat_interleave(TURNS, dim=0),
        aux={**repeated, IMAGE_SIZE_KEY: turned_sizes},
    )


class Rotation:
    """The mean cross-entropy of the rotation head over each image's four turns."""

    name = "rotation"
    head: nn.Module | None = None

    def __init__(self, options: RotationOptions | None = None) -> None:
        self.options = options or RotationOptions()

    def build_head(self, d_model: int, task: Task) -> nn.Module:
        """A linear map from the pooled features to the four turns."""
        self.head = nn.Linear(d_model, TURNS)
        return self.head

    def __call__(
        self,
        model: AdaptableModel,
        batch: Batch,
        state: AdapterState | None,
        reference: ModelOutput,
    ) -> Tensor:
        if self.head is None:
            raise ConfigError("rotation predicts through its head: build it with build_head")
        turned = rotated_copies(batch)
        if state is not None and model.per_sample:  # a shared state serves every copy
            state = {key: value.repeat_interleave(TURNS, dim=0) for key, value in state.items()}
        pooled = model(turned, state).pooled
        if pooled is None:
            raise ConfigError("rotation needs the pooled features (B, D) of the task's forward")
        targets = torch.arange(TURNS, device=pooled.device).repeat(len(batch))
        losses = F.cross_entropy(self.head(pooled), targets, reduction="none")
        return losses.reshape(len(batch), TURNS).mean(dim=1)
