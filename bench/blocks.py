"""One Mamba layer against one Transformer encoder layer of the same width, on CPU.

    python bench/blocks.py [--width 128] [--heads 4] [--backends a,b] [--threads 2]
                           [--no-memory] [--json]

Both are pre-norm residual layers on (B=8, L, W) fp32 inputs, L in {1024, 4096}:
`x + MambaBlock(LayerNorm(x))` with MambaOptions(d_model=W) (d_inner 2W, d_state 16), once
per attd scan backend that runs on CPU (not `reference`), against
`nn.TransformerEncoderLayer(W, heads, 4W, dropout=0, batch_first=True, norm_first=True)`
(full, non-causal attention). `fwd` is inference (eval mode, no_grad: the Transformer
takes its fused fast path); `fwdbwd` adds the gradients of the input and all parameters.
Timings share this process, interleaved per L and mode; peak memory comes from a fresh
subprocess per measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import torch
from machine import interleaved_medians, peak_extra_mb, peak_in_subprocess
from rich.console import Console
from rich.table import Table
from torch import nn

BATCH = 8
LENGTHS = (1024, 4096)
MODES = ("fwd", "fwdbwd")
D_STATE = 16
TRANSFORMER = "transformer"


class MambaLayer(nn.Module):
    """`x + block(norm(x))`, the residual layer of attd's MambaBackbone, on one scan backend."""

    def __init__(self, width: int, backend: str) -> None:
        from attd_core.backbones.mamba import MambaBlock
        from attd_core.options import MambaOptions

        super().__init__()
        self.norm = nn.LayerNorm(width)
        options = MambaOptions(d_model=width, d_state=D_STATE, n_layers=1, scan_backend=backend)
        self.block = MambaBlock(options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(self.norm(x))


def make_layer(name: str, width: int, heads: int) -> nn.Module:
    if name == TRANSFORMER:
        return nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
    return MambaLayer(width, name.removeprefix("mamba:"))


def workload(name: str, length: int, mode: str, width: int, heads: int) -> Callable[[], object]:
    torch.manual_seed(0)
    layer = make_layer(name, width, heads)
    x = torch.randn(BATCH, length, width)
    if mode == "fwd":
        layer.eval()
        return torch.no_grad()(lambda: layer(x))
    x.requires_grad_(True)
    inputs = [x, *layer.parameters()]
    grad_y = torch.randn(BATCH, length, width)
    return lambda: torch.autograd.grad(layer(x), inputs, grad_y)


def layer_names(requested: list[str] | None) -> list[str]:
    """`mamba:<backend>` for every CPU backend but `reference`, then the Transformer."""
    from attd_core.backbones.scan import available_backends, resolve_backend
    from attd_core.errors import ConfigError

    x, A = torch.zeros(1, 1, 1), torch.zeros(1, 1)
    names = []
    for backend in available_backends():
        try:
            resolve_backend(backend, x, A)
        except ConfigError:
            continue
        if backend != "reference" or (requested and backend in requested):
            names.append(f"mamba:{backend}")
    if requested:
        names = [n for n in names if n.removeprefix("mamba:") in requested]
    return [*names, TRANSFORMER]


def measure(names: list[str], args: argparse.Namespace, log: Console) -> list[dict]:
    """Per L and mode: peak memory of each layer (a subprocess each), then all their timings
    interleaved in this process."""
    records = []
    for length in LENGTHS:
        for mode in MODES:
            group = {}
            for name in names:
                log.log(f"{name} {mode} B={BATCH} L={length} W={args.width}")
                record = {"backend": name, "mode": mode, "B": BATCH, "L": length}
                record |= {"D": args.width, "N": None if name == TRANSFORMER else D_STATE}
                record |= {"tokens_per_s": None, "peak_mb": None}
                if not args.no_memory:
                    argv = ["--peak", name, mode, str(length), "--threads", str(args.threads)]
                    argv += ["--width", str(args.width), "--heads", str(args.heads)]
                    peak = peak_in_subprocess(__file__, argv)["peak_mb"]
                    record["peak_mb"] = peak and round(peak, 1)
                group[name] = record
            calls = {name: workload(name, length, mode, args.width, args.heads) for name in group}
            for name, seconds in interleaved_medians(calls).items():
                group[name]["tokens_per_s"] = round(BATCH * length / seconds, 1)
            records += group.values()
    return records


def table(records: list[dict], args: argparse.Namespace, auto: str) -> Table:
    view = Table(
        title=f"One layer, W={args.width}, B={BATCH}, fp32, {args.threads} threads",
        caption=f"Mamba: d_inner {2 * args.width}, N={D_STATE}; "
        f"Transformer: {args.heads} heads, FFN {4 * args.width}",
    )
    for column in ("L", "mode", "layer"):
        view.add_column(column, no_wrap=True)
    for column in ("tokens/s", "x transformer", "peak MB"):
        view.add_column(column, justify="right")
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((record["L"], record["mode"]), []).append(record)
    for (length, mode), group in groups.items():
        base = next(r["tokens_per_s"] for r in group if r["backend"] == TRANSFORMER)
        for i, r in enumerate(group):
            label = r["backend"] + (" (auto)" if r["backend"] == f"mamba:{auto}" else "")
            view.add_row(
                str(length) if i == 0 else "",
                mode if i == 0 else "",
                label,
                f"{r['tokens_per_s'] / 1e3:,.1f}k",
                f"{r['tokens_per_s'] / base:.2f}",
                f"{r['peak_mb']:,.0f}" if r["peak_mb"] is not None else "-",
                end_section=i == len(group) - 1,
            )
    return view


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=128, help="d_model of both layers")
    parser.add_argument("--heads", type=int, default=4, help="attention heads")
    parser.add_argument("--backends", help="comma-separated attd scan backends for Mamba")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--json", action="store_true", help="print JSON lines, one per record")
    parser.add_argument("--peak", nargs=3, help=argparse.SUPPRESS)  # worker: name mode L
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.peak:
        name, mode, length = args.peak
        call = workload(name, int(length), mode, args.width, args.heads)
        print(json.dumps(peak_extra_mb(call)))
        return 0
    from attd_core.backbones.scan import resolve_backend

    auto = resolve_backend("auto", torch.zeros(1, 1, 1), torch.zeros(1, 1))
    names = layer_names(args.backends.split(",") if args.backends else None)
    records = measure(names, args, Console(stderr=True))
    if args.json:
        for record in records:
            print(json.dumps(record))
    else:
        console = Console()
        if not console.is_terminal:
            console.width = 120
        console.print(table(records, args, auto))
        console.print(f"auto picks {auto}; torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
