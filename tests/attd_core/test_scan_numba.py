"""The fused numba scan against the per-token reference, in values and every gradient."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attd_core import selective_scan
from attd_core.backbones.scan import numba_kernel, recompute, resolve_backend

NAMES = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state")
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def make_inputs(
    batch: int,
    length: int,
    d_inner: int,
    d_state: int,
    *,
    dtype: torch.dtype = torch.float64,
    per_sample: bool = False,
    dt_scale: float = 0.1,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random inputs; softplus(dt + dt_bias) lands near `dt_scale` (tiny 1e-4 to large 10)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    lead = (batch,) if per_sample else ()
    bias = torch.log(torch.expm1(torch.tensor(dt_scale, dtype=torch.float64)))
    inputs = {
        "x": randn(batch, length, d_inner),
        "dt": randn(batch, length, d_inner) * 0.3,
        "A": -torch.exp(randn(*lead, d_inner, d_state)),
        "B": randn(batch, length, d_state),
        "C": randn(batch, length, d_state),
        "D": randn(*lead, d_inner),
        "z": randn(batch, length, d_inner),
        "dt_bias": randn(*lead, d_inner) * 0.3 + bias,
        "initial_state": randn(batch, d_inner, d_state),
    }
    return {name: t.to(dtype).requires_grad_() for name, t in inputs.items()}


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().double(), expected.detach().double()
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


def values_and_grads(
    inputs: dict[str, torch.Tensor], backend: str, mask: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """y, the last state and the gradient of a fixed random functional of both."""
    y, last = selective_scan(
        **inputs, dt_softplus=True, return_last_state=True, mask=mask, backend=backend
    )
    gen = torch.Generator().manual_seed(1)
    probe_y = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.dtype)
    probe_last = torch.randn(last.shape, generator=gen, dtype=torch.float64).to(y.dtype)
    names = [name for name in NAMES if name in inputs]
    loss = (y * probe_y).sum() + (last * probe_last).sum()
    grads = torch.autograd.grad(loss, [inputs[name] for name in names])
    return {"y": y, "last": last, **dict(zip(names, grads, strict=True))}


@settings(deadline=None, max_examples=25)
@given(
    batch=st.integers(1, 3),
    length=st.integers(1, 70),
    d_inner=st.integers(1, 9),
    d_state=st.integers(1, 5),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    per_sample=st.booleans(),
    with_state=st.booleans(),
    with_mask=st.booleans(),
    dt_scale=st.sampled_from([1e-4, 0.1, 1.0, 10.0]),
    seed=st.integers(0, 2**16),
)
def test_matches_reference_in_values_and_all_gradients(
    batch, length, d_inner, d_state, dtype, per_sample, with_state, with_mask, dt_scale, seed
):
    inputs = make_inputs(
        batch, length, d_inner, d_state,
        dtype=dtype, per_sample=per_sample, dt_scale=dt_scale, seed=seed,
    )  # fmt: skip
    if not with_state:
        del inputs["initial_state"]
    mask = None
    if with_mask:
        gen = torch.Generator().manual_seed(seed + 1)
        mask = torch.rand(batch, length, generator=gen) > 0.3
    got = values_and_grads(inputs, "numba", mask)
    want = values_and_grads(inputs, "reference", mask)
    exact = {name: t.detach().double().requires_grad_() for name, t in inputs.items()}
    truth = values_and_grads(exact, "reference", mask)
    for name, expected in want.items():
        assert got[name].dtype == expected.dtype, name
        # a float32 sum with cancellation (dt_bias of one channel over 42 steps) is off by
        # more than 1e-5 in any order: numba must match float64 as well as the reference
        reference_error = rel_err(expected, truth[name])
        assert rel_err(got[name], truth[name]) < max(TOLERANCE[dtype], 4 * reference_error), name


def test_long_sequence_matches_recompute():
    """L=16384 across many checkpoints; the reference loop is too slow there."""
    inputs = make_inputs(1, 16384, 3, 2, dt_scale=0.05)
    got = values_and_grads(inputs, "numba", None)
    want = values_and_grads(inputs, "recompute", None)
    for name, expected in want.items():
        assert rel_err(got[name], expected) < 1e-10, name


@pytest.mark.parametrize("per_sample", [False, True])
def test_gradcheck(per_sample):
    inputs = make_inputs(2, 5, 3, 2, per_sample=per_sample)
    tensors = tuple(inputs[name] for name in ("x", "dt", "A", "B", "C", "initial_state"))
    assert torch.autograd.gradcheck(
        lambda *args: numba_kernel.scan(*args), tensors, check_undefined_grad=True
    )


def test_bf16_runs_in_float32_and_returns_bf16():
    inputs = make_inputs(2, 40, 8, 4)
    core = {name: inputs[name].detach() for name in ("x", "dt", "A", "B", "C")}
    half = selective_scan(**{k: v.bfloat16() for k, v in core.items()}, backend="numba")
    full = selective_scan(**{k: v.float() for k, v in core.items()}, backend="numba")
    assert half.dtype == torch.bfloat16
    assert rel_err(half, full) < 3e-2


def test_bf16_gradients_come_back_in_bf16():
    inputs = {k: v.detach().bfloat16().requires_grad_() for k, v in make_inputs(1, 9, 4, 3).items()}
    selective_scan(**inputs, backend="numba").float().sum().backward()
    assert all(inputs[name].grad.dtype == torch.bfloat16 for name in NAMES)


@pytest.mark.parametrize("per_sample", [False, True])
def test_gradient_of_A_alone(per_sample):
    """Test-time adaptation differentiates only A: other gradients are skipped, A's is right."""
    inputs = make_inputs(2, 37, 5, 3, per_sample=per_sample)
    for name in NAMES:
        if name != "A":
            inputs[name].requires_grad_(False)
    core = {name: inputs[name] for name in ("x", "dt", "A", "B", "C", "initial_state")}
    (got,) = torch.autograd.grad(numba_kernel.scan(**core)[0].sum(), inputs["A"])
    (want,) = torch.autograd.grad(selective_scan(**core, backend="reference").sum(), inputs["A"])
    assert got.shape == inputs["A"].shape
    assert rel_err(got, want) < 1e-10


