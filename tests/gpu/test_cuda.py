"""attd's CUDA paths: the scan backends, the fused causal conv, a tiny model and TTA, `attd run`.

Every test here needs a CUDA device and is skipped without one (CI has none). The
mamba-ssm backend and the causal_conv1d kernel are tested where those packages are
installed and skipped otherwise. Comparisons use the relative error of
`tests/attd_core/test_scan_backends.py` (max abs difference / max abs value): a CUDA run
against the same computation on the CPU, and each backend against the per-token reference.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass

import pytest
import torch
from typer.testing import CliRunner

import attd_core
import attd_core._plugin as core_plugin
from attd_cli.app import app
from attd_core import InnerLoopOptions, parse_component
from attd_core.backbones import mamba
from attd_core.backbones.scan import available_backends, resolve_backend, selective_scan
from attd_core.errors import ConfigError
from attd_core.testing import (
    ParityPlugin,
    TinyTask,
    new_plugin_manager,
    task_batch,
    tiny_backbone,
    tiny_bound_model,
)

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)"
)

CUDA = torch.device("cuda")
CPU = torch.device("cpu")
HAS_MAMBA_SSM = importlib.util.find_spec("mamba_ssm") is not None
HAS_CAUSAL_CONV1D = importlib.util.find_spec("causal_conv1d") is not None
NAMES = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_state")

TOLERANCE = {"reference": 1e-4, "recompute": 1e-4, "chunked": 1e-4, "mamba-ssm": 2e-3}
"""Relative error in float32. The PyTorch backends differ from each other and from the CPU
by the order of float32 sums and the GPU's exp (~1e-6); mamba-ssm's kernel is built with
--use_fast_math (exp2f) and sums in another order, as its own tests allow (rtol 6e-4)."""

MAMBA_SSM = pytest.param(
    "mamba-ssm",
    id="mamba_ssm",
    marks=pytest.mark.skipif(not HAS_MAMBA_SSM, reason="mamba-ssm is not installed"),
)
CUDA_BACKENDS = ["recompute", "chunked", "reference", MAMBA_SSM]


@pytest.fixture(autouse=True)
def no_tf32():
    """Full float32 in cuDNN convolutions and matmuls (cuDNN allows TF32 by default, ~1e-3)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().cpu().double(), expected.detach().cpu().double()
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


def auto_backend(per_sample: bool = False, initial_state: bool = False, dtype=torch.float32) -> str:
    """What `auto` picks for a CUDA call of this kind (shapes do not matter)."""
    x = torch.zeros(2, 3, 4, device=CUDA, dtype=dtype)
    A = torch.zeros(*((2,) if per_sample else ()), 4, 5, device=CUDA, dtype=dtype)
    h0 = torch.zeros(2, 4, 5, device=CUDA, dtype=dtype) if initial_state else None
    return resolve_backend("auto", x, A, h0)


def cuda_backend_names() -> set[str]:
    """Backends `auto` may choose on CUDA in float32, for any kind of call."""
    return {auto_backend(p, h) for p in (False, True) for h in (False, True)}


# ---------------------------------------------------------------- the scan


@dataclass(frozen=True)
class ScanCase:
    per_sample: bool  # A, D and dt_bias per sample (a Delta-SSM adapter's state)
    initial_state: bool
    batch: int = 2
    length: int = 64
    d_inner: int = 32
    d_state: int = 8
    seed: int = 0


SHARED = ScanCase(per_sample=False, initial_state=False)
"""What mamba-ssm's kernel takes: one A for the batch, a zero initial state."""
PER_SAMPLE = ScanCase(per_sample=True, initial_state=True, seed=1)
"""What it refuses: per-sample A and an initial state."""


