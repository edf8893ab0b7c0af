"""Machine limits (sgemm GFLOP/s, copy GB/s, `exp` elements/s) and the timing and memory
helpers that bench/scan.py and bench/blocks.py share.

    python bench/machine.py [--threads 2] [--json]

Each figure is the best of 10 timed calls into preallocated (already touched) outputs,
with torch's intra-op thread count set to `--threads`:

- sgemm: `torch.mm` of two 2048 x 2048 fp32 matrices, 2 * 2048^3 flops per call;
- copy: `dst.copy_(src)` of 64 Mi fp32 (256 MB), counting bytes read plus bytes written;
- exp: `torch.exp(src, out=dst)` over 4 Mi fp32 elements.

`scan_limit` turns them into the throughput a fused scan could reach (see bench/README.md).
`interleaved_medians` times calls round-robin (`interleaved_runs` also gives their CPU
time); `peak_in_subprocess` measures a call's peak memory in a fresh Python process
(Linux: it reads and resets the peak RSS through /proc).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

FWD_COST = (1, 6)
"""(exps, flops) per (token, channel, state) for a fused forward scan (specs/scan.md)."""
FWDBWD_COST = (2, 30)
"""(exps, flops) per (token, channel, state) for a fused forward + backward scan."""


def interleaved_medians(
    calls: dict[str, Callable[[], object]],
    min_reps: int = 3,
    min_seconds: float = 1.0,
    max_reps: int = 50,
) -> dict[str, float]:
    """Median wall time of each call after one warm-up call each, timed round-robin so a
    change in the machine's load hits them all alike: every call gets at least `min_reps`
    timed runs, more (up to `max_reps`) until its runs add up to `min_seconds`."""
    runs = interleaved_runs(calls, min_reps, min_seconds, max_reps)
    return {name: statistics.median(wall for wall, _ in times) for name, times in runs.items()}


def interleaved_runs(
    calls: dict[str, Callable[[], object]],
    min_reps: int = 3,
    min_seconds: float = 1.0,
    max_reps: int = 50,
) -> dict[str, list[tuple[float, float]]]:
    """`(wall s, CPU s of this process)` of each timed run, timed as `interleaved_medians`
    times them. CPU time leaves out the time this process waited for a core, so on a
    shared machine it moves less with the load than wall time does."""
    for call in calls.values():
        call()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}

    def wanted(runs: list[tuple[float, float]]) -> bool:
        total = sum(wall for wall, _ in runs)
        return len(runs) < min_reps or (total < min_seconds and len(runs) < max_reps)

    while pending := [name for name, runs in times.items() if wanted(runs)]:
        for name in pending:
            start, cpu = time.perf_counter(), time.process_time()
            calls[name]()
            times[name].append((time.perf_counter() - start, time.process_time() - cpu))
    return times


def _best_seconds(call: Callable[[], object], reps: int) -> float:
    call()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def _status_mb(field: str) -> float:
    kb = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(kb.group(1)) / 1024


def peak_extra_mb(call: Callable[[], object]) -> dict[str, float | None]:
    """Run `call` twice; `peak_mb` is the second call's peak RSS above the RSS before it
    (MB of 2**20 bytes; None where /proc/self/clear_refs cannot reset the peak), `seconds`
    its wall time. The first call is the warm-up (JIT compilation, caches, thread pools);
    what it freed goes back to the system first, so the second call cannot reuse it."""
    call()
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)  # glibc: release free heap pages
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before = _status_mb("VmRSS")
    except OSError:
        before = None
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    peak = None if before is None else max(_status_mb("VmHWM") - before, 0.0)
    return {"peak_mb": peak, "seconds": seconds}


def peak_in_subprocess(script: str, argv: list[str]) -> dict[str, float | None]:
    """Run `python script *argv` (a worker that prints `peak_extra_mb`'s dict as JSON on its
    last line) in a fresh process and return that dict."""
    done = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def measure_limits(threads: int = 2, reps: int = 10) -> dict[str, float]:
    """`gflops` (sgemm), `copy_gbs` (read + write bytes), `exp_per_s` (elements), `threads`:
    the best of `reps` timed calls each, the machine's capability rather than its load."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        n = 2048
        a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        gflops = 2 * n**3 / _best_seconds(lambda: torch.mm(a, b, out=c), reps) / 1e9
        src, dst = torch.randn(64 * 2**20), torch.zeros(64 * 2**20)
        copy_gbs = 2 * src.nbytes / _best_seconds(lambda: dst.copy_(src), reps) / 1e9
        src, dst = torch.randn(4 * 2**20), torch.zeros(4 * 2**20)
        exp_per_s = src.numel() / _best_seconds(lambda: torch.exp(src, out=dst), reps)
    finally:
        torch.set_num_threads(previous)
    return {"threads": threads, "gflops": gflops, "copy_gbs": copy_gbs, "exp_per_s": exp_per_s}


def scan_limit(limits: dict[str, float], mode: str, d_inner: int, d_state: int) -> float:
    """Tokens/s of a fused scan bound by exp and flop throughput: each (token, channel, state)
    costs `exps / exp_per_s + flops / (gflops * 1e9)` seconds (`mode` is fwd or fwdbwd)."""
    exps, flops = FWD_COST if mode == "fwd" else FWDBWD_COST
    seconds = exps / limits["exp_per_s"] + flops / (limits["gflops"] * 1e9)
    return 1 / (seconds * d_inner * d_state)


def describe(limits: dict[str, float]) -> str:
    return (
        f"machine on {limits['threads']} threads: sgemm {limits['gflops']:.0f} GFLOP/s, "
        f"copy {limits['copy_gbs']:.1f} GB/s (read + write), "
        f"exp {limits['exp_per_s'] / 1e9:.2f} G elements/s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    limits = measure_limits(args.threads)
    print(json.dumps(limits) if args.json else describe(limits))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
