"""Poolings that summarise `(B, L, D)` features into `(B, D)`, honouring padding."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def masked_mean(features: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over real tokens only, so padding never dilutes the summary."""
    if mask is None:
        return features.mean(dim=1)
    weights = mask.to(features.dtype).unsqueeze(-1)
    return (features * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def last_token(features: Tensor, mask: Tensor | None) -> Tensor:
    """The last real token: the only one a causal model has seen everything at."""
    if mask is None:
        return features[:, -1]
    last = (mask.long().sum(dim=1) - 1).clamp_min(0)
    return features[torch.arange(features.shape[0], device=features.device), last]


POOLINGS: dict[str, Callable[[Tensor, Tensor | None], Tensor]] = {
    "mean": masked_mean,
    "last": last_token,
}
