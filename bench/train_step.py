"""Training-step throughput: one AdamW step of `AttdModel` at the LRA presets' shapes.

    python bench/train_step.py [--quick] [--presets cpu,paper] [--tasks listops,pathfinder]
                               [--backbones mamba,transformer,hybrid] [--threads 2]
                               [--profile] [--json]

Each case is a task's preset with one backbone, resolved as `attd run --task T --preset P
--set model.backbone.name=...` resolves it (so the shapes follow the presets): the model
is built by the plugins and `AttdModel` as a run builds it, and a step is what the base
trainer does per batch: forward, the task's loss and `loss.item()`, `zero_grad`,
backward, gradient clipping at `train.grad_clip`, AdamW. The learning rate is 0, so
every timed step sees the same weights and does the same arithmetic.

Batches come from the task's own collation at `train.batch_size`: ListOps token
sequences of `task.max_length` tokens at most, their lengths drawn in [0.9, 1] of it
(what `group_by_length` batches look like), right-padded by `collate_tokens`; Pathfinder
random pixels through the task's `preprocess` (`task.resolution`^2 tokens, all real).
tokens/s counts B x L positions, padding included. A preset that refuses a backbone (the
`paper` presets and the transformer, which has no `d_state`) is skipped with its reason.

`ref` is a fixed pure-PyTorch workload, the same in every group and in every checkout:
a training step of two `nn.TransformerEncoderLayer`s (width 64, 4 heads, FFN 256) under a
linear head at B=8, L=256. Within a preset and task, the cases and `ref` are timed
round-robin in this one process (`interleaved_runs`: one warm-up step each, then at least
3 timed steps, more until each case has `--min-seconds`), so `x ref` (tokens/s over
ref's) is comparable between two runs on a shared machine and between two checkouts.
Each step's CPU time (this process's, all threads) is taken too: `tokens/CPU-s` leaves out
the time the process waited for a core, so it moves less with other jobs' load than
tokens/s does. `--quick` runs the `cpu` presets only. `--json` prints one JSON line per
case (`preset, task, backbone, B, L, seconds, cpu_seconds` (medians), `tokens_per_s,
tokens_per_cpu_s, x_ref, ref_tokens_per_s, ref_tokens_per_cpu_s, params, scan_backend`,
or `skipped`), then one line with the load average at start and end, the machine limits
(`machine.py`), threads and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from machine import describe, interleaved_runs, measure_limits
from rich.console import Console
from rich.table import Table
from torch import nn

PRESETS = ("cpu", "paper")
TASKS = ("listops", "pathfinder")
BACKBONES = ("mamba", "transformer", "hybrid")
REF = "ref"
REF_SHAPE = (8, 256, 64)
"""B, L, width of the `ref` workload."""
SHORTEST = 0.9
"""ListOps batches hold lengths in [SHORTEST * max_length, max_length]."""


@dataclass
class Case:
    """One preset, task and backbone: its training step, or why it is skipped."""

    preset: str
    task: str
    backbone: str
    batch: int = 0
    length: int = 0
    params: int = 0
    step: Callable[[], float] | None = None
    model: nn.Module | None = None
    skipped: str | None = None


def resolve(task: str, preset: str, backbone: str):
    """The run config `attd run --task task --preset preset` gives with that backbone."""
    from attd_core import get_plugin_manager
    from attd_core.runtime.config import resolve_run_config

    manager = get_plugin_manager()
    overrides = [f"model.backbone.name={backbone}"]
    resolved = resolve_run_config(manager, task=task, preset=preset, overrides=overrides)
    return manager, resolved


def make_batch(task_name: str, task, config):
    """A training batch of the preset's size, collated by the task itself."""
    generator = torch.Generator().manual_seed(0)
    size = config.train.batch_size
    labels = torch.randint(0, task.num_classes, (size,), generator=generator).tolist()
    if task_name == "listops":
        longest = config.task.options()["max_length"]
        lengths = torch.randint(int(SHORTEST * longest), longest + 1, (size,), generator=generator)
        vocab = task.input_spec.vocab_size
        sequences = [
            torch.randint(1, vocab, (int(n),), generator=generator).tolist() for n in lengths
        ]
        return task.collate_tokens(sequences, labels)
    side = config.task.options()["resolution"]
    pixels = torch.randint(0, 256, (size, side, side), dtype=torch.uint8, generator=generator)
    rows = [
        {"pixels": image.numpy(), "label": label}
        for image, label in zip(pixels, labels, strict=True)
    ]
    return task.preprocess(rows)


