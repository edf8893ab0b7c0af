"""Start-up cost of the numba scan: a cold compile against loading numba's cache.

    python bench/scan_compile.py [--runs 2] [--threads 2] [--dtype float32] [--json]

Each run makes an empty cache folder and starts two fresh Python processes on it
(`NUMBA_CACHE_DIR`, which numba prefers to every other cache location): the first
compiles the kernels and writes the cache (`cold`), the second loads it (`warm`). Each
process times importing `attd_core.backbones.scan.numba_kernel`, then a first forward +
backward of `selective_scan(..., backend="numba")` on a small input (B=2, L=64, D=32,
N=16; the compile or cache load happens there) and a second one, whose time is the
call itself; `first - second` is what the compile or the load cost. A training or
evaluation run pays this once per process and dtype. `--json` prints one JSON line per
process and a last line with the load average at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SHAPE = (2, 64, 32, 16)
"""B, L, D, N of the timed calls: small, so the calls themselves take milliseconds."""


def child(dtype_name: str, threads: int) -> dict:
    """Import the kernel module and time two forward + backward calls in this process."""
    began = time.perf_counter()
    import torch

    torch_s = time.perf_counter() - began
    torch.set_num_threads(threads)
    began = time.perf_counter()
    from attd_core.backbones.scan import numba_kernel, selective_scan  # noqa: F401

    import_s = time.perf_counter() - began
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    dtype = getattr(torch, dtype_name)
    b, length, d, n = SHAPE
    gen = torch.Generator().manual_seed(0)
    inputs = [
        torch.randn(b, length, d, generator=gen, dtype=dtype),
        torch.rand(b, length, d, generator=gen, dtype=dtype) * 0.1,
        -torch.rand(d, n, generator=gen, dtype=dtype) - 0.5,
        torch.randn(b, length, n, generator=gen, dtype=dtype),
        torch.randn(b, length, n, generator=gen, dtype=dtype),
    ]
    for tensor in inputs:
        tensor.requires_grad_()

    def call() -> float:
        began = time.perf_counter()
        selective_scan(*inputs, backend="numba").sum().backward()
        return time.perf_counter() - began

    first, second = call(), call()
    return {
        "torch_import_s": torch_s,
        "import_s": import_s,
        "first_call_s": first,
        "second_call_s": second,
        "compile_or_load_s": first - second,
    }


def run_child(cache: str, args: argparse.Namespace) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    argv = [sys.executable, __file__, "--child", "--dtype", args.dtype]
    argv += ["--threads", str(args.threads)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="cold + warm pairs")
    parser.add_argument("--threads", type=int, default=2, help="torch and numba threads")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.dtype, args.threads)))
        return 0
    load_start = os.getloadavg()[0]
    records = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
            for kind in ("cold", "warm"):
                record = {"run": run, "kind": kind, "dtype": args.dtype, "threads": args.threads}
                records.append(record | run_child(cache, args) | {"load": os.getloadavg()[0]})
    info = {"load_avg": {"start": load_start, "end": os.getloadavg()[0]}}
    if args.json:
        for record in records:
            print(json.dumps(record))
        print(json.dumps(info))
        return 0
    for r in records:
        print(
            f"run {r['run']} {r['kind']:4s}: import {r['import_s']:.2f} s, first call "
            f"{r['first_call_s']:.2f} s, second {r['second_call_s'] * 1e3:.1f} ms -> compile or "
            f"load {r['compile_or_load_s']:.2f} s (load average {r['load']:.2f})"
        )
    load = info["load_avg"]
    print(f"{args.dtype}, {args.threads} threads; load {load['start']:.2f} -> {load['end']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
