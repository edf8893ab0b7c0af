"""Controllers: how many inner steps each sample gets, from its difficulty signal.

Every controller is monotone by construction (a harder sample never gets fewer steps)
and plans each sample from its own difficulty alone. They are `nn.Module`s
so the learned ones train with the controller regime and all of them save and load
through `state_dict`; whatever calibration fits lives in buffers, next to a `fitted`
flag, so a loaded controller knows it is ready.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attd_core.interfaces import ControllerPlan
from attd_core.options import (
    ControllerOptions,
    FixedControllerOptions,
    GateControllerOptions,
    HaltingControllerOptions,
    IsotonicControllerOptions,
    QuantileControllerOptions,
    ThresholdControllerOptions,
)

_BISECTION_STEPS = 60


def _as_signal(difficulty: Tensor) -> Tensor:
    if not isinstance(difficulty, Tensor) or difficulty.dim() != 1:
        shape = tuple(difficulty.shape) if isinstance(difficulty, Tensor) else type(difficulty)
        raise ValueError(f"difficulty must be a (B,) tensor, one value per sample; got {shape}")
    return difficulty if difficulty.is_floating_point() else difficulty.float()


def _calibration_signal(difficulty: Tensor) -> Tensor:
    """The finite calibration difficulties in float64: a non-finite one orders nothing."""
    s = _as_signal(difficulty).detach().double()
    s = s[torch.isfinite(s)]
    if s.numel() == 0:
        raise ValueError("calibration needs at least one finite difficulty")
    return s


def _spread(s: Tensor) -> float:
    """A positive scale of the calibration difficulties (their std, or 1 when all equal)."""
    std = float(s.std()) if s.numel() > 1 else 0.0
    return std if std > 0 and math.isfinite(std) else 1.0


def _inverse_softplus(x: Tensor) -> Tensor:
    """softplus^-1(x) for x > 0, stable for large and tiny x."""
    return x + torch.log(-torch.expm1(-x))


def _one_hot(k_hard: Tensor, k_max: int, dtype: torch.dtype) -> Tensor:
    return F.one_hot(k_hard, k_max + 1).to(dtype)


def _discrete_plan(
    k_hard: Tensor, k_max: int, dtype: torch.dtype, **details: Tensor
) -> ControllerPlan:
    """A plan with no gradient: k_soft and cost are k itself, weights one-hot."""
    k_float = k_hard.to(dtype)
    return ControllerPlan(
        k_hard=k_hard,
        k_soft=k_float,
        cost=k_float,
        weights=_one_hot(k_hard, k_max, dtype),
        details=details,
    )


def _straight_through(k_hard: Tensor, soft: Tensor) -> Tensor:
    """Forward value k_hard, gradient of `soft`: the thresholds learn from integer steps."""
    return k_hard.to(soft.dtype) + (soft - soft.detach())


def fractions_for_target(k_max: int, target_k: float) -> list[float]:
    """Fractions f_1 >= ... >= f_k_max of samples to exceed each threshold, summing to target_k.

    Since k = sum_i 1[s > t_i], the mean k is sum_i f_i. The shape
    f_i = ((k_max - i + 1) / (k_max + 1)) ** p is one free exponent: p = 1 spreads samples
    evenly over 0..k_max (mean k_max / 2), larger p moves mass to fewer steps, p -> 0 gives
    everyone k_max. p is found by bisection (the sum falls as p grows).
    """
    if not 0 <= target_k <= k_max:
        raise ValueError(f"target_k ({target_k}) must lie in [0, k_max={k_max}]")
    bases = [(k_max - i + 1) / (k_max + 1) for i in range(1, k_max + 1)]
    if target_k == 0:
        return [0.0] * k_max
    if target_k == k_max:
        return [1.0] * k_max
    # sum_i bases_i ** p <= k_max * bases_1 ** p, which is target_k at p = hi.
    lo, hi = 0.0, math.log(target_k / k_max) / math.log(bases[0])
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        if sum(b**mid for b in bases) > target_k:
            lo = mid
        else:
            hi = mid
    return [b**hi for b in bases]


def _thresholds_exceeded_by(s: Tensor, fractions: Tensor) -> Tensor:
    """Thresholds that a fraction `fractions` of the float64 difficulties `s` exceeds.

    A threshold can only split the sorted difficulties between distinct values, so each
    goes to the split whose count below it is nearest n (1 - f): within half a sample
    without ties, and as near as ties allow with them. It sits mid-gap (half a std
    beyond the extremes), so rounding to float32 cannot carry it onto a difficulty.
    """
    ordered = torch.sort(s).values
    n = ordered.numel()
    wanted = n * (1.0 - fractions)
    value = ordered[wanted.floor().long().clamp(0, n - 1)]
    first = torch.searchsorted(ordered, value)
    past = torch.searchsorted(ordered, value, right=True)
    split = torch.where(wanted - first <= past - wanted, first, past)
    middle = (ordered[(split - 1).clamp(min=0)] + ordered[split.clamp(max=n - 1)]) / 2
    margin = 0.5 * _spread(s)
    middle = torch.where(split == 0, ordered[0] - margin, middle)
    return torch.where(split == n, ordered[-1] + margin, middle)


def quantile_thresholds(difficulty: Tensor, k_max: int, target_k: float) -> Tensor:
    """`(k_max,)` non-decreasing thresholds putting the calibration set's mean k at target_k.

    A fraction f_i of the difficulties exceeds threshold i (`fractions_for_target`),
    up to 1/(2n) each; ties among the difficulties can move a fraction further, which no
    threshold placement avoids. Returned in float64.
    """
    s = _calibration_signal(difficulty)
    fractions = torch.tensor(fractions_for_target(k_max, target_k), dtype=torch.float64)
    return torch.cummax(_thresholds_exceeded_by(s, fractions), dim=0).values


def isotonic_steps(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Least-squares non-decreasing fit of y on x by pool-adjacent-violators, as steps.

    Returns float64 `(breakpoints, levels)`: the fit is `levels[j]` on
    `breakpoints[j] <= x < breakpoints[j + 1]`. Equal x values are pooled first, since a
    function of x must give them one value; blocks with equal means are merged, so the
    breakpoints are where the fit rises.
    """
    order = torch.argsort(x, stable=True)
    xs, ys = x[order].double(), y[order].double()
    unique_x, group = torch.unique_consecutive(xs, return_inverse=True)
    sums = torch.zeros_like(unique_x).index_add_(0, group, ys)
    counts = torch.zeros_like(unique_x).index_add_(0, group, torch.ones_like(ys))
    starts: list[float] = []
    block_sums: list[float] = []
    block_counts: list[float] = []
    for start, total, count in zip(unique_x.tolist(), sums.tolist(), counts.tolist(), strict=True):
        starts.append(start)
        block_sums.append(total)
        block_counts.append(count)
        while (
            len(starts) > 1
            and block_sums[-2] / block_counts[-2] >= block_sums[-1] / block_counts[-1]
        ):
            starts.pop()
            total, count = block_sums.pop(), block_counts.pop()
            block_sums[-1] += total
            block_counts[-1] += count
    levels = [total / count for total, count in zip(block_sums, block_counts, strict=True)]
    return torch.tensor(starts, dtype=torch.float64), torch.tensor(levels, dtype=torch.float64)


