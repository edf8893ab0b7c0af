"""The selective scan against its per-token reference, in values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attd_core import selective_scan

NAMES = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state")


def selective_scan_reference(*args, **kwargs):
    return selective_scan(*args, **kwargs, backend="reference")


def make_inputs(
    batch: int = 2,
    length: int = 7,
    d_inner: int = 5,
    d_state: int = 3,
    *,
    dtype: torch.dtype = torch.float64,
    per_sample: bool = False,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random scan inputs with realistic ranges (dt around 0.1, A negative)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    lead = (batch,) if per_sample else ()
    inputs = {
        "x": randn(batch, length, d_inner),
        "dt": randn(batch, length, d_inner) * 0.5,
        "A": -torch.exp(randn(*lead, d_inner, d_state)),
        "B": randn(batch, length, d_state),
        "C": randn(batch, length, d_state),
        "D": randn(*lead, d_inner),
        "z": randn(batch, length, d_inner),
        "dt_bias": randn(*lead, d_inner) - 2.0,
        "initial_state": randn(batch, d_inner, d_state),
    }
    return {name: t.to(dtype).requires_grad_() for name, t in inputs.items()}


def run(scan, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return scan(**inputs, dt_softplus=True, return_last_state=True)


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach(), expected.detach()
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("length", [1, 2, 16, 33, 48])
def test_matches_reference_in_values_and_gradients(dtype, tol, per_sample, length):
    inputs = make_inputs(length=length, dtype=dtype, per_sample=per_sample)
    y, last = run(selective_scan, inputs)
    y_ref, last_ref = run(selective_scan_reference, inputs)
    assert y.shape == inputs["x"].shape and last.shape == inputs["initial_state"].shape
    assert rel_err(y, y_ref) < tol
    assert rel_err(last, last_ref) < tol
    probe = torch.randn(y.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    tensors = [inputs[name] for name in NAMES]
    grads = torch.autograd.grad((y * probe).sum() + last.sum(), tensors)
    grads_ref = torch.autograd.grad((y_ref * probe).sum() + last_ref.sum(), tensors)
    for name, grad, grad_ref in zip(NAMES, grads, grads_ref, strict=True):
        assert rel_err(grad, grad_ref) < tol, name


def test_optional_arguments_default_to_the_plain_recurrence():
    inputs = make_inputs()
    core = {name: inputs[name] for name in ("x", "dt", "A", "B", "C")}
    torch.testing.assert_close(
        selective_scan(**core), selective_scan_reference(**core), rtol=1e-12, atol=1e-12
    )


def test_hand_computed_two_steps():
    x = torch.tensor([[[1.0], [2.0]]], dtype=torch.float64)
    dt = torch.tensor([[[0.5], [0.25]]], dtype=torch.float64)
    A = torch.tensor([[-2.0]], dtype=torch.float64)
    B = torch.tensor([[[3.0], [1.0]]], dtype=torch.float64)
    C = torch.tensor([[[1.0], [4.0]]], dtype=torch.float64)
    D = torch.tensor([0.5], dtype=torch.float64)
    h1 = 0.5 * 3.0 * 1.0
    h2 = torch.exp(torch.tensor(-0.5)).item() * h1 + 0.25 * 1.0 * 2.0
    expected = torch.tensor([[[h1 + 0.5], [4.0 * h2 + 1.0]]], dtype=torch.float64)
    torch.testing.assert_close(selective_scan(x, dt, A, B, C, D), expected)


def test_gate_applies_silu_of_z():
    inputs = make_inputs()
    core = {name: inputs[name] for name in ("x", "dt", "A", "B", "C")}
    gated = selective_scan(**core, z=inputs["z"])
    torch.testing.assert_close(gated, selective_scan(**core) * F.silu(inputs["z"]))


def test_chaining_last_state_into_initial_state_equals_one_pass():
    inputs = make_inputs(length=10)
    inputs.pop("initial_state")
    full = selective_scan(**inputs)
    first = {k: v[:, :4] if v.dim() == 3 and v.shape[1] == 10 else v for k, v in inputs.items()}
    rest = {k: v[:, 4:] if v.dim() == 3 and v.shape[1] == 10 else v for k, v in inputs.items()}
    y1, h = selective_scan(**first, return_last_state=True)
    y2 = selective_scan(**rest, initial_state=h)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), full, rtol=1e-12, atol=1e-12)


def test_large_steps_stay_finite_in_float32():
    inputs = make_inputs(length=50, dtype=torch.float32)
    with torch.no_grad():
        inputs["dt"].fill_(30.0)
    y = selective_scan(**inputs, dt_softplus=True)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("per_sample", [False, True])
def test_gradcheck_and_second_order(per_sample):
    inputs = make_inputs(batch=2, length=3, d_inner=2, d_state=2, per_sample=per_sample)
    tensors = tuple(inputs[name] for name in NAMES)

    def scan(*args: torch.Tensor) -> torch.Tensor:
        return selective_scan(**dict(zip(NAMES, args, strict=True)), dt_softplus=True)

    def reference(*args: torch.Tensor) -> torch.Tensor:
        return selective_scan_reference(**dict(zip(NAMES, args, strict=True)), dt_softplus=True)

    assert torch.autograd.gradcheck(scan, tensors)
    assert torch.autograd.gradgradcheck(reference, tensors)


def test_second_order_through_the_fast_scan_is_refused_loudly():
    inputs = make_inputs()
    (grad_x,) = torch.autograd.grad(selective_scan(**inputs).sum(), inputs["x"], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_x.sum().backward()


def test_rejects_mismatched_dt():
    inputs = make_inputs()
    with pytest.raises(ValueError, match="x and dt"):
        selective_scan(inputs["x"], inputs["dt"][:, :-1], inputs["A"], inputs["B"], inputs["C"])
