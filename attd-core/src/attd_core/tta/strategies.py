"""TTA strategies: how many inner steps each sample gets (`none`, `fixed:k`)."""

from __future__ import annotations

import torch

from attd_core.interfaces import AdaptableModel, Adaptation, Batch, InnerObjective
from attd_core.options import FixedOptions, NoneOptions
from attd_core.tta.inner_loop import run_inner_loop


class NoAdaptation:
    """The baseline: predict with the trained weights, zero steps for every sample."""

    def __init__(self, options: NoneOptions | None = None) -> None:
        self.options = options or NoneOptions()

    def adapt(self, model: AdaptableModel, batch: Batch, objective: InnerObjective) -> Adaptation:
        steps = torch.zeros(len(batch), dtype=torch.long, device=batch.inputs.device)
        return Adaptation(state=None, steps=steps)


class FixedSteps:
    """The same k inner steps for every sample (`fixed:k`)."""

    def __init__(self, options: FixedOptions) -> None:
        self.options = options

    def adapt(self, model: AdaptableModel, batch: Batch, objective: InnerObjective) -> Adaptation:
        steps = torch.full((len(batch),), self.options.k, device=batch.inputs.device)
        return run_inner_loop(
            model, batch, objective, steps, lr=self.options.lr, grad_clip=self.options.grad_clip
        )
