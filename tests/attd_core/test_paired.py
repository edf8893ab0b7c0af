"""Paired statistics against independent computations on fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attd_core import ConfigError, EvalSummary
from attd_core.runtime.paired import (
    compare_paired,
    compare_runs,
    decode_outcomes,
    encode_outcomes,
    with_paired,
)

# 40 examples: 12 both right, 9 wrong->right, 3 right->wrong, 16 both wrong.
BASELINE = [True] * 12 + [False] * 9 + [True] * 3 + [False] * 16
OTHER = [True] * 12 + [True] * 9 + [False] * 3 + [False] * 16


def exact_mcnemar(up: int, down: int) -> float:
    """Two-sided exact McNemar: twice the smaller binomial tail of the discordant pairs."""
    n = up + down
    tail = sum(math.comb(n, i) for i in range(min(up, down) + 1)) / 2**n
    return min(1.0, 2 * tail)


def numpy_interval(pairs, seed: int, resamples: int = 4000) -> tuple[float, float]:
    """A plain resampling loop: draw example indices, shared by every run."""
    rng = np.random.default_rng(seed)
    differences = [np.asarray(o, int) - np.asarray(b, int) for b, o in pairs]
    n = len(differences[0])
    means = []
    for _ in range(resamples):
        index = rng.integers(0, n, n)
        means.append(np.mean([d[index].mean() for d in differences]))
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def test_difference_flips_and_exact_mcnemar_on_fixed_outcomes():
    result = compare_paired(BASELINE, OTHER, seed=0)
    assert result.n == 40
    assert (result.wrong_to_right, result.right_to_wrong) == (9, 3)
    assert result.difference == pytest.approx((21 - 15) / 40)
    assert result.mcnemar_p == pytest.approx(exact_mcnemar(9, 3))
    assert result.mcnemar_p == pytest.approx(0.14599609375)
    assert result.runs == 1 and result.std is None


def test_bootstrap_interval_matches_a_plain_resampling_loop():
    rng = np.random.default_rng(7)
    baseline = rng.random(300) < 0.6
    other = np.where(rng.random(300) < 0.2, ~baseline, baseline)
    result = compare_paired(baseline, other, seed=3)
    low, high = numpy_interval([(baseline, other)], seed=11)
    assert result.ci_low == pytest.approx(low, abs=0.01)
    assert result.ci_high == pytest.approx(high, abs=0.01)
    assert result.ci_low <= result.difference <= result.ci_high


def test_the_interval_is_reproducible_from_the_seed():
    first = compare_paired(BASELINE, OTHER, seed=5)
    assert compare_paired(BASELINE, OTHER, seed=5) == first
    assert compare_paired(BASELINE, OTHER, seed=6).ci_low != first.ci_low or (
        compare_paired(BASELINE, OTHER, seed=6).ci_high != first.ci_high
    )


def test_identical_outcomes_differ_by_zero_with_p_one():
    result = compare_paired(BASELINE, BASELINE, seed=0)
    assert result.difference == 0.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert result.mcnemar_p == 1.0
    assert (result.wrong_to_right, result.right_to_wrong) == (0, 0)


def test_all_flips_one_way():
    result = compare_paired([False] * 10, [True] * 10, seed=0)
    assert result.difference == 1.0
    assert (result.ci_low, result.ci_high) == (1.0, 1.0)
    assert (result.wrong_to_right, result.right_to_wrong) == (10, 0)
    assert result.mcnemar_p == pytest.approx(exact_mcnemar(10, 0)) == pytest.approx(2 / 1024)


def test_mismatched_lengths_are_refused_by_name():
    with pytest.raises(ConfigError, match="baseline judged 3 examples and the strategy 2"):
        compare_paired([True, False, True], [True, False], seed=0)
    with pytest.raises(ConfigError, match="run 2 evaluated 2 examples and run 1 3"):
        compare_runs([([True] * 3, [False] * 3), ([True] * 2, [True] * 2)], seed=0)


def test_several_runs_give_mean_std_and_a_pooled_interval_and_test():
    rng = np.random.default_rng(1)
    baseline = rng.random(200) < 0.5
    runs = [(baseline, np.where(rng.random(200) < p, ~baseline, baseline)) for p in (0.1, 0.3)]
    per_run = [float(np.mean(o.astype(int) - b.astype(int))) for b, o in runs]
    result = compare_runs(runs, seed=2)
    assert result.runs == 2
    assert result.difference == pytest.approx(np.mean(per_run))
    assert result.std == pytest.approx(np.std(per_run, ddof=1))
    up = sum(int(np.sum(~b & o)) for b, o in runs)
    down = sum(int(np.sum(b & ~o)) for b, o in runs)
    assert (result.wrong_to_right, result.right_to_wrong) == (up, down)
    assert result.mcnemar_p == pytest.approx(exact_mcnemar(up, down))
    low, high = numpy_interval(runs, seed=4)
    assert result.ci_low == pytest.approx(low, abs=0.01)
    assert result.ci_high == pytest.approx(high, abs=0.01)


def test_outcomes_round_trip_and_refuse_other_characters():
    assert encode_outcomes([True, False, True]) == "101"
    assert decode_outcomes("101").tolist() == [True, False, True]
    with pytest.raises(ConfigError, match="only 0 and 1"):
        decode_outcomes("10x")


def entry(correct: str | None, split: str = "test") -> EvalSummary:
    accuracy = None if correct is None else correct.count("1") / len(correct)
    return EvalSummary(
        metrics={"accuracy": accuracy},
        mean_k=0.0,
        seconds=1.0,
        n=len(correct or "1"),
        split=split,
        correct=correct,
    )


def test_with_paired_pairs_each_strategy_with_none_of_its_shift():
    entries = {
        "none": entry("0011"),
        "fixed:1": entry("0111"),
        "none@noise": entry("0001"),
        "fixed:1@noise": entry("1001"),
    }
    paired = with_paired(entries, "fixed:1", seed=0).paired
    assert paired is not None and (paired.wrong_to_right, paired.right_to_wrong) == (1, 0)
    shifted = with_paired(entries, "fixed:1@noise", seed=0).paired
    assert shifted is not None and shifted.difference == pytest.approx(0.25)
    assert with_paired(entries, "none", seed=0).paired is None


@pytest.mark.parametrize(
    "other",
    [entry(None), entry("011"), entry("0111", split="validation")],
    ids=["no outcomes", "other examples", "other split"],
)
def test_with_paired_leaves_the_comparison_absent_without_the_same_examples(other):
    entries = {"none": entry("0011"), "fixed:1": other}
    assert with_paired(entries, "fixed:1", seed=0).paired is None
    assert with_paired({"fixed:1": entry("0111")}, "fixed:1", seed=0).paired is None
