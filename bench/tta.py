"""Test-time adaptation cost: the batched inner loop against a per-sample loop, and
adaptive step counts against a fixed budget.

    python bench/tta.py [--batch 32] [--length 512] [--repeats 5] [--lr 1e-3]
                        [--threads 2] [--profile] [--json]

The model is the default Mamba backbone (`MambaOptions()`: d_model 64, 2 layers, d_state 16,
scan backend `auto`) under a 10-class linear head, on random tokens from a vocabulary of 20
(`--length` real tokens each, no padding, collated by the task with its all-true mask),
in eval mode with every parameter frozen, as the evaluator runs it. The adapter is
Delta-SSM (`DeltaSSMOptions()`, per sample), the inner objective entropy-kl, the inner
loop `InnerLoopOptions` with the defaults (SGD, clip 1) and `--lr`.

- `loop`: one `adapt_batch` call per sample (a batch of one), 3 steps each: the per-sample
  script that the batched engine replaces. `batched`: one `adapt_batch` call on the whole
  batch, 3 steps for every sample. Both start from the same states; their final states and
  adapted logits are compared. `batched_vs_loop_speedup` = loop s / batched s.
- `fixed:8`: `FixedSteps(k=8)`. `adaptive:8`: `AdaptiveSteps(k_max=8)` with the quantile
  controller calibrated for `target_k=2` on 4 other batches of the same size and length.
  `adaptive_vs_fixed_cost_ratio` = adaptive s / fixed s; the realised mean k is reported.

The first call (the warm-up) loads or compiles the numba scan. Then every case runs once
more untimed and `--repeats` times round-robin in this one process, so that a change in
the machine's load hits all alike; the table shows median seconds. `--profile` prints
torch.profiler's operator table for one call of each case (stderr). `--json` prints one
JSON object instead of the table. Both record the load average and the OpenMP settings:
see bench/README.md for why they matter here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

import torch
from machine import describe, interleaved_medians, measure_limits
from rich.console import Console
from rich.table import Table
from torch import Tensor

VOCAB = 20
CLASSES = 10
LOOP_K = 3
FIXED_K = 8
TARGET_K = 2.0
CONTROLLER = "quantile"
CALIBRATION_BATCHES = 4
ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")
"""Environment variables that change how the OpenMP pools of torch and numba wait."""


def build_model(seed: int = 0):
    """A frozen, eval-mode default Mamba classifier bound to a per-sample Delta-SSM adapter."""
    from attd_core.adapters.delta_ssm import DeltaSSMAdapter
    from attd_core.backbones.mamba import MambaBackbone
    from attd_core.interfaces import InputSpec
    from attd_core.model import AttdModel, BoundModel
    from attd_core.options import DeltaSSMOptions, MambaOptions
    from attd_core.tasks import ClassificationTask

    class RandomTokens(ClassificationTask):
        input_spec = InputSpec(vocab_size=VOCAB, pad_id=0)
        num_classes = CLASSES

    torch.manual_seed(seed)
    task = RandomTokens()
    backbone = MambaBackbone(MambaOptions())
    model = AttdModel(task, backbone).eval()
    model.requires_grad_(False)
    return BoundModel(model, {"delta-ssm": DeltaSSMAdapter(DeltaSSMOptions())}, seed=seed)


def make_batch(bound, size: int, length: int, seed: int):
    """`size` random sequences of `length` tokens (ids 1..VOCAB-1) and random labels,
    collated by the task as the evaluator's loader does (an all-true mask)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, VOCAB, (size, length), generator=generator)
    labels = torch.randint(0, CLASSES, (size,), generator=generator)
    return bound.task.collate_tokens(tokens.tolist(), labels.tolist())


def batched_call(bound, batch, objective, start, lr: float) -> Callable[[], dict[str, Tensor]]:
    """All samples in one `adapt_batch`, LOOP_K steps each; returns the final state."""
    from attd_core.options import FixedOptions
    from attd_core.tta.engine import adapt_batch

    options = FixedOptions(k=LOOP_K, lr=lr)
    steps = torch.full((len(batch),), LOOP_K, dtype=torch.long)
    return lambda: adapt_batch(bound, batch, objective, options, steps, initial_state=start).state