class _Controller(nn.Module):
    """What every controller shares: the step budget; no best steps needed."""

    uses_best_steps = False

    def __init__(self, options: ControllerOptions) -> None:
        super().__init__()
        self.options = options
        self.k_max = options.k_max

    @property
    def needs_calibration(self) -> bool:
        return False

    def calibrate(self, difficulty: Tensor, best_steps: Tensor | None = None) -> None:
        """Nothing to fit."""


class _Fitted(_Controller):
    """A controller with something to calibrate; `fitted` survives save and load."""

    def __init__(self, options: ControllerOptions) -> None:
        super().__init__(options)
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def needs_calibration(self) -> bool:
        return not bool(self.fitted)

    @property
    def target_k(self) -> float:
        """The mean k calibration aims at: the option, or k_max / 4."""
        target = getattr(self.options, "target_k", None)
        target = self.k_max / 4 if target is None else float(target)
        if target > self.k_max:
            raise ValueError(f"target_k ({target}) must not exceed k_max ({self.k_max})")
        return target

    def _mark_fitted(self) -> None:
        self.fitted.fill_(True)

    def _require_fitted(self) -> None:
        if self.needs_calibration:
            raise ValueError(
                f"{type(self).__name__} has not been calibrated: call calibrate() on a "
                "calibration split's difficulties first (or load a calibrated state_dict)"
            )