def scan_inputs(case: ScanCase) -> tuple[dict[str, torch.Tensor | None], torch.Tensor]:
    """Float64 CPU inputs (dt after softplus log-uniform in [1e-3, 1e-1]) and a right-padding
    mask, drawn from a seeded generator."""
    gen = torch.Generator().manual_seed(case.seed)
    b, L, d, n = case.batch, case.length, case.d_inner, case.d_state
    lead = (b,) if case.per_sample else ()

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    dt = torch.exp(math.log(1e-3) + math.log(100.0) * torch.rand(b, L, d, generator=gen).double())
    dt_bias = 0.1 * randn(*lead, d)
    inputs = {
        "x": randn(b, L, d),
        "dt": dt + torch.log(-torch.expm1(-dt)) - dt_bias.unsqueeze(-2),
        "A": -torch.exp(randn(*lead, d, n)),
        "B": randn(b, L, n),
        "C": randn(b, L, n),
        "D": randn(*lead, d),
        "z": randn(b, L, d),
        "dt_bias": dt_bias,
        "initial_state": randn(b, d, n) if case.initial_state else None,
    }
    mask = torch.arange(L).expand(b, L) < torch.tensor([[L], [L - 9]])[:b]
    return inputs, mask


def run_scan(
    backend: str,
    inputs: dict[str, torch.Tensor | None],
    mask: torch.Tensor,
    device: torch.device,
    with_last_state: bool,
) -> tuple[list[str], list[torch.Tensor]]:
    """Names and values of y, the last state and the gradients of every given input, for
    `backend` in float32 on `device`. The loss probes y (and the last state if asked)."""
    leaves = {
        name: None if t is None else t.to(device, torch.float32).requires_grad_()
        for name, t in inputs.items()
    }
    y, last = selective_scan(
        **leaves,
        dt_softplus=True,
        return_last_state=True,
        mask=mask.to(device),
        backend=backend,
    )
    assert y.device.type == last.device.type == device.type
    assert y.dtype == last.dtype == torch.float32
    gen = torch.Generator().manual_seed(7)
    probe_y, probe_last = (torch.randn(t.shape, generator=gen).to(device) for t in (y, last))
    loss = (y * probe_y).sum()
    if with_last_state:
        loss = loss + (last * probe_last).sum()
    names = [name for name in NAMES if leaves[name] is not None]
    grads = torch.autograd.grad(loss, [leaves[name] for name in names])
    return ["y", "last", *(f"grad {name}" for name in names)], [y, last, *grads]


def assert_close_runs(got, want, tolerance: float, what: str) -> None:
    for name, actual, expected in zip(*got, want[1], strict=True):
        assert actual.shape == expected.shape, f"{what}, {name}: shape"
        error = rel_err(actual, expected)
        assert error < tolerance, f"{what}, {name}: relative error {error:.2e}"


@pytest.mark.parametrize("case", [SHARED, PER_SAMPLE], ids=["shared_A", "per_sample_A_h0"])
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_scan_backend_on_cuda_matches_reference_and_cpu(backend, case):
    """Values, last state and gradients of a CUDA run against the reference on CUDA and the
    same backend on the CPU (the reference for mamba-ssm, which has no CPU path)."""
    inputs, mask = scan_inputs(case)
    if backend == "mamba-ssm" and case.per_sample:  # the kernel cannot: refused by name
        with pytest.raises(ConfigError, match="'mamba-ssm' cannot run this call"):
            run_scan(backend, inputs, mask, CUDA, with_last_state=False)
        return
    with_last = backend != "mamba-ssm"  # its backward cannot take the last state's gradient
    got = run_scan(backend, inputs, mask, CUDA, with_last)
    reference = run_scan("reference", inputs, mask, CUDA, with_last)
    on_cpu = run_scan(
        "reference" if backend == "mamba-ssm" else backend, inputs, mask, CPU, with_last
    )
    tolerance = TOLERANCE[backend]
    assert_close_runs(got, reference, tolerance, f"{backend} vs reference on CUDA")
    assert_close_runs(got, on_cpu, tolerance, f"{backend} on CUDA vs CPU")
    y = got[1][0]
    assert torch.all(y[~mask.to(CUDA)] == 0)  # masked tokens output zero


