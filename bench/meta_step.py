"""Meta-training step against a base training step, timed in one process.

    python bench/meta_step.py [--task listops] [--preset cpu] [--order first]
                              [--strategy fixed:1] [--set KEY=VALUE ...] [--threads 1]
                              [--min-seconds 3]
                              [--profile] [--json]

Both steps use the model, batch and optimiser that `attd run --task T --preset P --set
train.regime=meta` would build (the adapter, the objective and the training strategy
come from that config; `--strategy` and `--order` set `train.strategy` and
`train.meta_order`, `--set` any other key). A base step is what the trainer does per
batch with the task loss: forward, loss and `loss.item()`, `zero_grad`, backward,
clipping at `train.grad_clip`, AdamW; a meta step is the same with `meta_loss` (adapt,
then the task loss at the adapted state). The learning rate is 0, so every timed step
does the same arithmetic.

The two steps are timed round-robin (`interleaved_runs`: one warm-up each, then at least
3 timed runs until each has `--min-seconds`), so `meta / base`, the ratio of the median
wall times, moves far less with the machine's load than the seconds do; the CPU-time
ratio (this process's CPU, which leaves out waiting for a core) is printed beside it.
`forwards` counts calls of the model's forward per step (a forward hook). `--profile`
prints torch.profiler's operator table for one meta step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch
from machine import interleaved_runs
from train_step import make_batch, set_threads, training_step, versions


def build(task_name: str, preset: str, strategy: str | None, order: str, extra: list[str]):
    """The model, batch, and the base and meta losses a meta run of this config trains on."""
    from attd_core import get_plugin_manager
    from attd_core.model import AttdModel, BoundModel
    from attd_core.runtime.config import resolve_run_config
    from attd_core.runtime.regimes import meta_loss

    manager = get_plugin_manager()
    overrides = ["train.regime=meta", f"train.meta_order={order}", *extra]
    if strategy is not None:
        overrides.append(f"train.strategy={strategy}")
    resolved = resolve_run_config(manager, task=task_name, preset=preset, overrides=overrides)
    config = resolved.config
    torch.manual_seed(0)
    task = manager.create("task", config.task.name, resolved.task.options)
    backbone = manager.create("backbone", config.model.backbone.name, resolved.backbone.options)
    model = AttdModel(task, backbone, config.model.pooling, manager=manager).train()
    adapters = {choice.spec.name: choice.create() for choice in resolved.adapters}
    bound = BoundModel(model, adapters, seed=config.runtime.seed)
    objective = manager.create("objective", config.eval.objective.name, resolved.objective.options)
    training = resolved.training_strategy.create()
    batch = make_batch(task_name, task, config)
    meta = meta_loss(bound, training, objective, order == "second")
    losses = {"base": lambda: task.compute_loss(model(batch), batch), "meta": lambda: meta(batch)}
    return resolved, model, batch, losses


def count_forwards(model: torch.nn.Module, loss_of) -> int:
    """How many times one call of `loss_of` runs the model's forward."""
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        loss_of()
    finally:
        handle.remove()
    return len(calls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="listops")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--strategy", default=None, help="train.strategy (default fixed:1)")
    parser.add_argument("--order", default="first", choices=("first", "second"))
    parser.add_argument("--set", action="append", default=[], help="a config override")
    parser.add_argument("--threads", type=int, default=1, help="torch and numba threads")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timed s per step kind")
    parser.add_argument("--profile", action="store_true", help="operator table of a meta step")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    load_start = os.getloadavg()
    resolved, model, batch, losses = build(
        args.task, args.preset, args.strategy, args.order, args.set
    )
    train = resolved.config.train
    steps = {
        name: training_step(model, loss_of, train.weight_decay, train.grad_clip)
        for name, loss_of in losses.items()
    }
    forwards = {name: count_forwards(model, loss_of) for name, loss_of in losses.items()}
    runs = interleaved_runs(steps, min_seconds=args.min_seconds)
    wall, cpu = (
        {name: statistics.median(t[i] for t in times) for name, times in runs.items()}
        for i in (0, 1)
    )
    record = {
        "task": args.task,
        "preset": args.preset,
        "strategy": resolved.training_strategy.canonical,
        "objective": resolved.objective.canonical,
        "adapter": resolved.adapter_text,
        "order": args.order,
        "B": batch.inputs.shape[0],
        "L": batch.inputs.shape[1],
        "runs": {name: len(times) for name, times in runs.items()},
        "seconds": {name: round(value, 4) for name, value in wall.items()},
        "cpu_seconds": {name: round(value, 4) for name, value in cpu.items()},
        "ratio": round(wall["meta"] / wall["base"], 3),
        "cpu_ratio": round(cpu["meta"] / cpu["base"], 3),
        "forwards": forwards,
        "load_avg": {"start": load_start, "end": os.getloadavg()},
        "threads": args.threads,
        "versions": versions(),
    }
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            steps["meta"]()
        table = prof.key_averages().table(sort_by="cpu_time_total", row_limit=25)
        print(table, file=sys.stderr)
    if args.json:
        print(json.dumps(record))
        return 0
    print(
        f"{record['task']} {record['preset']} B={record['B']} L={record['L']}, "
        f"train.strategy {record['strategy']}, {record['order']} order, objective "
        f"{record['objective']}, adapter {record['adapter']}, {args.threads} thread(s)"
    )
    for name in ("base", "meta"):
        print(
            f"{name}: {wall[name]:.4f} s/step (CPU {cpu[name]:.4f} s), "
            f"{forwards[name]} forwards, {len(runs[name])} timed runs"
        )
    print(f"meta / base: {record['ratio']:.2f} wall, {record['cpu_ratio']:.2f} CPU")
    start, end = record["load_avg"]["start"], record["load_avg"]["end"]
    print(f"load average (1, 5, 15 min): {start} -> {end}; torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
