"""Small heads that let an inner objective predict the input itself (TTT's auxiliary head).

An objective that needs one builds it with `input_head`; the runtime makes it part of
the model (`AttdModel.objective_head`), so the `aligned` regime trains it with the task
and checkpoints keep it. Predicting the raw input (a token id, or a pixel's channels)
rather than the model's own features cannot be solved by shrinking the features, which
is what makes it a target joint training can share with the task.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from attd_core.errors import ConfigError
from attd_core.interfaces import InputSpec


def input_head(d_model: int, input_spec: InputSpec, objective: str) -> nn.Linear:
    """A linear map from features to the input: vocabulary logits, or the channels."""
    if input_spec.vocab_size is not None:
        return nn.Linear(d_model, input_spec.vocab_size)
    if input_spec.channels is not None:
        return nn.Linear(d_model, input_spec.channels)
    raise ConfigError(
        f"{objective} predicts the input: the task's input_spec names neither "
        "vocab_size nor channels"
    )


def input_errors(predicted: Tensor, inputs: Tensor) -> Tensor:
    """`(B, T)` per-position error of `predicted` `(B, T, V or C)` against `inputs`:
    cross-entropy for integer tokens `(B, T)`, mean squared error for floats `(B, T, C)`."""
    if inputs.is_floating_point():
        return (predicted - inputs.detach()).pow(2).mean(dim=-1)
    return F.cross_entropy(predicted.transpose(1, 2), inputs, reduction="none")


def head_of(objective: object) -> nn.Module:
    """The objective's head; a clear error when the runtime never built it."""
    head = getattr(objective, "head", None)
    if head is None:
        name = getattr(objective, "name", type(objective).__name__)
        raise ConfigError(
            f"{name} predicts the input through a head: build it with build_head(d_model, "
            "task) (the runtime does, and the aligned regime trains it)"
        )
    return head
