"""Token shifts: what each corruption does, at which rate, and what it never touches."""

from __future__ import annotations

import pytest
import torch

from attd_core import Batch, ConfigError, parse_component
from attd_core.options import TokenShiftOptions
from attd_core.shifts import TokenDeletion, TokenInsertion, TokenSubstitution

PAD = 0


def token_batch(rows: int = 64, vocab: int = 50, seed: int = 0) -> Batch:
    """Random tokens 1..vocab-1 of lengths 20..60, right-padded with PAD."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(20, 61, (rows,), generator=gen)
    inputs = torch.randint(1, vocab, (rows, int(lengths.max())), generator=gen)
    mask = torch.arange(inputs.shape[1]) < lengths[:, None]
    return Batch(inputs=inputs.masked_fill(~mask, PAD), mask=mask, labels=torch.arange(rows) % 3)


def build(name: str, severity: int, attd_pm):
    return parse_component(f"{name}:{severity}", "shift", attd_pm).create()


def real(batch: Batch, row: int) -> list[int]:
    return batch.inputs[row][batch.mask[row]].tolist()


def is_subsequence(short: list[int], long: list[int]) -> bool:
    tokens = iter(long)
    return all(token in tokens for token in short)


@pytest.mark.parametrize("name", ["token-substitution", "token-deletion", "token-insertion"])
def test_shifts_are_plugins_with_a_severity_from_1_to_5(attd_pm, name):
    assert build(name, 2, attd_pm).options.severity == 2
    for bad in (0, 6):
        with pytest.raises(ConfigError, match="severity"):
            build(name, bad, attd_pm)


@pytest.mark.parametrize("name", ["token-substitution", "token-deletion", "token-insertion"])
def test_shifts_are_reproducible_and_leave_the_input_batch_alone(attd_pm, name):
    batch = token_batch()
    before = batch.inputs.clone()
    shifter = build(name, 3, attd_pm)
    first = shifter.apply(batch, torch.Generator().manual_seed(1))
    again = shifter.apply(batch, torch.Generator().manual_seed(1))
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.mask, again.mask)
    assert torch.equal(batch.inputs, before)
    assert torch.equal(first.labels, batch.labels)
    assert (first.inputs[~first.mask] == PAD).all()


def test_substitution_replaces_about_five_percent_per_severity_with_the_samples_tokens(attd_pm):
    batch = token_batch()
    shifted = build("token-substitution", 5, attd_pm).apply(batch, torch.Generator())
    assert torch.equal(shifted.mask, batch.mask)
    changed = (shifted.inputs != batch.inputs) & batch.mask
    share = float(changed.sum() / batch.mask.sum())
    assert 0.18 < share < 0.27  # 25 % drawn, minus replacements by an equal token
    for row in range(len(batch)):
        assert set(real(shifted, row)) <= set(real(batch, row))


def test_deletion_drops_tokens_in_order_and_keeps_at_least_one(attd_pm):
    batch = token_batch()
    shifted = build("token-deletion", 4, attd_pm).apply(batch, torch.Generator())
    kept = shifted.mask.sum(1).float() / batch.mask.sum(1).float()
    assert 0.72 < float(kept.mean()) < 0.88  # 20 % dropped
    for row in range(len(batch)):
        assert is_subsequence(real(shifted, row), real(batch, row))
    one = Batch(inputs=torch.tensor([[5]]), mask=torch.tensor([[True]]))
    assert build("token-deletion", 5, attd_pm).apply(one, torch.Generator()).inputs.tolist() == [
        [5]
    ]


def test_insertion_adds_copies_of_the_samples_tokens(attd_pm):
    batch = token_batch()
    shifted = build("token-insertion", 2, attd_pm).apply(batch, torch.Generator())
    grown = shifted.mask.sum(1).float() / batch.mask.sum(1).float()
    assert 1.05 < float(grown.mean()) < 1.15  # 10 % inserted
    for row in range(len(batch)):
        assert is_subsequence(real(batch, row), real(shifted, row))
        assert set(real(shifted, row)) <= set(real(batch, row))


def test_token_shifts_refuse_what_they_would_break():
    floats = Batch(inputs=torch.zeros(2, 4, 3), mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ConfigError, match="integer token inputs"):
        TokenSubstitution(TokenShiftOptions()).apply(floats, torch.Generator())
    per_position = Batch(
        inputs=torch.ones(2, 4, dtype=torch.long),
        mask=torch.ones(2, 4, dtype=torch.bool),
        labels=torch.ones(2, 4, dtype=torch.long),
    )
    for kind in (TokenDeletion, TokenInsertion):
        with pytest.raises(ConfigError, match="per-position labels"):
            kind(TokenShiftOptions()).apply(per_position, torch.Generator())
    kept = TokenSubstitution(TokenShiftOptions()).apply(per_position, torch.Generator())
    assert torch.equal(kept.labels, per_position.labels)