def loop_call(bound, batch, objective, start, lr: float) -> Callable[[], dict[str, Tensor]]:
    """One `adapt_batch` per sample on a batch of one; returns the states stacked."""
    from attd_core.options import FixedOptions
    from attd_core.tta.engine import adapt_batch

    options = FixedOptions(k=LOOP_K, lr=lr)
    steps = torch.full((1,), LOOP_K, dtype=torch.long)

    def run() -> dict[str, Tensor]:
        states = []
        for i in range(len(batch)):
            one = batch.select(torch.tensor([i]))
            alone = {key: value[i : i + 1] for key, value in start.items()}
            states.append(adapt_batch(bound, one, objective, options, steps, initial_state=alone))
        return {key: torch.cat([s.state[key] for s in states]) for key in states[0].state}

    return run


def agreement(bound, batch, together, alone, start) -> dict[str, float]:
    """Largest differences between the batched and the per-sample results, for the states
    (also relative to how far adaptation moved them) and for the adapted logits."""
    diff = max(float((together[k] - alone[k]).abs().max()) for k in together)
    moved = max(float((together[k] - start[k]).abs().max()) for k in together)
    size = max(float(together[k].abs().max()) for k in together)
    with torch.no_grad():
        logits, logits_alone, base = bound(batch, together), bound(batch, alone), bound(batch)
    logits_diff = float((logits.logits - logits_alone.logits).abs().max())
    return {
        "state_max_abs_diff": diff,
        "state_max_abs": size,
        "state_max_move": moved,
        "state_diff_over_move": diff / moved if moved else 0.0,
        "logits_max_abs_diff": logits_diff,
        "logits_max_rel_diff": logits_diff / float(logits.logits.abs().max()),
        "logits_max_move": float((logits.logits - base.logits).abs().max()),
    }


def strategies(bound, objective, args: argparse.Namespace) -> tuple[object, object]:
    """`fixed:FIXED_K`, and `adaptive:FIXED_K` calibrated on CALIBRATION_BATCHES batches."""
    from attd_core import get_plugin_manager
    from attd_core.options import AdaptiveOptions, FixedOptions
    from attd_core.tta.strategies import AdaptiveSteps, FixedSteps

    fixed = FixedSteps(FixedOptions(k=FIXED_K, lr=args.lr))
    options = AdaptiveOptions(k_max=FIXED_K, controller=CONTROLLER, target_k=TARGET_K, lr=args.lr)
    adaptive = AdaptiveSteps(options, manager=get_plugin_manager())
    seeds = range(1, CALIBRATION_BATCHES + 1)
    adaptive.calibrate(
        bound, [make_batch(bound, args.batch, args.length, seed) for seed in seeds], objective
    )
    return fixed, adaptive


def strategy_call(strategy, bound, batch, objective) -> Callable[[], object]:
    def run():
        bound.reset_generator()  # every call draws the same fresh states
        return strategy.adapt(bound, batch, objective)

    return run