def test_reference_on_cuda_matches_float64_on_cpu():
    """The CUDA ground truth itself, against the exact answer (float64 on the CPU)."""
    inputs, mask = scan_inputs(PER_SAMPLE)
    got = run_scan("reference", inputs, mask, CUDA, with_last_state=True)
    leaves = {k: None if t is None else t.clone().requires_grad_() for k, t in inputs.items()}
    y, last = selective_scan(
        **leaves, dt_softplus=True, return_last_state=True, mask=mask, backend="reference"
    )
    gen = torch.Generator().manual_seed(7)
    probes = [torch.randn(t.shape, generator=gen).double() for t in (y, last)]
    names = [name for name in NAMES if leaves[name] is not None]
    loss = (y * probes[0]).sum() + (last * probes[1]).sum()
    exact = [y, last, *torch.autograd.grad(loss, [leaves[name] for name in names])]
    assert_close_runs(got, (None, exact), 1e-4, "reference on CUDA vs float64")


def test_auto_on_cuda_picks_mamba_ssm_when_it_can_else_recompute():
    """dispatch.AUTO_ORDER is mamba-ssm, numba, recompute: numba runs on the CPU only, and
    mamba-ssm takes float32/16 CUDA calls with a shared A and no initial state."""
    fused = "mamba-ssm" if "mamba-ssm" in available_backends() else "recompute"
    assert auto_backend() == fused
    assert auto_backend(dtype=torch.bfloat16) == fused
    assert auto_backend(per_sample=True) == "recompute"
    assert auto_backend(initial_state=True) == "recompute"
    assert auto_backend(per_sample=True, initial_state=True) == "recompute"
    assert auto_backend(dtype=torch.float64) == "recompute"
    if HAS_MAMBA_SSM:
        assert "mamba-ssm" in available_backends(), "mamba_ssm is installed but does not import"


def test_backends_refuse_cuda_calls_they_cannot_run():
    x, A = torch.zeros(2, 3, 4, device=CUDA), torch.zeros(4, 5, device=CUDA)
    per_sample_A, h0 = torch.zeros(2, 4, 5, device=CUDA), torch.zeros(2, 4, 5, device=CUDA)
    if "numba" in available_backends():
        with pytest.raises(ConfigError, match="'numba' cannot run this call"):
            resolve_backend("numba", x, A)
    if "mamba-ssm" not in available_backends():
        with pytest.raises(ConfigError, match="'mamba-ssm' is not available"):
            resolve_backend("mamba-ssm", x, A)
        return
    assert resolve_backend("mamba-ssm", x, A) == "mamba-ssm"
    for A_, h0_ in ((per_sample_A, None), (A, h0), (per_sample_A, h0)):
        with pytest.raises(ConfigError, match="'mamba-ssm' cannot run this call"):
            resolve_backend("mamba-ssm", x, A_, h0_)
    with pytest.raises(ConfigError, match="'mamba-ssm' cannot run this call"):
        resolve_backend("mamba-ssm", x.double(), A.double())
    with pytest.raises(ConfigError, match="'mamba-ssm' cannot run this call"):
        resolve_backend("mamba-ssm", x.cpu(), A.cpu())


@pytest.mark.skipif(not HAS_MAMBA_SSM, reason="mamba-ssm is not installed")
def test_mamba_ssm_refuses_gradients_through_the_last_state():
    inputs, mask = scan_inputs(SHARED)
    leaves = {k: None if t is None else t.to(CUDA, torch.float32) for k, t in inputs.items()}
    leaves["x"].requires_grad_()
    y, last = selective_scan(
        **leaves, dt_softplus=True, return_last_state=True, mask=mask.to(CUDA), backend="mamba-ssm"
    )
    with pytest.raises(RuntimeError, match="cannot differentiate through the last state"):
        last.sum().backward()


@pytest.mark.skipif(not HAS_MAMBA_SSM, reason="mamba-ssm is not installed")
def test_mamba_ssm_bfloat16_runs_close_to_float32():
    inputs, mask = scan_inputs(SHARED)
    outputs = {}
    for dtype in (torch.bfloat16, torch.float32):
        leaves = {k: None if t is None else t.to(CUDA, dtype) for k, t in inputs.items()}
        leaves["A"] = leaves["A"].float()
        outputs[dtype] = selective_scan(
            **leaves, dt_softplus=True, mask=mask.to(CUDA), backend="mamba-ssm"
        )
    assert outputs[torch.bfloat16].dtype == torch.bfloat16
    assert rel_err(outputs[torch.bfloat16], outputs[torch.float32]) < 3e-2