def training_step(
    model: nn.Module, loss_of: Callable[[], torch.Tensor], weight_decay: float, clip: float | None
) -> Callable[[], float]:
    """The base trainer's work for one batch, at learning rate 0."""
    params = [param for param in model.parameters() if param.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=0.0, weight_decay=weight_decay)

    def step() -> float:
        loss = loss_of()
        value = loss.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        return value

    return step


def build_case(preset: str, task_name: str, backbone: str) -> Case:
    from attd_core import ConfigError
    from attd_core.model import AttdModel

    case = Case(preset, task_name, backbone)
    try:
        manager, resolved = resolve(task_name, preset, backbone)
    except ConfigError as error:
        case.skipped = str(error).splitlines()[0]
        return case
    config = resolved.config
    torch.manual_seed(0)
    task = manager.create("task", config.task.name, resolved.task.options)
    module = manager.create("backbone", config.model.backbone.name, resolved.backbone.options)
    model = AttdModel(task, module, config.model.pooling, manager=manager).train()
    batch = make_batch(task_name, task, config)
    case.batch, case.length = batch.inputs.shape[:2]
    case.params = sum(param.numel() for param in model.parameters())
    case.model = model
    train = config.train
    case.step = training_step(
        model, lambda: task.compute_loss(model(batch), batch), train.weight_decay, train.grad_clip
    )
    return case


def reference_step() -> Callable[[], float]:
    """`ref`: two torch encoder layers and a linear head, one AdamW step (no attd code)."""
    batch, length, width = REF_SHAPE
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        width, 4, 4 * width, dropout=0.0, batch_first=True, norm_first=True
    )
    model = nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False))
    head = nn.Linear(width, 2)
    inputs = torch.randn(batch, length, width)
    labels = torch.randint(0, 2, (batch,))
    both = nn.ModuleList([model, head]).train()

    def loss_of() -> torch.Tensor:
        return nn.functional.cross_entropy(head(model(inputs).mean(1)), labels)

    return training_step(both, loss_of, weight_decay=0.01, clip=1.0)


