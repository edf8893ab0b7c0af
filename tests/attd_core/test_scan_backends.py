"""Every scan backend against the per-token reference, over randomised shapes and regimes.

Outputs, last state and the gradients of every input must match to a relative error (max
abs difference / max abs value) of 1e-5 in float32 and 1e-10 in float64. A float32 run is
compared with the reference run in float64 on the same (float32) inputs, i.e. with the
exact answer, so the tolerance bounds the backend's own rounding. Also: mask semantics,
gradcheck, second order on the plain-autograd path, the dispatch rules, and the mamba-ssm
path with its import mocked (it needs CUDA).
"""

from __future__ import annotations

import math
import sys
import types
from dataclasses import dataclass, replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attd_core.backbones.scan import (
    available_backends,
    dispatch,
    reference,
    resolve_backend,
    selective_scan,
)
from attd_core.backbones.scan import chunked as chunked_module
from attd_core.errors import ConfigError

NAMES = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state")
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def _runs_on_cpu(name: str) -> bool:
    try:
        resolve_backend(name, torch.zeros(1, 1, 1), torch.zeros(1, 1))
    except ConfigError:
        return False
    return True


CPU_BACKENDS = [name for name in available_backends() if name != "reference" and _runs_on_cpu(name)]
"""Every backend this machine can run on CPU (numba included where it imports)."""


@dataclass(frozen=True)
class Case:
    batch: int
    length: int
    d_inner: int
    d_state: int
    regime: str
    per_sample: bool
    initial_state: bool
    masked: bool
    seed: int


DT_REGIMES = ("tiny", "moderate", "large", "mixed")
"""dt after softplus: ~1e-4; log-uniform in [1e-3, 1e-1] (the standard init); uniform in
[1, 10] (dt |A| summed over a chunk runs into the thousands); tiny and large mixed per token."""


def cases() -> st.SearchStrategy[Case]:
    return st.builds(
        Case,
        batch=st.integers(1, 3),
        length=st.one_of(st.sampled_from([1, 2, 15, 16, 17, 32, 33, 129]), st.integers(1, 140)),
        d_inner=st.integers(1, 6),
        d_state=st.integers(1, 5),
        regime=st.sampled_from(DT_REGIMES),
        per_sample=st.booleans(),
        initial_state=st.booleans(),
        masked=st.booleans(),
        seed=st.integers(0, 2**31 - 1),
    )