# ---------------------------------------------------------------- the Mamba block's conv


@pytest.mark.skipif(not HAS_CAUSAL_CONV1D, reason="causal-conv1d is not installed")
def test_causal_conv1d_matches_the_torch_fallback(monkeypatch):
    """The block's conv through causal_conv1d_fn (CUDA) equals nn.Conv1d + SiLU, in the
    channel-last layout the block feeds it, in values and gradients; and so does a whole
    backbone forward over a padded batch."""
    fused_fn = mamba.causal_conv1d_fn
    assert fused_fn is not None, "causal_conv1d is installed but does not import"
    backbone = tiny_backbone("mamba", n_layers=2).to(CUDA)
    block = backbone.layers[0].mixer
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 40, block.d_inner, generator=gen).to(CUDA)  # (B, L, d_inner)

    def conv(fn) -> list[torch.Tensor]:
        monkeypatch.setattr(mamba, "causal_conv1d_fn", fn)
        leaf = tokens.clone().requires_grad_()
        out = block._conv(leaf.transpose(1, 2))  # (B, d_inner, L), channels contiguous
        params = [leaf, block.conv1d.weight, block.conv1d.bias]
        return [out, *torch.autograd.grad((out * out.detach().cos()).sum(), params)]

    names = ("out", "grad x", "grad weight", "grad bias")
    for name, fused, fallback in zip(names, conv(fused_fn), conv(None), strict=True):
        error = rel_err(fused, fallback)  # both in float32 (no TF32); grads sum over tokens
        assert error < (1e-5 if name == "out" else 1e-4), f"{name}: {error:.2e}"

    x = torch.randn(3, 40, backbone.d_model, generator=gen).to(CUDA)
    mask = (torch.arange(40).expand(3, 40) < torch.tensor([[40], [25], [7]])).to(CUDA)
    outputs = []
    for fn in (fused_fn, None):
        monkeypatch.setattr(mamba, "causal_conv1d_fn", fn)
        with torch.no_grad():
            outputs.append(backbone(x, mask=mask))
    assert rel_err(*outputs) < 1e-4


# ---------------------------------------------------------------- a tiny model and TTA


def bound_models():
    """The same tiny frozen model (Delta-SSM adapter, per sample) on the CPU and on CUDA."""
    on_cpu, on_cuda = tiny_bound_model(), tiny_bound_model()
    on_cuda.model.to(CUDA)
    return on_cpu, on_cuda


def test_tiny_model_forward_on_cuda_matches_cpu():
    """Without an adapter state (shared A: mamba-ssm where installed) and with a per-sample
    one (recompute), on a padded batch."""
    on_cpu, on_cuda = bound_models()
    batch = task_batch(TinyTask(), "test")  # lengths 9, 5, 14, 7
    fresh_cpu = on_cpu.init_adapter_state(len(batch))
    fresh_cuda = on_cuda.init_adapter_state(len(batch))
    for key, value in fresh_cpu.items():  # drawn on the CPU, then moved
        assert fresh_cuda[key].device.type == "cuda", key
        assert torch.equal(fresh_cuda[key].cpu(), value), key
    gen = torch.Generator().manual_seed(3)
    state = {k: v + 0.3 * torch.randn(v.shape, generator=gen) for k, v in fresh_cpu.items()}
    cases = {"no state": (None, auto_backend()), "state": (state, auto_backend(per_sample=True))}
    for what, (state_cpu, backend) in cases.items():
        state_cuda = None if state_cpu is None else {k: v.to(CUDA) for k, v in state_cpu.items()}
        with torch.no_grad():
            got = on_cuda(batch.to(CUDA), state_cuda)
            assert on_cuda.model.backbone.scan_backend_used == backend, what
            want = on_cpu(batch, state_cpu)
        assert got.logits.device.type == "cuda"
        for name in ("logits", "features", "pooled"):
            error = rel_err(getattr(got, name), getattr(want, name))
            assert error < TOLERANCE[backend], f"{name} ({what}, {backend}): {error:.2e}"