def profile(calls: dict[str, Callable[[], object]], log: Console, rows: int = 20) -> None:
    """torch.profiler's operator table (self CPU time) for one call of each case."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for name, call in calls.items():
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            call()
        log.print(f"profile: {name}", style="bold")
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
        log.print(table, markup=False, highlight=False, soft_wrap=True)


def run(args: argparse.Namespace, log: Console) -> dict:
    from attd_core.backbones.scan import resolve_backend
    from attd_core.tta.objectives import EntropyKL

    load_start = os.getloadavg()
    bound, objective = build_model(), EntropyKL()
    batch = make_batch(bound, args.batch, args.length, seed=0)
    bound.reset_generator()
    start = bound.init_adapter_state(args.batch)
    batched = batched_call(bound, batch, objective, start, args.lr)
    loop = loop_call(bound, batch, objective, start, args.lr)

    log.log(f"warm-up (loads or compiles the numba scan): B={args.batch} L={args.length}")
    began = time.perf_counter()
    together = batched()
    warmup_s = time.perf_counter() - began
    check = agreement(bound, batch, together, loop(), start)

    log.log(f"calibrating {CONTROLLER} for target_k={TARGET_K} on {CALIBRATION_BATCHES} batches")
    fixed, adaptive = strategies(bound, objective, args)
    calls = {
        "loop": loop,
        "batched": batched,
        f"fixed:{FIXED_K}": strategy_call(fixed, bound, batch, objective),
        "adaptive": strategy_call(adaptive, bound, batch, objective),
    }
    steps = calls["adaptive"]().steps.float()
    log.log(f"timing {', '.join(calls)}: {args.repeats} repeats each, round-robin")
    seconds = interleaved_medians(calls, args.repeats, 0.0, args.repeats)
    load_end = os.getloadavg()
    if args.profile:
        profile(calls, log)
    import numba

    return {
        "batched_vs_loop_speedup": seconds["loop"] / seconds["batched"],
        "adaptive_vs_fixed_cost_ratio": seconds["adaptive"] / seconds[f"fixed:{FIXED_K}"],
        "mean_k": float(steps.mean()),
        "max_k": int(steps.max()),
        "sample_steps_ratio": float(steps.sum()) / (FIXED_K * args.batch),
        "seconds": seconds,
        "warmup_s": warmup_s,
        "agreement": check,
        "load_avg": {"start": load_start[0], "end": load_end[0]},
        "env": {name: os.environ.get(name) for name in ENV},
        "numba_threading_layer": numba.threading_layer(),
        "config": {
            "batch": args.batch,
            "length": args.length,
            "repeats": args.repeats,
            "threads": args.threads,
            "lr": args.lr,
            "vocab": VOCAB,
            "classes": CLASSES,
            "loop_k": LOOP_K,
            "fixed_k": FIXED_K,
            "controller": CONTROLLER,
            "target_k": TARGET_K,
            "scan_backend": resolve_backend("auto", torch.zeros(1, 1, 1), torch.zeros(1, 1)),
        },
    }


def table(result: dict) -> Table:
    config, s = result["config"], result["seconds"]
    b, fixed = config["batch"], f"fixed:{config['fixed_k']}"
    view = Table(
        title=f"TTA on CPU, B={b}, L={config['length']}, {config['threads']} threads: "
        f"median s of {config['repeats']}",
        caption=f"Mamba 2 x d_model 64, scan {config['scan_backend']}; delta-ssm; entropy-kl",
    )
    view.add_column("case", no_wrap=True)
    for column in ("steps", "seconds", "ratio"):
        view.add_column(column, justify="right")
    view.add_row(f"loop ({b} calls of 1)", f"{config['loop_k']} each", f"{s['loop']:.3f}", "1")
    view.add_row(
        "batched",
        f"{config['loop_k']} each",
        f"{s['batched']:.3f}",
        f"{result['batched_vs_loop_speedup']:.2f}x faster",
        end_section=True,
    )
    view.add_row(fixed, f"{config['fixed_k']} each", f"{s[fixed]:.3f}", "1")
    view.add_row(
        f"adaptive:{config['fixed_k']} ({config['controller']})",
        f"mean {result['mean_k']:.2f}",
        f"{s['adaptive']:.3f}",
        f"{result['adaptive_vs_fixed_cost_ratio']:.3f} of the cost",
    )
    return view


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="samples per batch B")
    parser.add_argument("--length", type=int, default=512, help="tokens per sample L")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case")
    parser.add_argument("--lr", type=float, default=1e-3, help="inner learning rate")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--profile", action="store_true", help="operator table per case")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run(args, Console(stderr=True))
    result["machine"] = measure_limits(args.threads)
    result["torch"] = torch.__version__
    if args.json:
        print(json.dumps(result))
        return 0
    console = Console()
    if not console.is_terminal:
        console.width = 120
    console.print(table(result))
    a = result["agreement"]
    console.print(
        f"batched vs loop: states differ by <= {a['state_max_abs_diff']:.1e}, "
        f"{a['state_diff_over_move']:.1e} of how far they moved ({a['state_max_move']:.1e}); "
        f"adapted logits by <= {a['logits_max_abs_diff']:.1e} "
        f"({a['logits_max_rel_diff']:.1e} relative; adapting moved them {a['logits_max_move']:.1e})"
    )
    console.print(
        f"adaptive: mean k {result['mean_k']:.2f} (max {result['max_k']}), "
        f"{result['sample_steps_ratio']:.3f} of {FIXED_K} steps per sample; "
        f"warm-up {result['warmup_s']:.1f} s"
    )
    env = ", ".join(f"{k}={v}" for k, v in result["env"].items() if v is not None) or "none set"
    load = result["load_avg"]
    console.print(
        f"load average {load['start']:.2f} -> {load['end']:.2f}; numba threading layer "
        f"{result['numba_threading_layer']}; OpenMP env: {env}"
    )
    console.print(f"{describe(result['machine'])}; torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
