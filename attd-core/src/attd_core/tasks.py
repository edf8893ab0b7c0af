"""A base for classification tasks: one label per sequence, accuracy as the metric.

Plugins subclass it and supply data (`load_split`) and collation (`preprocess`); the
head, loss and metrics are shared, and the model's forward pools the backbone's
features for the head, so every classification task reads its sequence the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attd_core.interfaces import Batch, InputSpec, ModelOutput


class ClassificationTask:
    """Sequence classification; subclasses set `input_spec` and `num_classes`, and
    `splits` when theirs are not train, validation and test."""

    input_spec: InputSpec
    num_classes: int
    splits: tuple[str, ...] = ("train", "validation", "test")

    def build_head(self, d_model: int) -> nn.Module:
        return nn.Linear(d_model, self.num_classes)

    def compute_loss(self, output: ModelOutput, batch: Batch) -> Tensor:
        return F.cross_entropy(output.logits, batch.labels)

    def sample_losses(self, output: ModelOutput, batch: Batch) -> Tensor:
        return F.cross_entropy(output.logits, batch.labels, reduction="none")

    def compute_metrics(self, output: ModelOutput, batch: Batch) -> dict[str, float]:
        """Batch means; the evaluator weights them by batch size.

        Accuracy is counted in Python integers, so 365 right of 1000 reads 0.365 exactly.
        """
        loss = F.cross_entropy(output.logits, batch.labels)
        correct = int(self.example_correct(output, batch).sum())
        return {"accuracy": correct / len(batch), "loss": float(loss)}

    def example_correct(self, output: ModelOutput, batch: Batch) -> Tensor:
        """Whether each example's prediction is its label `(B,)` bool: what pairs two
        strategies example by example."""
        return output.logits.argmax(dim=-1) == batch.labels

    def collate_tokens(
        self, sequences: Sequence[Sequence[int]], labels: Sequence[int] | None = None
    ) -> Batch:
        """Right-pad token sequences with `input_spec.fill_id`; the mask marks real tokens."""
        length = max((len(seq) for seq in sequences), default=0)
        inputs = torch.full((len(sequences), max(length, 1)), self.input_spec.fill_id)
        for row, seq in enumerate(sequences):
            inputs[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        lengths = torch.tensor([len(seq) for seq in sequences])
        mask = torch.arange(inputs.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        target = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
        return Batch(inputs=inputs, mask=mask, labels=target)