def assert_same_adaptation(on_cpu, on_cuda, tolerance: float = 1e-3) -> None:
    assert on_cuda.steps.device.type == "cuda"
    assert torch.equal(on_cuda.steps.cpu(), on_cpu.steps)
    for name, flag in on_cpu.flags.items():
        assert torch.equal(on_cuda.flags[name].cpu(), flag), name
    assert (on_cpu.state is None) == (on_cuda.state is None)
    for key, value in (on_cpu.state or {}).items():
        assert on_cuda.state[key].device.type == "cuda", key
        assert rel_err(on_cuda.state[key], value) < tolerance, key


def test_adapt_batch_on_cuda_matches_cpu():
    """Per-sample step counts 0..3; the states must match in steps, flags and values."""
    objective = new_plugin_manager().create("objective", "entropy-kl", {})
    options = InnerLoopOptions(lr=30.0, grad_clip=None)
    steps = torch.tensor([0, 1, 2, 3])
    batch = task_batch(TinyTask(), "test")
    on_cpu, on_cuda = bound_models()
    start = on_cpu.init_adapter_state(len(batch))
    start_cuda = on_cuda.init_adapter_state(len(batch))  # the same draws, moved to CUDA
    assert all(torch.equal(start_cuda[k].cpu(), v) for k, v in start.items())
    cpu = attd_core.adapt_batch(on_cpu, batch, objective, options, steps, initial_state=start)
    cuda = attd_core.adapt_batch(
        on_cuda, batch.to(CUDA), objective, options, steps.to(CUDA), initial_state=start_cuda
    )
    assert torch.equal(cpu.steps, steps)
    assert_same_adaptation(cpu, cuda)
    moved = (cuda.state["layers.0.A.U"] - start_cuda["layers.0.A.U"]).flatten(1).norm(dim=1)
    assert moved[0] == 0 and bool((moved[1:] > 0).all())
    with torch.no_grad():
        adapted_cpu = on_cpu(batch, cpu.state).logits
        adapted_cuda = on_cuda(batch.to(CUDA), cuda.state).logits
    assert rel_err(adapted_cuda, adapted_cpu) < 1e-3


def test_fixed_strategy_on_cuda_matches_cpu():
    manager = new_plugin_manager()
    objective = manager.create("objective", "entropy-kl", {})
    batch = task_batch(TinyTask(), "test")
    on_cpu, on_cuda = bound_models()
    results = []
    for bound, device in ((on_cpu, CPU), (on_cuda, CUDA)):
        strategy = parse_component("fixed:2", "strategy", manager).create()
        if isinstance(strategy, torch.nn.Module):
            strategy.to(device)
        bound.reset_generator()
        results.append(strategy.adapt(bound, batch.to(device), objective))
    cpu, cuda = results
    assert torch.equal(cpu.steps, torch.full((len(batch),), 2))
    assert_same_adaptation(cpu, cuda)
    assert cuda.state["layers.0.A.U"].abs().max() > 0  # the state moved


# ---------------------------------------------------------------- `attd run` on CUDA


def test_attd_run_on_cuda_records_the_device_and_a_cuda_scan_backend(
    fresh_plugin_manager, tmp_path
):
    fresh_plugin_manager.add_plugin(core_plugin, name="core")
    fresh_plugin_manager.add_plugin(ParityPlugin(), name="parity")
    out = tmp_path / "run"
    args = [
        "run", "--task", "parity", "--tta", "fixed:1",
        "--set", "model.backbone.d_model=8",
        "--set", "model.backbone.n_layers=1",
        "--set", "model.backbone.d_state=4",
        "--set", "model.adapter.rank=1",
        "--set", "train.max_steps=4",
        "--set", "runtime.device=cuda",
        "--seed", "3", "--output-dir", str(out),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args, env={"COLUMNS": "100"}, obj=fresh_plugin_manager)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"] == "cuda"
    assert list(summary["eval"]) == ["none", "fixed:1"]
    assert summary["eval"]["fixed:1"]["mean_k"] == 1.0
    used = set(summary["scan_backend"].split("+"))
    assert used <= cuda_backend_names(), summary["scan_backend"]
    assert "numba" not in used
    metadata = json.loads((out / "checkpoint" / "metadata.json").read_text())
    assert metadata["scan_backend"] == auto_backend()  # training: shared A, no initial state
