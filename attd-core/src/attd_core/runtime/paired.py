"""Paired statistics: a strategy against the baseline (`none`) on the same examples.

Two strategies evaluated on one split see the same examples in the same order (the
evaluator batches them by length, deterministically), so their per-example outcomes
pair up. For each pair the strategy either agrees with the baseline or flips it
(wrong->right, right->wrong); from the pairs come:

- the accuracy difference with a percentile bootstrap interval that resamples examples,
  keeping each pair together (`scipy.stats.bootstrap`, seeded). Percentile rather than
  BCa: the per-example differences take three values only, and when the two strategies
  agree everywhere every resample is equal, where BCa is undefined (NaN) and the
  percentile interval is the honest [0, 0];
- the exact McNemar p-value: under "no difference" each discordant pair is a fair coin,
  so it is a two-sided binomial test of the wrong->right count among the discordant
  pairs (`scipy.stats.binomtest`); 1 when there are none.

Several runs of one config (seeds) evaluate the same examples, so the pooled interval
resamples examples jointly: a drawn example counts in every run, and the interval
covers the mean difference over the runs. The flips and the McNemar test pool every
run's pairs (treating them as independent, which repeated examples are not: read the
p-value as a summary, and the standard deviation across runs as the seed's effect).

Imports no torch; scipy loads when a comparison is computed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from attd_core.errors import ConfigError
from attd_core.runtime.summary import EvalSummary, PairedComparison

if TYPE_CHECKING:
    from attd_core.runtime.evaluator import EvalResult

BASELINE = "none"
CONFIDENCE = 0.95
RESAMPLES = 9999
BATCH = 64
"""Resamples drawn at once: bounds the bootstrap's memory at BATCH x n numbers."""


def encode_outcomes(correct: Sequence[bool]) -> str:
    """Per-example outcomes as `summary.json` keeps them: `1` right, `0` wrong."""
    return "".join("1" if right else "0" for right in correct)


def decode_outcomes(text: str) -> np.ndarray:
    """The boolean outcomes `encode_outcomes` wrote; anything but 0 and 1 is refused."""
    if set(text) - {"0", "1"}:
        raise ConfigError(f"per-example outcomes hold only 0 and 1, not {text[:20]!r}")
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8) == ord("1")


def compare_paired(
    baseline: Sequence[bool],
    other: Sequence[bool],
    *,
    seed: int,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
) -> PairedComparison:
    """`other` against `baseline`, example by example (both in evaluation order)."""
    return compare_runs([(baseline, other)], seed=seed, confidence=confidence, resamples=resamples)


def compare_runs(
    pairs: Sequence[tuple[Sequence[bool], Sequence[bool]]],
    *,
    seed: int,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
) -> PairedComparison:
    """`other` against `baseline` in each run of `pairs` (baseline, other), pooled.

    Every run must hold the same number of examples (the same examples, in the same
    order); a mismatch is a `ConfigError` naming the run.
    """
    from scipy.stats import binomtest

    if not pairs:
        raise ConfigError("a paired comparison needs at least one run")
    runs = [_aligned(baseline, other, index) for index, (baseline, other) in enumerate(pairs)]
    n = len(runs[0][0])
    for index, (baseline, _) in enumerate(runs):
        if len(baseline) != n:
            raise ConfigError(
                f"run {index + 1} evaluated {len(baseline)} examples and run 1 {n}: "
                "runs compare together only on the same examples"
            )
    differences = [other.astype(np.int8) - baseline.astype(np.int8) for baseline, other in runs]
    per_run = [float(d.mean()) for d in differences]
    ci_low, ci_high = _interval(differences, seed, confidence, resamples)
    up = sum(int(np.sum(~baseline & other)) for baseline, other in runs)
    down = sum(int(np.sum(baseline & ~other)) for baseline, other in runs)
    p = 1.0 if up + down == 0 else float(binomtest(up, up + down, 0.5).pvalue)
    return PairedComparison(
        n=n,
        difference=float(np.mean(per_run)),
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=confidence,
        mcnemar_p=min(p, 1.0),
        wrong_to_right=up,
        right_to_wrong=down,
        runs=len(runs),
        std=float(np.std(per_run, ddof=1)) if len(runs) > 1 else None,
        resamples=resamples,
        seed=seed,
    )


def _aligned(
    baseline: Sequence[bool], other: Sequence[bool], index: int
) -> tuple[np.ndarray, np.ndarray]:
    first, second = np.asarray(baseline, dtype=bool), np.asarray(other, dtype=bool)
    if first.ndim != 1 or second.ndim != 1 or len(first) != len(second):
        raise ConfigError(
            f"run {index + 1}: the baseline judged {len(first)} examples and the strategy "
            f"{len(second)}: a paired comparison needs the same examples in the same order"
        )
    if len(first) == 0:
        raise ConfigError(f"run {index + 1}: no examples to compare")
    return first, second


def _interval(
    differences: Sequence[np.ndarray], seed: int, confidence: float, resamples: int
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean difference over the runs, resampling
    example indices jointly across runs (`paired=True`)."""
    from scipy.stats import bootstrap

    if len(differences[0]) == 1:  # one example: every resample is that example
        value = float(np.mean([d[0] for d in differences]))
        return value, value

    def mean_over_runs(*samples: np.ndarray, axis: int) -> np.ndarray:
        return np.mean([sample.mean(axis=axis) for sample in samples], axis=0)

    result = bootstrap(
        tuple(differences),
        mean_over_runs,
        n_resamples=resamples,
        batch=BATCH,
        vectorized=True,
        paired=True,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)


def with_paired(entries: Mapping[str, EvalSummary], key: str, *, seed: int) -> EvalSummary:
    """`entries[key]` with `paired` set against the `none` entry of its shift (`none` for
    `TTA`, `none@SHIFT` for `TTA@SHIFT`), when both judged the same examples: the same
    split, the same number of examples, each example's outcome recorded. Otherwise the
    entry as it is (`paired` None: absent, not zero)."""
    entry = entries[key]
    tta, at, shift = key.partition("@")
    baseline = entries.get(f"{BASELINE}{at}{shift}")
    if tta == BASELINE or baseline is None:
        return entry
    first, second = baseline.correct, entry.correct
    if first is None or second is None or len(first) != len(second):
        return entry
    if baseline.split != entry.split:
        return entry
    paired = compare_paired(decode_outcomes(first), decode_outcomes(second), seed=seed)
    return entry.model_copy(update={"paired": paired})


def paired_summaries(results: Mapping[str, EvalResult], *, seed: int) -> dict[str, EvalSummary]:
    """Each result's `summary.json` entry, every strategy compared with `none` on the
    same examples (bootstrap seeded by `seed`) where the task judges each example."""
    entries = {canonical: result.summary() for canonical, result in results.items()}
    return {key: with_paired(entries, key, seed=seed) for key in entries}
