"""Selective-scan throughput: every attd backend against a per-token loop and mambapy's scan.

    python bench/scan.py [--quick] [--lengths 4096,16384] [--backends a,b] [--threads 2]
                         [--no-memory] [--json]

Shapes (B, L, D=d_inner, N=d_state): B=8, D=128, N=16 at L = 256, 1024, 4096 (`--quick`:
256 and 1024), and B=1, D=256, N=16 at L=16384; fp32 on CPU. Modes: `fwd` (forward under
no_grad) and `fwdbwd` (forward, then the gradients of x, dt, A, B, C and D). Every attd
backend that `available_backends()` lists and that accepts CPU tensors runs through
`selective_scan(x, dt, A, B, C, D, backend=...)`, next to two baselines defined here:
`loop` (a per-token loop over materialised exp(dt*A)) and `mambapy` (the Blelloch
parallel scan of the `mambapy` package, fed the way its `selective_scan` feeds it).
All timings run in this one process, interleaved per shape and mode, so the ratios share
its load. Peak memory comes from a fresh subprocess per measurement. `--json` prints one
JSON record per line: `{backend, mode, B, L, D, N, tokens_per_s, peak_mb}`, plus `skipped`
(the reason) where tokens_per_s is null, and records named `limit` for the machine limit
(bench/README.md).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from collections.abc import Callable

import torch
from machine import describe, interleaved_medians, measure_limits, peak_extra_mb, peak_in_subprocess
from machine import scan_limit as limit_of
from rich.console import Console
from rich.table import Table
from torch import Tensor

Shape = tuple[int, int, int, int]
"""(B, L, D, N)."""
SHAPES: tuple[Shape, ...] = ((8, 256, 128, 16), (8, 1024, 128, 16), (8, 4096, 128, 16))
LONG: Shape = (1, 16384, 256, 16)
MODES = ("fwd", "fwdbwd")
REFERENCE_MAX_L = 1024
"""`reference` is an autograd loop whose backward grows faster than L: not run beyond this."""
TIME_BUDGET_S = 60.0
"""Skip a measurement whose warm-up and 3 timed calls are predicted to take longer."""
MEMORY_BUDGET_MB = 3000.0
"""Skip a measurement whose peak memory is predicted to exceed this."""


def make_inputs(b: int, length: int, d: int, n: int, grad: bool) -> tuple[Tensor, ...]:
    """x, B, C ~ N(0, 1); dt log-uniform in [1e-3, 1e-1]; A rows -(1..N); D = 1."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, length, d, generator=gen)
    dt = torch.empty(b, length, d).uniform_(math.log(1e-3), math.log(1e-1), generator=gen).exp_()
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)
    B = torch.randn(b, length, n, generator=gen)
    C = torch.randn(b, length, n, generator=gen)
    return tuple(t.requires_grad_(grad) for t in (x, dt, A, B, C, torch.ones(d)))


def loop_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """Materialise exp(dt*A) and dt*B*x as (L, B, D, N), step h token by token, contract with C.

    `unbind` rather than indexing per step, so autograd's backward stays linear in L."""
    dt_t, x_t, B_t = (t.transpose(0, 1).contiguous() for t in (dt, x, B))
    decays = torch.exp(dt_t.unsqueeze(-1) * A)
    drives = (dt_t * x_t).unsqueeze(-1) * B_t.unsqueeze(2)
    h = x.new_zeros(x.shape[0], x.shape[2], A.shape[-1])
    states = []
    for decay, drive in zip(decays.unbind(0), drives.unbind(0), strict=True):
        h = decay * h + drive
        states.append(h)
    return torch.einsum("lbdn,bln->bld", torch.stack(states), C) + x * D


def mambapy_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """mambapy 1.2.0's `MambaBlock.selective_scan`: pscan over (B, L, D, N) tensors."""
    from mambapy.pscan import pscan

    deltaA = torch.exp(dt.unsqueeze(-1) * A)
    BX = dt.unsqueeze(-1) * B.unsqueeze(2) * x.unsqueeze(-1)
    hs = pscan(deltaA, BX)
    return (hs @ C.unsqueeze(-1)).squeeze(3) + D * x