class FixedController(_Controller):
    """k_max steps for every sample: the `fixed` baseline as a controller."""

    def __init__(self, options: FixedControllerOptions | None = None) -> None:
        super().__init__(options or FixedControllerOptions())

    def plan(self, difficulty: Tensor) -> ControllerPlan:
        s = _as_signal(difficulty)
        k_hard = torch.full(s.shape, self.k_max, dtype=torch.long, device=s.device)
        return _discrete_plan(k_hard, self.k_max, s.dtype)


class ThresholdController(_Fitted):
    """The method's controller: k = #{i: s > t_i} with learned increasing thresholds.

    t_i = t0 + cumsum(softplus(delta))_i keeps the thresholds increasing whatever the
    parameters, so k is monotone in s and the gate weights form a distribution. Gates
    sigmoid((s - t_i) / tau) carry the gradient through a straight-through k_soft.
    """

    def __init__(self, options: ThresholdControllerOptions | None = None) -> None:
        super().__init__(options or ThresholdControllerOptions())
        self.tau = self.options.tau
        self.t0 = nn.Parameter(torch.zeros(()))
        self.delta = nn.Parameter(_inverse_softplus(torch.ones(self.k_max)))

    def thresholds(self) -> Tensor:
        return self.t0 + torch.cumsum(F.softplus(self.delta), dim=0)

    def calibrate(self, difficulty: Tensor, best_steps: Tensor | None = None) -> None:
        """Put the thresholds at `quantile_thresholds`, kept strictly increasing.

        A threshold tied with the one below moves up by 1e-4 of the difficulties' std (the
        ones after it keep their places); t0 sits one std below the first threshold (any
        positive offset gives the same thresholds).
        """
        s = _calibration_signal(difficulty)
        scale = _spread(s)
        targets = quantile_thresholds(s, self.k_max, self.target_k).tolist()
        placed = [targets[0]]
        for target in targets[1:]:
            placed.append(max(target, placed[-1] + 1e-4 * scale))
        placed_t = torch.tensor(placed, dtype=torch.float64)
        steps = torch.diff(placed_t, prepend=placed_t[:1] - scale)
        with torch.no_grad():
            self.t0.copy_(placed_t[0] - steps[0])
            self.delta.copy_(_inverse_softplus(steps))
        self._mark_fitted()

    def plan(self, difficulty: Tensor) -> ControllerPlan:
        s = _as_signal(difficulty)
        thresholds = self.thresholds().to(device=s.device)
        s = s.to(thresholds.dtype)
        gates = torch.sigmoid((s[:, None] - thresholds) / self.tau)
        k_hard = (s[:, None] > thresholds).sum(dim=1)
        k_soft = _straight_through(k_hard, gates.sum(dim=1))
        ones = torch.ones_like(gates[:, :1])
        padded = torch.cat([ones, gates, torch.zeros_like(ones)], dim=1)
        weights = padded[:, :-1] - padded[:, 1:]
        return ControllerPlan(
            k_hard=k_hard,
            k_soft=k_soft,
            cost=k_soft,
            weights=weights,
            details={"gates": gates, "thresholds": thresholds},
        )