def make_inputs(
    case: Case, dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Inputs (leaves requiring grad) and a mask; drawn in float64, then rounded to `dtype`."""
    gen = torch.Generator().manual_seed(case.seed)
    b, L, d, n = case.batch, case.length, case.d_inner, case.d_state
    lead = (b,) if case.per_sample else ()

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, dtype=torch.float64)

    tiny, large = 1e-4 * (0.5 + rand(b, L, d)), 1.0 + 9.0 * rand(b, L, d)
    dt = {
        "tiny": tiny,
        "moderate": torch.exp(math.log(1e-3) + math.log(100.0) * rand(b, L, d)),
        "large": large,
        "mixed": torch.where(rand(b, L, d) < 0.5, tiny, large),
    }[case.regime]
    dt_bias = 0.1 * randn(*lead, d)
    inverse_softplus = dt + torch.log(-torch.expm1(-dt))
    inputs = {
        "x": randn(b, L, d),
        "dt": inverse_softplus - dt_bias.unsqueeze(-2),  # softplus(dt + dt_bias) is the dt above
        "A": -torch.exp(randn(*lead, d, n)),
        "B": randn(b, L, n),
        "C": randn(b, L, n),
        "D": randn(*lead, d),
        "z": randn(b, L, d),
        "dt_bias": dt_bias,
        "initial_state": randn(b, d, n) if case.initial_state else None,
    }
    mask = rand(b, L) < 0.7 if case.masked else None
    return {
        name: None if t is None else t.to(dtype).requires_grad_() for name, t in inputs.items()
    }, mask


def run(backend: str, inputs: dict, mask: torch.Tensor | None = None):
    return selective_scan(
        **inputs, dt_softplus=True, return_last_state=True, mask=mask, backend=backend
    )


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().double(), expected.detach().double()
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


def assert_matches_reference(backend: str, inputs: dict, mask=None, expected_backend="reference"):
    """Values, last state and the gradients of every given input, against `expected_backend`
    run in float64 on the same input values.

    In float32 the error is measured against the larger of the exact value and the size of
    the terms summed into it: a float32 sum is only accurate to that scale, and with few
    terms that cancel (grad A with d=N=1, grad B with one token and N=1) even the float32
    reference misses its exact value by more than 1e-5 of it. The terms' size is the same
    quantity computed with |x|, |B|, |C|, |D|, |z|, |h0| and positive probes: then the
    products summed into A's, B's, C's, D's and dt_bias's gradients are all positive.
    """
    dtype = inputs["x"].dtype
    y, last = run(backend, inputs, mask)
    assert y.dtype == last.dtype == dtype
    gen = torch.Generator().manual_seed(1)
    probes = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in (y, last)]
    names = [name for name in NAMES if inputs[name] is not None]
    got = _values_and_gradients(y, last, [p.to(dtype) for p in probes], [inputs[n] for n in names])
    exact = _exact(expected_backend, inputs, mask, probes, names, absolute=False)
    scale = [t.abs().max() for t in exact]
    if dtype == torch.float32:
        terms = _exact(expected_backend, inputs, mask, probes, names, absolute=True)
        scale = [torch.maximum(s, t.abs().max()) for s, t in zip(scale, terms, strict=True)]
    for name, actual, expected, size in zip(["y", "last", *names], got, exact, scale, strict=True):
        error = (actual.detach().double() - expected.detach()).abs().max() / size.clamp_min(1e-30)
        assert error < TOLERANCE[dtype], f"{name}: {float(error):.2e}"


def _values_and_gradients(y, last, probes, leaves) -> list[torch.Tensor]:
    loss = (y * probes[0]).sum() + (last * probes[1]).sum()
    return [y, last, *torch.autograd.grad(loss, leaves)]


def _exact(backend, inputs, mask, probes, names, absolute: bool) -> list[torch.Tensor]:
    """`_values_and_gradients` in float64 on the same values (absolute ones if asked; dt, A
    and dt_bias set the decays and keep their values)."""

    def leaf(name: str, t: torch.Tensor) -> torch.Tensor:
        t = t.detach().double()
        return (t.abs() if absolute and name not in ("dt", "A", "dt_bias") else t).requires_grad_()

    leaves = {name: None if t is None else leaf(name, t) for name, t in inputs.items()}
    y, last = run(backend, leaves, mask)
    probes = [p.abs() for p in probes] if absolute else probes
    return _values_and_gradients(y, last, probes, [leaves[n] for n in names])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@settings(max_examples=12, deadline=None)
@given(case=cases())
def test_matches_reference_in_values_last_state_and_gradients(backend, dtype, case):
    inputs, mask = make_inputs(case, dtype)
    assert_matches_reference(backend, inputs, mask)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@settings(max_examples=8, deadline=None)
@given(case=cases())
def test_masked_tokens_are_skipped(backend, case):
    """A masked token leaves the state alone and outputs 0: the real tokens' outputs and the
    last state equal a reference run over the real tokens alone, sample by sample."""
    inputs, _ = make_inputs(case, torch.float64)
    gen = torch.Generator().manual_seed(case.seed + 1)
    mask = torch.rand(case.batch, case.length, generator=gen) < 0.6
    with torch.no_grad():
        y, last = run(backend, inputs, mask)
        assert torch.all(y[~mask] == 0)
        for i in range(case.batch):
            keep = mask[i]
            h0 = inputs["initial_state"]
            if not keep.any():
                want = torch.zeros_like(last[i]) if h0 is None else h0[i]
                assert rel_err(last[i], want) < 1e-12
                continue
            one = {
                name: None if t is None else _sample(t, name, i, keep, case.per_sample)
                for name, t in inputs.items()
            }
            y_i, last_i = run("reference", one)
            assert rel_err(y[i, keep], y_i[0]) < 1e-10
            assert rel_err(last[i], last_i[0]) < 1e-10


def _sample(t: torch.Tensor, name: str, i: int, keep: torch.Tensor, per_sample: bool):
    """Sample `i` of an input as a batch of one, with only its kept tokens."""
    if name in ("x", "dt", "z", "B", "C"):
        return t[i : i + 1, keep]
    if name == "initial_state" or per_sample:
        return t[i : i + 1]
    return t


@pytest.mark.parametrize("backend", [b for b in CPU_BACKENDS if b != "recompute"])
def test_long_sequence_matches_recompute(backend):
    """L = 16384 (the per-token reference would take minutes): against recompute, float64."""
    case = Case(1, 16384, 2, 2, "moderate", False, True, False, seed=3)
    inputs, _ = make_inputs(case, torch.float64)
    assert_matches_reference(backend, inputs, expected_backend="recompute")


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 2 tokens in the pure-PyTorch backends, so tiny gradcheck shapes cross chunks."""
    from attd_core.backbones.scan import recompute

    monkeypatch.setattr(chunked_module, "CHUNK", 2)
    monkeypatch.setattr(recompute, "CHUNK", 2)


def _as_function(backend: str, inputs: dict):
    def scan(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return run(backend, dict(zip(NAMES, args, strict=True)))

    return scan, tuple(inputs[name] for name in NAMES)


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck(backend, per_sample):
    case = Case(2, 5, 2, 2, "moderate", per_sample, True, False, seed=4)
    scan, tensors = _as_function(backend, make_inputs(case, torch.float64)[0])
    assert torch.autograd.gradcheck(scan, tensors)


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("backend", ["chunked", "reference"])
def test_gradgradcheck(backend, per_sample):
    case = Case(1, 5, 2, 2, "moderate", per_sample, True, False, seed=5)
    scan, tensors = _as_function(backend, make_inputs(case, torch.float64)[0])
    assert torch.autograd.gradgradcheck(scan, tensors)


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared-A", "per-sample-A"])
def test_second_order_through_an_inner_step_matches_reference(per_sample):
    """The meta-learning pattern: adapt an A delta by one gradient step of an inner loss
    (create_graph), then differentiate an outer loss through that step back to the base A,
    dt bias and B."""
    case = Case(2, 70, 3, 2, "moderate", False, False, False, seed=6)
    support, _ = make_inputs(case, torch.float64)
    query, _ = make_inputs(replace(case, seed=7), torch.float64)
    delta_shape = (
        (case.batch, case.d_inner, case.d_state) if per_sample else (case.d_inner, case.d_state)
    )

    def outer_grads(backend: str) -> tuple[torch.Tensor, ...]:
        A, dt_bias, B = (
            support[n].detach().clone().requires_grad_() for n in ("A", "dt_bias", "B")
        )
        delta = torch.zeros(delta_shape, dtype=torch.float64, requires_grad=True)
        inner = {**support, "A": A + delta, "dt_bias": dt_bias, "B": B}
        y, _ = run(backend, inner)
        (grad_delta,) = torch.autograd.grad(y.pow(2).mean(), delta, create_graph=True)
        adapted = {**query, "A": A + (delta - 0.5 * grad_delta), "dt_bias": dt_bias}
        y, _ = run(backend, adapted)
        return torch.autograd.grad(y.pow(2).mean(), (A, dt_bias, B))

    for name, got, want in zip(
        ("A", "dt_bias", "B"), outer_grads("chunked"), outer_grads("reference"), strict=True
    ):
        assert want.abs().max() > 0, name
        assert rel_err(got, want) < 1e-10, name


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bfloat16_inputs_run_close_to_float32(backend):
    """bf16 in, bf16 out, close to a float32 run on the same values: every backend works in
    float32 inside, so only bf16's rounding of inputs and results remains (~5e-3)."""
    case = Case(2, 40, 4, 3, "moderate", False, True, True, seed=8)
    inputs, mask = make_inputs(case, torch.bfloat16)
    y, last = run(backend, inputs, mask)
    assert y.dtype == last.dtype == torch.bfloat16
    grads = torch.autograd.grad(y.float().sum() + last.float().sum(), list(inputs.values()))
    as_fp32 = {k: v.detach().float().requires_grad_() for k, v in inputs.items()}
    y32, last32 = run(backend, as_fp32, mask)
    grads32 = torch.autograd.grad(y32.sum() + last32.sum(), list(as_fp32.values()))
    assert rel_err(y, y32) < 1e-2 and rel_err(last, last32) < 1e-2
    for name, grad, grad32 in zip(inputs, grads, grads32, strict=True):
        assert grad.dtype == torch.bfloat16 and rel_err(grad, grad32) < 1e-2, name


# ---------------------------------------------------------------- dispatch


def test_auto_never_picks_reference_or_chunked():
    assert "reference" not in dispatch.AUTO_ORDER and "chunked" not in dispatch.AUTO_ORDER
    assert dispatch.AUTO_ORDER[0] == "mamba-ssm"
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = torch.zeros(2, 3, 4, dtype=dtype)
        for A in (torch.zeros(4, 5), torch.zeros(2, 4, 5)):
            for h0 in (None, torch.zeros(2, 4, 5)):
                assert resolve_backend("auto", x, A, h0) in set(CPU_BACKENDS) - {"chunked"}


def test_unknown_backend_is_named_with_the_known_ones():
    x, A = torch.zeros(1, 2, 3), torch.zeros(3, 2)
    with pytest.raises(ConfigError, match="unknown scan backend 'fast'") as error:
        resolve_backend("fast", x, A)
    assert all(name in str(error.value) for name in available_backends())


def test_unavailable_backend_is_named_with_the_available_ones():
    if "mamba-ssm" in available_backends():
        pytest.skip("mamba-ssm imports here")
    x, A = torch.zeros(1, 2, 3), torch.zeros(3, 2)
    with pytest.raises(ConfigError, match="'mamba-ssm' is not available") as error:
        resolve_backend("mamba-ssm", x, A)
    assert f"available: {', '.join(available_backends())}" in str(error.value)


@pytest.fixture
def fake_mamba_ssm(monkeypatch):
    """A stand-in `mamba_ssm.ops.selective_scan_interface` whose `selective_scan_fn` takes
    mamba-ssm's layout and arguments, checks them, and runs the reference; the backend's
    module is imported afresh against it and forgotten afterwards."""
    calls = []

    def selective_scan_fn(
        u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
        return_last_state=False,
    ):  # fmt: skip
        (batch, d_inner, length), d_state = u.shape, A.shape[1]
        assert delta.shape == u.shape and A.shape == (d_inner, d_state), "(b, d, L) layout"
        assert B.shape == C.shape == (batch, d_state, length) and A.dtype == torch.float32
        assert D is None and z is None and delta_bias is None  # the dispatcher applies them
        assert not delta_softplus and return_last_state
        calls.append(u.shape)
        y, last = reference.scan(
            u.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), None
        )
        return y.transpose(1, 2), last

    interface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    interface.selective_scan_fn = selective_scan_fn
    monkeypatch.setitem(sys.modules, "mamba_ssm", types.ModuleType("mamba_ssm"))
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops", types.ModuleType("mamba_ssm.ops"))
    monkeypatch.setitem(sys.modules, interface.__name__, interface)
    monkeypatch.delitem(sys.modules, "attd_core.backbones.scan.mamba_ssm", raising=False)
    dispatch._module.cache_clear()
    yield calls
    sys.modules.pop("attd_core.backbones.scan.mamba_ssm", None)
    vars(sys.modules["attd_core.backbones.scan"]).pop("mamba_ssm", None)
    dispatch._module.cache_clear()


def test_mamba_ssm_dispatch_with_the_import_mocked(fake_mamba_ssm, monkeypatch):
    assert "mamba-ssm" in available_backends()
    case = Case(2, 7, 3, 4, "moderate", False, False, True, seed=9)
    inputs, mask = make_inputs(case, torch.float32)
    x, A = inputs["x"], inputs["A"]
    per_sample_A, h0 = A.detach().expand(2, 3, 4), torch.zeros(2, 3, 4)
    assert resolve_backend("auto", x, A) != "mamba-ssm"  # CPU tensors

    module = dispatch._module("mamba-ssm")
    monkeypatch.setattr(module, "is_cuda", lambda tensor: True)  # pretend they live on a GPU
    assert resolve_backend("auto", x, A) == "mamba-ssm"
    assert resolve_backend("auto", x, per_sample_A) != "mamba-ssm"
    assert resolve_backend("auto", x, A, h0) != "mamba-ssm"
    assert resolve_backend("auto", x.double(), A.double()) != "mamba-ssm"
    available = f"available: {', '.join(available_backends())}"
    for A_, h0_ in ((per_sample_A, None), (A, h0)):
        with pytest.raises(ConfigError, match="'mamba-ssm' cannot run this call") as error:
            resolve_backend("mamba-ssm", x, A_, h0_)
        assert available in str(error.value)

    no_state = {**inputs, "initial_state": None}
    y, last = run("mamba-ssm", no_state, mask)
    assert fake_mamba_ssm == [(2, 3, 7)]  # (b, d, L): channels before tokens
    y_ref, last_ref = run("reference", no_state, mask)
    assert rel_err(y, y_ref) < 1e-6 and rel_err(last, last_ref) < 1e-6
    names = [name for name in NAMES if name != "initial_state"]
    grads = torch.autograd.grad(y.sum(), [inputs[n] for n in names])
    grads_ref = torch.autograd.grad(y_ref.sum(), [inputs[n] for n in names])
    for name, grad, grad_ref in zip(names, grads, grads_ref, strict=True):
        assert rel_err(grad, grad_ref) < 1e-6, name
    y, last = run("mamba-ssm", no_state, mask)
    with pytest.raises(RuntimeError, match="cannot differentiate through the last state"):
        last.sum().backward()