def scan_function(name: str) -> Callable[..., Tensor]:
    if name == "loop":
        return loop_scan
    if name == "mambapy":
        return mambapy_scan
    from attd_core.backbones.scan import selective_scan

    return functools.partial(selective_scan, backend=name)


def workload(name: str, shape: Shape, mode: str) -> Callable[[], object]:
    """One call of `name` at `shape` in `mode`, inputs built once."""
    scan = scan_function(name)
    inputs = make_inputs(*shape, grad=mode == "fwdbwd")
    if mode == "fwd":
        return torch.no_grad()(lambda: scan(*inputs))
    grad_y = torch.randn(shape[:3], generator=torch.Generator().manual_seed(1))
    return lambda: torch.autograd.grad(scan(*inputs), inputs, grad_y)


def backend_names(requested: list[str] | None) -> list[str]:
    """attd backends that run on CPU here, then the baselines (mambapy where installed)."""
    from attd_core.backbones.scan import available_backends, resolve_backend
    from attd_core.errors import ConfigError

    x, A = torch.zeros(1, 1, 1), torch.zeros(1, 1)
    names = []
    for name in available_backends():
        try:
            resolve_backend(name, x, A)
            names.append(name)
        except ConfigError:
            pass
    names.append("loop")
    try:
        import mambapy.pscan  # noqa: F401

        names.append("mambapy")
    except ImportError:
        print("mambapy missing: pip install -r bench/requirements.txt", file=sys.stderr)
    if requested:
        unknown = set(requested) - set(names)
        if unknown:
            raise SystemExit(f"not available here: {', '.join(sorted(unknown))}; have {names}")
        names = [name for name in names if name in requested]
    return names


def skip_reason(name: str, shape: Shape, mode: str, last: dict | None) -> str | None:
    """Why not to measure: `reference` beyond REFERENCE_MAX_L, or time or memory predicted
    over budget from this backend's last measurement in this mode (linear in B*L*D*N)."""
    b, length, d, n = shape
    if name == "reference" and length > REFERENCE_MAX_L:
        return "skipped (autograd loop)"
    if last is None:
        return None
    scale = b * length * d * n / math.prod(last[key] for key in "BLDN")
    if last.get("seconds") and 4 * last["seconds"] * scale > TIME_BUDGET_S:
        return f"skipped (~{4 * last['seconds'] * scale:.0f} s)"
    if last.get("peak_mb") and last["peak_mb"] * scale > MEMORY_BUDGET_MB:
        return f"skipped (~{last['peak_mb'] * scale / 1000:.1f} GB)"
    return None


def measure(
    names: list[str], shapes: list[Shape], memory: bool, threads: int, log: Console
) -> list[dict]:
    """Per shape and mode: peak memory of each backend (a subprocess each), then all their
    timings interleaved in this process."""
    records, last = [], {}
    for shape in shapes:
        b, length, d, n = shape
        for mode in MODES:
            timed = {}
            for name in names:
                record = {"backend": name, "mode": mode, "B": b, "L": length, "D": d, "N": n}
                record |= {"tokens_per_s": None, "peak_mb": None}
                reason = skip_reason(name, shape, mode, last.get((name, mode)))
                log.log(f"{name} {mode} B={b} L={length} D={d} N={n} {reason or ''}")
                if reason is None and memory:
                    argv = ["--peak", name, mode, *map(str, shape), "--threads", str(threads)]
                    try:
                        peak = peak_in_subprocess(__file__, argv)
                    except RuntimeError as error:
                        log.log(str(error), style="red", markup=False)
                        reason = "failed (see log)"
                    else:
                        record["peak_mb"] = peak["peak_mb"] and round(peak["peak_mb"], 1)
                        if 4 * peak["seconds"] > TIME_BUDGET_S:
                            reason = f"skipped (~{4 * peak['seconds']:.0f} s)"
                if reason is None:
                    timed[name] = record
                else:
                    record["skipped"] = reason
                records.append(record)
            calls = {name: workload(name, shape, mode) for name in timed}
            for name, seconds in interleaved_medians(calls).items():
                timed[name]["tokens_per_s"] = round(b * length / seconds, 1)
                last[name, mode] = timed[name] | {"seconds": seconds}
    return records


