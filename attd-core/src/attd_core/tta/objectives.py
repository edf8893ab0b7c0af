"""Inner objectives: self-supervised losses a test-time inner loop minimises, one per sample."""

from __future__ import annotations

import torch
from torch import Tensor

from attd_core.interfaces import Batch, ModelOutput
from attd_core.options import EntropyKLOptions


class EntropyKL:
    """Prediction entropy, anchored to the unadapted prediction by a KL term.

    Entropy alone drives predictions to collapse onto one class; the KL to the reference
    keeps adaptation near what the trained model said. The confidence filter (EATA/SAR)
    lets only already-confident samples pull towards sharper predictions.
    """

    def __init__(self, options: EntropyKLOptions | None = None) -> None:
        self.options = options or EntropyKLOptions()

    def __call__(
        self, output: ModelOutput, batch: Batch, reference: ModelOutput | None = None
    ) -> Tensor:
        """Loss per sample `(B,)` from classification logits `(B, C)`."""
        if output.logits.dim() != 2:
            raise ValueError(
                f"entropy-kl expects classification logits (B, C); got {tuple(output.logits.shape)}"
            )
        log_p = torch.log_softmax(output.logits, dim=-1)
        p = log_p.exp()
        loss = -(p * log_p).sum(dim=-1)
        threshold = self.options.confidence_threshold
        if threshold is not None:
            confident = p.detach().amax(dim=-1) >= threshold
            loss = torch.where(confident, loss, torch.zeros_like(loss))
        if reference is not None and self.options.kl_weight > 0:
            log_q = torch.log_softmax(reference.logits.detach(), dim=-1)
            loss = loss + self.options.kl_weight * (p * (log_p - log_q)).sum(dim=-1)
        return loss