class GateController(_Fitted):
    """Ponder or not: k_max steps when s > t, else none, with one learned threshold."""

    def __init__(self, options: GateControllerOptions | None = None) -> None:
        super().__init__(options or GateControllerOptions())
        self.tau = self.options.tau
        self.threshold = nn.Parameter(torch.zeros(()))

    def calibrate(self, difficulty: Tensor, best_steps: Tensor | None = None) -> None:
        """t exceeded by a fraction target_k / k_max of the calibration difficulties."""
        s = _calibration_signal(difficulty)
        fraction = torch.tensor([self.target_k / self.k_max], dtype=torch.float64)
        with torch.no_grad():
            self.threshold.copy_(_thresholds_exceeded_by(s, fraction)[0])
        self._mark_fitted()

    def plan(self, difficulty: Tensor) -> ControllerPlan:
        s = _as_signal(difficulty)
        threshold = self.threshold.to(device=s.device)
        s = s.to(threshold.dtype)
        gate = torch.sigmoid((s - threshold) / self.tau)
        k_hard = (s > threshold).long() * self.k_max
        k_soft = _straight_through(k_hard, self.k_max * gate)
        between = gate.new_zeros(gate.shape[0], self.k_max - 1)
        weights = torch.cat([(1 - gate)[:, None], between, gate[:, None]], dim=1)
        return ControllerPlan(
            k_hard=k_hard,
            k_soft=k_soft,
            cost=k_soft,
            weights=weights,
            details={"gates": gate, "thresholds": threshold},
        )


class HaltingController(_Fitted):
    """PonderNet-style halting with a per-step hazard that falls as difficulty rises.

    lambda(s) = sigmoid(b - softplus(w) s); K is geometric, cut at k_max. k_hard is K's
    median (non-decreasing in s since lambda falls), the cost is E[K], and the weights
    are P(K = k), so the task loss after each step is weighed by its halting chance.
    """

    def __init__(self, options: HaltingControllerOptions | None = None) -> None:
        super().__init__(options or HaltingControllerOptions())
        self.w = nn.Parameter(_inverse_softplus(torch.ones(())))
        self.b = nn.Parameter(torch.zeros(()))

    @staticmethod
    def _logits(s: Tensor, w: Tensor, b: Tensor) -> Tensor:
        return b - F.softplus(w) * s

    def _distribution(self, logits: Tensor) -> Tensor:
        """P(K = k) for k = 0..k_max, `(B, k_max + 1)`, from log-space terms."""
        log_halt = F.logsigmoid(logits)[:, None]
        log_go_on = F.logsigmoid(-logits)[:, None]
        k = torch.arange(self.k_max + 1, dtype=logits.dtype, device=logits.device)
        log_p = k * log_go_on + torch.where(k < self.k_max, log_halt, torch.zeros_like(log_halt))
        return log_p.exp()

    @staticmethod
    def _mean(probs: Tensor) -> Tensor:
        return (probs * torch.arange(probs.shape[1]).to(probs)).sum(dim=1)

    def calibrate(self, difficulty: Tensor, best_steps: Tensor | None = None) -> None:
        """softplus(w) = 1 / std(s), then b by bisection so the mean E[K] is target_k."""
        s = _calibration_signal(difficulty)
        with torch.no_grad():
            self.w.copy_(_inverse_softplus(torch.tensor(1.0 / _spread(s))))
            w = self.w.double()
            scaled = F.softplus(w) * s
            # At b = lo every hazard is ~e^-50 (E[K] ~ k_max), at b = hi ~1 (E[K] ~ 0).
            lo, hi = float(scaled.min()) - 50.0, float(scaled.max()) + 50.0
            for _ in range(_BISECTION_STEPS):
                mid = (lo + hi) / 2
                probs = self._distribution(self._logits(s, w, torch.tensor(mid, dtype=w.dtype)))
                mean_k = float(self._mean(probs).mean())
                if mean_k > self.target_k:
                    lo = mid
                else:
                    hi = mid
            self.b.fill_((lo + hi) / 2)
        self._mark_fitted()

    def plan(self, difficulty: Tensor) -> ControllerPlan:
        s = _as_signal(difficulty)
        w, b = self.w.to(device=s.device), self.b.to(device=s.device)
        s = s.to(w.dtype)
        logits = self._logits(s, w, b)
        probs = self._distribution(logits)
        expected = self._mean(probs)
        # Median: smallest k with 1 - (1 - lambda)^(k+1) >= 1/2; log(1 - lambda) is kept
        # below zero so a vanishing hazard gives k_max rather than a division by zero.
        with torch.no_grad():
            log_go_on = F.logsigmoid(-logits).clamp(max=-torch.finfo(logits.dtype).tiny)
            ratio = math.log(0.5) / log_go_on
            k_hard = (torch.ceil(ratio) - 1).clamp(0, self.k_max).long()
        return ControllerPlan(
            k_hard=k_hard,
            k_soft=_straight_through(k_hard, expected),
            cost=expected,
            weights=probs,
            details={"hazard": torch.sigmoid(logits), "expected_k": expected},
        )


