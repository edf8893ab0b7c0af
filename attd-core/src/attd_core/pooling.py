"""Poolings that summarise `(B, L, D)` features into `(B, D)`: the `pooling` plugins.

Each is registered in `attd_core._plugin` as a `PoolingSpec` and chosen by `model.pooling`:

| name | summary |
|---|---|
| `masked-mean` | mean over real tokens only (the default: padding never dilutes it) |
| `mean` | plain mean over every position, padding included |
| `last` | the last real token (the only one a causal model has seen everything at) |
| `cls` | the first real token, where a task puts its CLS token |

A pooling is any callable `(features, mask) -> (B, D)` (`attd_core.Pooling`); the spec's
factory is called with the validated options and returns one. A pooling that is an
`nn.Module` becomes part of the model, so its parameters train and are checkpointed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from attd_core.specs import NoOptions


def mean(features: Tensor, mask: Tensor | None) -> Tensor:
    """Plain mean over every position, padded ones included."""
    return features.mean(dim=1)


def masked_mean(features: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over real tokens only, so padding never dilutes the summary."""
    if mask is None:
        return features.mean(dim=1)
    weights = mask.to(features.dtype).unsqueeze(-1)
    return (features * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def _at(features: Tensor, index: Tensor) -> Tensor:
    return features[torch.arange(features.shape[0], device=features.device), index]


def last_token(features: Tensor, mask: Tensor | None) -> Tensor:
    """The last real token (left or right padding alike); position 0 for an all-pad row."""
    if mask is None:
        return features[:, -1]
    positions = torch.arange(mask.shape[1], device=mask.device)
    return _at(features, (positions * mask.long()).argmax(dim=1))


def first_token(features: Tensor, mask: Tensor | None) -> Tensor:
    """The first real token (left or right padding alike); position 0 for an all-pad row."""
    if mask is None:
        return features[:, 0]
    return _at(features, mask.long().argmax(dim=1))


PoolingFunction = Callable[[Tensor, Tensor | None], Tensor]

BUILT_IN: dict[str, PoolingFunction] = {
    "masked-mean": masked_mean,
    "mean": mean,
    "last": last_token,
    "cls": first_token,
}
"""attd-core's poolings by registered name (what the `pooling` factories below return)."""

DEFAULT = "masked-mean"


def _factory(name: str) -> Callable[[NoOptions | None], PoolingFunction]:
    def create(options: NoOptions | None = None) -> PoolingFunction:
        return BUILT_IN[name]

    create.__name__ = create.__qualname__ = f"create_{name.replace('-', '_')}"
    create.__doc__ = f"The `{name}` pooling ({BUILT_IN[name].__doc__})"
    return create


create_masked_mean = _factory("masked-mean")
create_mean = _factory("mean")
create_last = _factory("last")
create_cls = _factory("cls")
