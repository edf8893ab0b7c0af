"""Controllers: monotone by construction, calibrated to a budget, trainable, saved and loaded."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attd_core._plugin import BUILT_INS
from attd_core.interfaces import Controller
from attd_core.options import (
    GateControllerOptions,
    HaltingControllerOptions,
    IsotonicControllerOptions,
    QuantileControllerOptions,
    ThresholdControllerOptions,
)
from attd_core.specs import ControllerSpec
from attd_core.tta.controllers import (
    FixedController,
    GateController,
    HaltingController,
    IsotonicController,
    QuantileController,
    ThresholdController,
    fractions_for_target,
    isotonic_steps,
)

LEARNED = {
    "threshold": (ThresholdController, ThresholdControllerOptions),
    "gate": (GateController, GateControllerOptions),
    "halting": (HaltingController, HaltingControllerOptions),
}
BUDGETED = {**LEARNED, "quantile": (QuantileController, QuantileControllerOptions)}
MONOTONE = ("fixed", "threshold", "gate", "halting", "quantile", "isotonic")
EXAMPLES = settings(deadline=None, max_examples=30)


def _build(name: str, k_max: int = 5, **options):
    if name == "fixed":
        return FixedController()
    if name == "isotonic":
        return IsotonicController(IsotonicControllerOptions(k_max=k_max))
    cls, opts = BUDGETED[name]
    return cls(opts(k_max=k_max, **options))


def _fit(controller, difficulty: torch.Tensor, seed: int = 0) -> None:
    """Calibrate, with random best steps for the isotonic controller."""
    if isinstance(controller, IsotonicController):
        generator = torch.Generator().manual_seed(seed)
        best = torch.randint(0, controller.k_max + 1, difficulty.shape, generator=generator)
        controller.calibrate(difficulty, best)
    else:
        controller.calibrate(difficulty)


def _perturb(controller, seed: int, scale: float = 2.0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in controller.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def _soft_value(controller, plan) -> torch.Tensor:
    """The differentiable value k_soft carries the gradient of (its forward value is k_hard)."""
    if isinstance(controller, ThresholdController):
        return plan.details["gates"].sum(dim=1)
    if isinstance(controller, GateController):
        return controller.k_max * plan.details["gates"]
    return plan.cost


def test_factories_resolve_to_the_controllers() -> None:
    specs = {spec.name: spec for spec in BUILT_INS if isinstance(spec, ControllerSpec)}
    assert sorted(specs) == sorted(MONOTONE)  # the oracle is a strategy, oracle:k_max
    for name in MONOTONE:
        controller = specs[name].create({"k_max": 3} if name != "fixed" else {"k_max": 2})
        assert isinstance(controller, Controller)
        assert isinstance(controller, torch.nn.Module)


def test_only_fitted_controllers_need_calibration() -> None:
    assert _build("fixed").needs_calibration is False
    for name in ("threshold", "gate", "halting", "quantile", "isotonic"):
        controller = _build(name)
        assert controller.needs_calibration is True
        _fit(controller, torch.randn(50))
        assert controller.needs_calibration is False


@pytest.mark.parametrize("name", ["quantile", "isotonic"])
def test_plan_before_calibration_raises(name: str) -> None:
    with pytest.raises(ValueError, match="calibrat"):
        _build(name).plan(torch.randn(4))


@pytest.mark.parametrize("name", MONOTONE)
def test_plan_shapes_and_dtypes(name: str) -> None:
    controller = _build(name, k_max=4) if name != "fixed" else _build(name)
    s = torch.randn(7, dtype=torch.float64)
    _fit(controller, torch.randn(40))
    plan = controller.plan(s)
    assert plan.k_hard.dtype == torch.long and plan.k_hard.device == s.device
    assert plan.k_hard.shape == plan.k_soft.shape == plan.cost.shape == (7,)
    assert plan.weights.shape == (7, controller.k_max + 1)
    assert bool(((plan.k_hard >= 0) & (plan.k_hard <= controller.k_max)).all())
    with pytest.raises(ValueError, match=r"\(B,\)"):
        controller.plan(s[:, None])


def test_fixed_gives_k_max_to_everyone() -> None:
    plan = FixedController().plan(torch.tensor([-3.0, 0.0, 9.0]))
    assert plan.k_hard.tolist() == [5, 5, 5]
    assert plan.weights.argmax(dim=1).tolist() == [5, 5, 5]


@pytest.mark.parametrize("name", MONOTONE)
@EXAMPLES
@given(
    values=st.lists(
        st.floats(-20, 20, allow_nan=False, allow_subnormal=False), min_size=2, max_size=40
    ),
    seed=st.integers(0, 2**16),
    calibrate=st.booleans(),
    k_max=st.integers(1, 7),
)
def test_monotone_in_difficulty(
    name: str, values: list[float], seed: int, calibrate: bool, k_max: int
) -> None:
    """Sorted difficulties get non-decreasing steps, whatever the parameters or calibration."""
    controller = _build(name, k_max=k_max) if name != "fixed" else _build(name)
    if calibrate or name in ("quantile", "isotonic"):
        generator = torch.Generator().manual_seed(seed)
        _fit(controller, 3 * torch.randn(60, generator=generator) + seed % 5, seed)
    _perturb(controller, seed)
    s = torch.tensor(sorted(values))
    plan = controller.plan(s)
    assert bool((plan.k_hard.diff() >= 0).all()), plan.k_hard
    if name in LEARNED:
        soft = _soft_value(controller, plan)
        assert bool((soft.diff() >= -1e-6).all()), soft
    if name == "halting":
        assert bool((plan.details["hazard"].diff() <= 1e-7).all())


@pytest.mark.parametrize("name", list(BUDGETED))
@settings(deadline=None, max_examples=15)
@given(
    k_max=st.integers(1, 8),
    fraction=st.floats(0, 1),
    seed=st.integers(0, 2**16),
    heavy_tailed=st.booleans(),
)
def test_calibration_hits_the_target_mean_k(
    name: str, k_max: int, fraction: float, seed: int, heavy_tailed: bool
) -> None:
    """Calibrated on n continuous difficulties, the mean k lands on target_k.

    Each threshold splits the sorted difficulties at the count nearest its target, so
    the fraction above it is within 1/(2n) and |mean k - target| <= k_max / (2n). Ties in the
    data would widen this (no threshold splits tied samples), which continuous data
    avoids. The halting controller's mean expected K is a continuous function of b found
    by bisection: 1e-3 covers its float32 evaluation.
    """
    n = 2_000 if name == "halting" else 20_000  # the halting bound does not depend on n
    generator = torch.Generator().manual_seed(seed)
    s = torch.randn(n, generator=generator)
    if heavy_tailed:
        s = s.exp() * 10
    target = fraction * k_max
    controller = _build(name, k_max=k_max, target_k=target)
    controller.calibrate(s)
    plan = controller.plan(s)
    if name == "halting":
        assert abs(float(plan.cost.detach().mean()) - target) <= 1e-3
    else:
        # A split exactly half a sample from its target count sits on the bound; the
        # 1e-3 covers the float rounding of target_k and of the fractions there.
        assert abs(float(plan.k_hard.float().mean()) - target) <= k_max / (2 * n) * (1 + 1e-3)


def test_target_k_defaults_to_a_quarter_of_k_max() -> None:
    s = torch.randn(20_000, generator=torch.Generator().manual_seed(1))
    controller = QuantileController(QuantileControllerOptions(k_max=8))
    controller.calibrate(s)
    assert abs(float(controller.plan(s).k_hard.float().mean()) - 2.0) <= 8 / (2 * s.numel())


def test_target_k_above_k_max_is_refused() -> None:
    controller = HaltingController(HaltingControllerOptions(k_max=2, target_k=3))
    with pytest.raises(ValueError, match="target_k"):
        controller.calibrate(torch.randn(10))


@given(k_max=st.integers(1, 12), fraction=st.floats(0, 1))
@EXAMPLES
def test_fractions_fall_and_sum_to_the_target(k_max: int, fraction: float) -> None:
    fractions = fractions_for_target(k_max, fraction * k_max)
    assert abs(sum(fractions) - fraction * k_max) <= 1e-9 * k_max
    assert all(0 <= f <= 1 for f in fractions)
    assert all(a >= b for a, b in zip(fractions, fractions[1:], strict=False))


def test_half_budget_spreads_samples_evenly() -> None:
    fractions = fractions_for_target(4, 2.0)
    assert fractions == pytest.approx([4 / 5, 3 / 5, 2 / 5, 1 / 5])


@pytest.mark.parametrize("name", MONOTONE)
@settings(deadline=None, max_examples=15)
@given(seed=st.integers(0, 2**16), calibrate=st.booleans())
def test_weights_are_a_distribution_with_the_soft_mean(
    name: str, seed: int, calibrate: bool
) -> None:
    controller = _build(name)
    generator = torch.Generator().manual_seed(seed)
    if calibrate or name in ("quantile", "isotonic"):
        _fit(controller, torch.randn(80, generator=generator), seed)
    _perturb(controller, seed, scale=1.0)
    s = 2 * torch.randn(64, generator=generator)
    plan = controller.plan(s)
    weights = plan.weights.detach()
    assert bool((weights >= 0).all())
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(64), atol=1e-5, rtol=0)
    mean = (weights * torch.arange(controller.k_max + 1)).sum(dim=1)
    expected = _soft_value(controller, plan) if name in LEARNED else plan.k_hard.float()
    torch.testing.assert_close(mean, expected.detach(), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", list(LEARNED))
def test_straight_through_forward_is_k_hard_and_gradient_reaches_parameters(name: str) -> None:
    controller = _build(name)
    s = torch.linspace(-1.0, 6.0, 57)
    plan = controller.plan(s)
    assert torch.equal(plan.k_soft.detach(), plan.k_hard.float())
    assert plan.k_soft.requires_grad and plan.cost.requires_grad and plan.weights.requires_grad
    plan.k_soft.sum().backward()
    for parameter_name, parameter in controller.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert bool(parameter.grad.abs().gt(0).all()), (parameter_name, parameter.grad)


def test_raising_the_thresholds_lowers_k_soft() -> None:
    """The straight-through gradient points the right way: a higher t0 means fewer steps."""
    controller = ThresholdController()
    controller.plan(torch.linspace(0.0, 6.0, 40)).k_soft.sum().backward()
    assert float(controller.t0.grad) < 0


def test_halting_k_hard_is_the_median_of_its_distribution() -> None:
    controller = _build("halting", k_max=6)
    _perturb(controller, 3, scale=1.0)
    plan = controller.plan(torch.linspace(-5.0, 5.0, 201))
    cdf = plan.weights.detach().cumsum(dim=1)
    median = (cdf < 0.5).sum(dim=1).clamp(max=6)
    clear = ((cdf - 0.5).abs() > 1e-5).all(dim=1)
    assert torch.equal(plan.k_hard[clear], median[clear])


def test_halting_vanishing_hazard_gives_k_max() -> None:
    controller = _build("halting", k_max=3)
    plan = controller.plan(torch.tensor([1e4, 1e30]))
    assert plan.k_hard.tolist() == [3, 3]


@pytest.mark.parametrize("name", MONOTONE)
def test_samples_are_planned_independently(name: str) -> None:
    controller = _build(name)
    _fit(controller, torch.randn(50, generator=torch.Generator().manual_seed(0)))
    _perturb(controller, 1, scale=0.5)
    s = torch.randn(9, generator=torch.Generator().manual_seed(2))
    together = controller.plan(s)
    for i in range(9):
        alone = controller.plan(s[i : i + 1])
        assert torch.equal(alone.k_hard, together.k_hard[i : i + 1])
        torch.testing.assert_close(alone.cost, together.cost[i : i + 1])
        torch.testing.assert_close(alone.weights, together.weights[i : i + 1])


@pytest.mark.parametrize("name", ["threshold", "gate", "halting", "quantile", "isotonic"])
def test_state_dict_round_trip(name: str) -> None:
    controller = _build(name, k_max=6)
    _fit(controller, torch.randn(200, generator=torch.Generator().manual_seed(4)), seed=4)
    _perturb(controller, 5, scale=0.3)
    buffer = io.BytesIO()
    torch.save(controller.state_dict(), buffer)
    buffer.seek(0)
    fresh = _build(name, k_max=6)
    fresh.load_state_dict(torch.load(buffer))
    assert fresh.needs_calibration is False
    s = 2 * torch.randn(100, generator=torch.Generator().manual_seed(6))
    before, after = controller.plan(s), fresh.plan(s)
    assert torch.equal(before.k_hard, after.k_hard)
    torch.testing.assert_close(before.cost, after.cost)
    torch.testing.assert_close(before.weights, after.weights)


def _brute_force_isotonic(y: list[float]) -> list[float]:
    """The min-max formula: fit_i = max_{j <= i} min_{k >= i} mean(y[j..k]) (distinct x)."""
    n = len(y)

    def mean(j: int, k: int) -> float:
        return sum(y[j : k + 1]) / (k - j + 1)

    return [max(min(mean(j, k) for k in range(i, n)) for j in range(i + 1)) for i in range(n)]


def _step_value(breakpoints: list[float], levels: list[float], x: float) -> float:
    index = 0
    for j, start in enumerate(breakpoints):
        if start <= x:
            index = j
    return levels[index]


@settings(deadline=None, max_examples=40)
@given(
    xs=st.lists(
        st.floats(-100, 100, allow_nan=False, allow_subnormal=False, width=32),
        min_size=1,
        max_size=25,
        unique=True,
    ),
    data=st.data(),
)
def test_isotonic_matches_brute_force(xs: list[float], data) -> None:
    ys = data.draw(st.lists(st.integers(0, 5), min_size=len(xs), max_size=len(xs)))
    breakpoints, levels = isotonic_steps(torch.tensor(xs), torch.tensor(ys))
    assert bool((breakpoints.diff() > 0).all()) and bool((levels.diff() > 0).all())
    order = sorted(range(len(xs)), key=xs.__getitem__)
    expected = _brute_force_isotonic([float(ys[i]) for i in order])
    fitted = [_step_value(breakpoints.tolist(), levels.tolist(), xs[i]) for i in order]
    assert fitted == pytest.approx(expected, abs=1e-9)

    controller = IsotonicController(IsotonicControllerOptions(k_max=5))
    controller.calibrate(torch.tensor(xs), torch.tensor(ys))
    k = controller.plan(torch.tensor([xs[i] for i in order])).k_hard
    assert k.tolist() == [round(value) for value in expected]
    below = controller.plan(torch.tensor([min(xs) - 1.0])).k_hard
    assert below.tolist() == [round(expected[0])]


def test_isotonic_pools_tied_difficulties_before_fitting() -> None:
    """Tied x share one value: pooling (2: 0, 10) first gives 5, above the 3 at x = 1."""
    breakpoints, levels = isotonic_steps(torch.tensor([1.0, 2.0, 2.0]), torch.tensor([3, 0, 10]))
    assert breakpoints.tolist() == [1.0, 2.0] and levels.tolist() == [3.0, 5.0]


def test_isotonic_clamps_to_k_max_and_needs_labels() -> None:
    controller = IsotonicController(IsotonicControllerOptions(k_max=2))
    with pytest.raises(ValueError, match="labelled calibration split"):
        controller.calibrate(torch.randn(5))
    controller.calibrate(torch.tensor([0.0, 1.0, float("nan")]), torch.tensor([1, 9, 0]))
    assert controller.plan(torch.tensor([-1.0, 0.5, 3.0])).k_hard.tolist() == [1, 1, 2]