def profile(case: Case, log: Console, rows: int = 25) -> None:
    """torch.profiler's operator table (self CPU time) for one step of `case`."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        case.step()
    log.print(f"profile: {case.preset} {case.task} {case.backbone}", style="bold")
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    log.print(table, markup=False, highlight=False, soft_wrap=True)


def scan_backend(case: Case) -> str | None:
    return getattr(case.model.backbone, "scan_backend_used", None) if case.model else None


def measure(args: argparse.Namespace, log: Console) -> list[dict]:
    """Per preset and task: build its cases, then time them and `ref` round-robin."""
    ref = reference_step()
    records = []
    for preset in args.presets:
        for task_name in args.tasks:
            cases = [build_case(preset, task_name, name) for name in args.backbones]
            for case in cases:
                shape = f"B={case.batch} L={case.length}" if case.step else case.skipped
                log.log(f"{preset} {task_name} {case.backbone}: {shape}", markup=False)
            timed = [case for case in cases if case.step is not None]
            records += [
                {"preset": preset, "task": task_name, "backbone": case.backbone}
                | {"skipped": case.skipped}
                for case in cases
                if case.step is None
            ]
            if not timed:
                continue
            calls = {case.backbone: case.step for case in timed}
            runs = interleaved_runs({**calls, REF: ref}, min_seconds=args.min_seconds)
            wall, cpu = (
                {name: statistics.median(t[i] for t in times) for name, times in runs.items()}
                for i in (0, 1)
            )
            ref_tokens = REF_SHAPE[0] * REF_SHAPE[1]
            for case in timed:
                record = {"preset": preset, "task": task_name, "backbone": case.backbone}
                if args.profile:
                    profile(case, log)
                tokens, name = case.batch * case.length, case.backbone
                records.append(
                    record
                    | {"B": case.batch, "L": case.length}
                    | {"seconds": round(wall[name], 4), "cpu_seconds": round(cpu[name], 4)}
                    | {"tokens_per_s": round(tokens / wall[name], 1)}
                    | {"tokens_per_cpu_s": round(tokens / cpu[name], 1)}
                    | {"x_ref": round(tokens / wall[name] / (ref_tokens / wall[REF]), 4)}
                    | {"ref_tokens_per_s": round(ref_tokens / wall[REF], 1)}
                    | {"ref_tokens_per_cpu_s": round(ref_tokens / cpu[REF], 1)}
                    | {"params": case.params, "scan_backend": scan_backend(case)}
                )
    return records


def table(records: list[dict], threads: int) -> Table:
    view = Table(title=f"Training step, fp32, {threads} threads: tokens/s = B*L / median s")
    for column in ("preset", "task", "backbone", "B x L"):
        view.add_column(column, no_wrap=True)
    for column in ("s / step", "tokens/s", "tokens/CPU-s", "x ref", "params", "scan"):
        view.add_column(column, justify="right")
    for r in records:
        if "skipped" in r:
            view.add_row(r["preset"], r["task"], r["backbone"], r["skipped"][:60])
            continue
        view.add_row(
            r["preset"],
            r["task"],
            r["backbone"],
            f"{r['B']} x {r['L']}",
            f"{r['seconds']:.3f}",
            f"{r['tokens_per_s'] / 1e3:,.1f}k",
            f"{r['tokens_per_cpu_s'] / 1e3:,.1f}k",
            f"{r['x_ref']:.3f}",
            f"{r['params']:,}",
            r["scan_backend"] or "-",
        )
    return view


def set_threads(threads: int) -> None:
    """torch's intra-op threads, and numba's where it is installed (the scan's kernels)."""
    torch.set_num_threads(threads)
    try:
        import numba
    except ImportError:
        return
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def versions() -> dict[str, str | None]:
    try:
        import numba

        numba_version = numba.__version__
    except ImportError:
        numba_version = None
    return {"python": sys.version.split()[0], "torch": torch.__version__, "numba": numba_version}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the cpu presets only")
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated")
    parser.add_argument("--backbones", default=",".join(BACKBONES), help="comma-separated")
    parser.add_argument("--threads", type=int, default=2, help="torch and numba threads")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="timed s per case")
    parser.add_argument("--profile", action="store_true", help="operator table per case")
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    args = parser.parse_args(argv)
    args.presets = ["cpu"] if args.quick else args.presets.split(",")
    args.tasks, args.backbones = args.tasks.split(","), args.backbones.split(",")
    set_threads(args.threads)
    log = Console(stderr=True)
    load_start = os.getloadavg()[0]
    limits = measure_limits(args.threads)
    records = measure(args, log)
    after = measure_limits(args.threads)  # the machine is shared: keep the better of the two
    limits = {key: max(value, after[key]) for key, value in limits.items()}
    info = {
        "load_avg": {"start": load_start, "end": os.getloadavg()[0]},
        "machine": limits,
        "threads": args.threads,
        "versions": versions(),
        "env": {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")},
    }
    if args.json:
        for record in records:
            print(json.dumps(record))
        print(json.dumps(info))
        return 0
    console = Console()
    if not console.is_terminal:
        console.width = 120
    console.print(table(records, args.threads))
    load = info["load_avg"]
    console.print(
        f"load average {load['start']:.2f} -> {load['end']:.2f}; {describe(limits)}; "
        f"torch {torch.__version__}, numba {info['versions']['numba']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