def limit_records(shapes: list[Shape], limits: dict[str, float]) -> list[dict]:
    """Records named `limit`: the tokens/s of the exp + flop model at each shape and mode."""
    return [
        {"backend": "limit", "mode": mode, "B": b, "L": length, "D": d, "N": n}
        | {"tokens_per_s": round(limit_of(limits, mode, d, n), 1), "peak_mb": None}
        for b, length, d, n in shapes
        for mode in MODES
    ]


def _ratio(tps: float | None, base: float | None) -> str:
    return f"{tps / base:.2f}" if tps and base else "-"


def table(records: list[dict], limits: list[dict], threads: int) -> Table:
    view = Table(title=f"Selective scan, fp32, {threads} threads: tokens/s = B*L / median s")
    for column in ("B x L x D x N", "mode", "backend"):
        view.add_column(column, no_wrap=True)
    for column in ("tokens/s", "x loop", "x mambapy", "% limit", "peak MB"):
        view.add_column(column, justify="right")
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        key = tuple(record[k] for k in ("B", "L", "D", "N", "mode"))
        groups.setdefault(key, []).append(record)
    bounds = {tuple(r[k] for k in ("B", "L", "D", "N", "mode")): r for r in limits}
    for key, group in groups.items():
        speed = {r["backend"]: r["tokens_per_s"] for r in group}
        limit = bounds[key]["tokens_per_s"]
        for i, r in enumerate(group):
            tps = r["tokens_per_s"]
            view.add_row(
                " x ".join(map(str, key[:4])) if i == 0 else "",
                key[4] if i == 0 else "",
                r["backend"],
                f"{tps / 1e3:,.1f}k" if tps else r.get("skipped", "-"),
                _ratio(tps, speed.get("loop")),
                _ratio(tps, speed.get("mambapy")),
                f"{100 * tps / limit:.1f}" if tps else "-",
                f"{r['peak_mb']:,.0f}" if r["peak_mb"] is not None else "-",
            )
        view.add_row("", "", "limit", f"{limit / 1e3:,.0f}k", style="dim", end_section=True)
    return view


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="L = 256 and 1024 only")
    parser.add_argument("--lengths", help="comma-separated L values of the shapes to run")
    parser.add_argument("--backends", help="comma-separated names (attd backends, loop, mambapy)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--json", action="store_true", help="print JSON lines, one per record")
    parser.add_argument("--peak", nargs=6, help=argparse.SUPPRESS)  # worker: name mode B L D N
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.peak:
        name, mode, *shape = args.peak
        print(json.dumps(peak_extra_mb(workload(name, tuple(map(int, shape)), mode))))
        return 0
    shapes = list(SHAPES[:2] if args.quick else [*SHAPES, LONG])
    if args.lengths:
        shapes = [shape for shape in shapes if str(shape[1]) in args.lengths.split(",")]
    names = backend_names(args.backends.split(",") if args.backends else None)
    log = Console(stderr=True)
    limits = measure_limits(args.threads)
    records = measure(names, shapes, not args.no_memory, args.threads, log)
    after = measure_limits(args.threads)  # the machine is shared: keep the better of the two
    limits = {key: max(value, after[key]) for key, value in limits.items()}
    bounds = limit_records(shapes, limits)
    if args.json:
        for record in records + bounds:
            print(json.dumps(record))
    else:
        console = Console()
        if not console.is_terminal:
            console.width = 120
        console.print(table(records, bounds, args.threads))
        console.print(f"{describe(limits)}; torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