def test_gradient_through_the_last_state_only():
    inputs = make_inputs(2, 20, 4, 3)
    core = {name: inputs[name] for name in ("x", "dt", "A", "B", "C", "initial_state")}
    (got,) = torch.autograd.grad(numba_kernel.scan(**core)[1].sum(), inputs["x"])
    (want,) = torch.autograd.grad(recompute.scan(**core)[1].sum(), inputs["x"])
    assert rel_err(got, want) < 1e-10


@pytest.mark.parametrize("d_inner, d_state", [(1, 3), (4, 1), (4, 3)])
def test_leaves_its_inputs_and_incoming_gradients_untouched(d_inner, d_state):
    """A channel block of width 1 (or N=1) transposes into a contiguous view, not a copy."""
    inputs = make_inputs(2, 9, d_inner, d_state)
    core = {name: inputs[name] for name in ("x", "dt", "A", "B", "C", "initial_state")}
    before = {name: t.detach().clone() for name, t in core.items()}
    y, last = numba_kernel.scan(**core)
    grad_y, grad_last = torch.randn_like(y), torch.randn_like(last)
    grads_before = (grad_y.clone(), grad_last.clone())
    torch.autograd.backward((y, last), (grad_y, grad_last))
    assert all(torch.equal(core[name].detach(), before[name]) for name in core)
    assert torch.equal(grad_y, grads_before[0]) and torch.equal(grad_last, grads_before[1])


def test_strided_inputs_give_the_values_and_gradients_of_contiguous_ones():
    """The Mamba block's layout: x a transposed view of the convolution's output, B and C
    slices of one projection. Converted once in forward; backward reads those copies."""
    inputs = make_inputs(2, 37, 6, 3)
    x = inputs["x"].detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    projection = torch.cat([inputs["B"], inputs["C"]], dim=-1).detach().requires_grad_()
    B, C = projection.split(3, dim=-1)
    assert not (x.is_contiguous() or B.is_contiguous() or C.is_contiguous())
    strided = {**inputs, "x": x, "B": B, "C": C}
    got = values_and_grads(strided, "numba", None)
    want = values_and_grads(inputs, "numba", None)
    assert torch.equal(got["y"], want["y"]) and torch.equal(got["last"], want["last"])
    assert all(torch.equal(got[name], want[name]) for name in ("x", "dt", "A", "B", "C", "D"))
    y, _ = numba_kernel.scan(x, inputs["dt"], inputs["A"], B, C, None)
    assert all(saved.is_contiguous() for saved in y.grad_fn.saved_tensors)  # no copy again


def test_compiles_uncached_with_a_warning_where_numba_cannot_cache():
    """numba raises at decoration when it has nowhere to write a cache (a read-only install
    with no writable home, or here a function without a source file); the kernels then
    compile in each process instead of making the module fail to import."""
    namespace: dict = {}
    exec(compile("def add_one(x):\n    return x + 1\n", "<no file>", "exec"), namespace)
    with pytest.warns(RuntimeWarning, match="NUMBA_CACHE_DIR"):
        compiled = numba_kernel._cached_njit(nogil=True)(namespace["add_one"])
    assert compiled(1) == 2


def test_forward_without_gradients_matches():
    inputs = make_inputs(2, 33, 4, 3)
    with torch.no_grad():
        got = selective_scan(**inputs, backend="numba")
        want = selective_scan(**inputs, backend="reference")
    assert rel_err(got, want) < 1e-10


def test_auto_picks_numba_on_cpu():
    x, A = torch.zeros(1, 2, 3), torch.zeros(3, 2)
    assert resolve_backend("auto", x, A) == "numba"
    assert numba_kernel.accepts(x.bfloat16(), A)
    assert not numba_kernel.accepts(x.long(), A)