class QuantileController(_Fitted):
    """Thresholds at calibration quantiles that meet a compute budget; nothing learned."""

    def __init__(self, options: QuantileControllerOptions | None = None) -> None:
        super().__init__(options or QuantileControllerOptions())
        self.register_buffer("thresholds", torch.zeros(self.k_max))

    def calibrate(self, difficulty: Tensor, best_steps: Tensor | None = None) -> None:
        """Thresholds from `quantile_thresholds`: the calibration set's mean k is target_k."""
        targets = quantile_thresholds(difficulty, self.k_max, self.target_k)
        self.thresholds.copy_(targets)
        self._mark_fitted()

    def plan(self, difficulty: Tensor) -> ControllerPlan:
        self._require_fitted()
        s = _as_signal(difficulty)
        thresholds = self.thresholds.to(device=s.device)
        k_hard = (s.to(thresholds.dtype)[:, None] > thresholds).sum(dim=1)
        return _discrete_plan(k_hard, self.k_max, s.dtype, thresholds=thresholds)


class IsotonicController(_Fitted):
    """The best step per sample, regressed monotonically on difficulty (labelled split).

    The fit is a step function stored as `breakpoints` / `levels` buffers whose length
    depends on the data; loading resizes them to the saved length.
    """

    uses_best_steps = True

    def __init__(self, options: IsotonicControllerOptions | None = None) -> None:
        super().__init__(options or IsotonicControllerOptions())
        self.register_buffer("breakpoints", torch.zeros(0))
        self.register_buffer("levels", torch.zeros(0))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in ("breakpoints", "levels"):
            saved = state_dict.get(prefix + name)
            current = self._buffers[name]
            if isinstance(saved, Tensor) and saved.shape != current.shape:
                self._buffers[name] = current.new_empty(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def calibrate(self, difficulty: Tensor, best_steps: Tensor | None = None) -> None:
        if best_steps is None:
            raise ValueError(
                "the isotonic controller needs best_steps: calibrate it on a labelled "
                "calibration split (each sample's best step count, found with labels)"
            )
        s = _as_signal(difficulty).detach()
        if best_steps.shape != s.shape:
            raise ValueError(
                f"best_steps {tuple(best_steps.shape)} must match difficulty {tuple(s.shape)}"
            )
        finite = torch.isfinite(s)
        if not bool(finite.any()):
            raise ValueError("calibration needs at least one finite difficulty")
        x = s[finite].to(self.breakpoints)
        y = best_steps.detach().to(finite.device)[finite]
        breakpoints, levels = isotonic_steps(x, y.to(x.device))
        device = self.breakpoints.device
        self._buffers["breakpoints"] = breakpoints.to(device=device, dtype=x.dtype)
        self._buffers["levels"] = levels.to(device=device, dtype=x.dtype)
        self._mark_fitted()

    def plan(self, difficulty: Tensor) -> ControllerPlan:
        self._require_fitted()
        s = _as_signal(difficulty)
        breakpoints = self.breakpoints.to(device=s.device)
        levels = self.levels.to(device=s.device)
        index = torch.searchsorted(breakpoints, s.to(breakpoints.dtype).contiguous(), right=True)
        fit = levels[(index - 1).clamp(min=0)]
        k_hard = torch.round(fit).clamp(0, self.k_max).long()
        return _discrete_plan(k_hard, self.k_max, s.dtype, breakpoints=breakpoints, levels=levels)
