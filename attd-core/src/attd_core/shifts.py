"""Token-level test-time shifts: substitution, deletion and insertion at severity 1-5.

They act on any task whose inputs are integer tokens, after collation and before the
strategy sees the batch, and never touch labels: the model must cope with corrupted
input. Replacement and inserted tokens are drawn from the sample's own real tokens, so
a shift needs no vocabulary and never creates an id the task cannot embed.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from attd_core.errors import ConfigError
from attd_core.interfaces import Batch
from attd_core.options import TokenShiftOptions

RATE_PER_SEVERITY = 0.05
"""Severity s corrupts each real token with probability 0.05 * s (5 % to 25 %)."""


class _TokenShift:
    name = "token"

    def __init__(self, options: TokenShiftOptions) -> None:
        self.options = options
        self.rate = RATE_PER_SEVERITY * options.severity

    def _check(self, batch: Batch, moves_tokens: bool) -> None:
        if batch.inputs.is_floating_point() or batch.inputs.dim() != 2:
            raise ConfigError(
                f"shift {self.name!r} needs integer token inputs (B, L); this task feeds "
                f"{batch.inputs.dtype} inputs of shape {tuple(batch.inputs.shape)}"
            )
        per_position = batch.labels is not None and batch.labels.dim() == 2
        if moves_tokens and (per_position or batch.aux):
            raise ConfigError(
                f"shift {self.name!r} moves tokens, which would misalign this task's "
                "per-position labels or aux tensors; use token-substitution"
            )

    def _rows(self, batch: Batch) -> list[Tensor]:
        mask = batch.mask if batch.mask is not None else torch.ones_like(batch.inputs, dtype=bool)
        return [row[keep].cpu() for row, keep in zip(batch.inputs, mask, strict=True)]

    def _draw(self, row: Tensor, count: int, generator: torch.Generator) -> Tensor:
        return row[torch.randint(len(row), (count,), generator=generator)]


class TokenSubstitution(_TokenShift):
    """Each real token becomes, with probability 0.05 * severity, another of its tokens."""

    name = "token-substitution"

    def apply(self, batch: Batch, generator: torch.Generator) -> Batch:
        self._check(batch, moves_tokens=False)
        hit = torch.rand(batch.inputs.shape, generator=generator) < self.rate
        if batch.mask is not None:
            hit &= batch.mask.cpu()
        inputs = batch.inputs.cpu().clone()
        for i, row in enumerate(self._rows(batch)):
            count = int(hit[i].sum())
            if count:
                inputs[i, hit[i]] = self._draw(row, count, generator)
        return replace(batch, inputs=inputs.to(batch.inputs.device))


class TokenDeletion(_TokenShift):
    """Each real token is dropped with probability 0.05 * severity (one always stays)."""

    name = "token-deletion"

    def apply(self, batch: Batch, generator: torch.Generator) -> Batch:
        self._check(batch, moves_tokens=True)
        rows = []
        for row in self._rows(batch):
            keep = torch.rand(len(row), generator=generator) >= self.rate
            keep[torch.randint(len(row), (1,), generator=generator)] = True
            rows.append(row[keep])
        return _repack(batch, rows)


class TokenInsertion(_TokenShift):
    """After each real token, with probability 0.05 * severity, one of its tokens is added."""

    name = "token-insertion"

    def apply(self, batch: Batch, generator: torch.Generator) -> Batch:
        self._check(batch, moves_tokens=True)
        rows = []
        for row in self._rows(batch):
            grown: list[Tensor] = []
            after = torch.rand(len(row), generator=generator) < self.rate
            for position, token in enumerate(row):
                grown.append(token.reshape(1))
                if after[position]:
                    grown.append(self._draw(row, 1, generator))
            rows.append(torch.cat(grown))
        return _repack(batch, rows)


def _repack(batch: Batch, rows: list[Tensor]) -> Batch:
    """Right-pad `rows` with the batch's padding value into new inputs and mask."""
    length = max(len(row) for row in rows)
    pad = _pad_value(batch)
    inputs = torch.full((len(rows), length), pad, dtype=batch.inputs.dtype)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, row in enumerate(rows):
        inputs[i, : len(row)] = row
        mask[i, : len(row)] = True
    device = batch.inputs.device
    return replace(batch, inputs=inputs.to(device), mask=mask.to(device))


def _pad_value(batch: Batch) -> int:
    """The id at the batch's padded positions (0 when nothing is padded)."""
    if batch.mask is None or bool(batch.mask.all()):
        return 0
    return int(batch.inputs[~batch.mask][0])
