"""One experiment end to end: build from plugins, train, checkpoint, evaluate every strategy.

A run owns one folder: `config.yaml` (written first, so even a crashed run says what it
was), `metrics.jsonl`, `checkpoint/` and `summary.json` (written last, atomically, so its
presence means the run finished).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from torch.utils.data import Subset

from attd_core.errors import ConfigError
from attd_core.interfaces import Adapter, InnerObjective, Task, TTAStrategy
from attd_core.model import AttdModel, BoundModel
from attd_core.plugins import PluginManager
from attd_core.runtime.checkpoint import save_checkpoint
from attd_core.runtime.config import ResolvedConfig, RunConfig
from attd_core.runtime.environment import configure_threads, seed_everything, select_device
from attd_core.runtime.evaluator import EvalResult, evaluate
from attd_core.runtime.files import atomic_write_text
from attd_core.runtime.metrics import MetricsWriter
from attd_core.runtime.trainer import train

RUN_MARKERS = ("config.yaml", "summary.json")
"""Files whose presence means a folder already holds a run."""


@dataclass(frozen=True)
class Components:
    """Everything a run builds from plugins before it touches its folder."""

    task: Task
    model: AttdModel
    adapter: Adapter
    objective: InnerObjective
    strategies: dict[str, TTAStrategy]


def run_experiment(
    resolved: ResolvedConfig, manager: PluginManager, *, console: Console | None = None
) -> dict[str, Any]:
    """Train and evaluate as `resolved` says; returns what `summary.json` holds.

    `summary["eval"]` maps each canonical TTA spec string (`none` first) to its
    accuracy, mean number of inner steps, wall seconds and number of examples.
    """
    config = resolved.config
    output_dir = choose_output_dir(config.runtime.output_dir, config.task.name)
    seed_everything(config.runtime.seed)
    configure_threads(config.runtime.threads)
    device = select_device(config.runtime.device)
    parts = build_components(resolved, manager, device)

    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        output_dir / "config.yaml", yaml.safe_dump(resolved.to_yaml_dict(), sort_keys=False)
    )
    with MetricsWriter(output_dir / "metrics.jsonl") as metrics:
        trained = train(
            parts.model,
            parts.task,
            config.train,
            seed=config.runtime.seed,
            device=device,
            metrics=metrics,
            console=console,
        )
        save_checkpoint(
            output_dir,
            parts.model,
            {
                "task": config.task.name,
                "backbone": config.model.backbone.name,
                "scan_backend": scan_backend(parts.model),
                "step": trained.steps,
                "config": resolved.to_yaml_dict(),
            },
        )
        results = evaluate_all(parts, config, device, metrics, console)

    summary = {
        "task": config.task.name,
        "eval": {canonical: result.summary() for canonical, result in results.items()},
        "backbone": resolved.backbone.canonical,
        "scan_backend": scan_backend(parts.model),
        "train": {
            "steps": trained.steps,
            "epochs": trained.epochs,
            "loss": trained.loss,
            "seconds": trained.seconds,
        },
        "seed": config.runtime.seed,
        "device": str(device),
        "output_dir": str(output_dir),
    }
    atomic_write_text(output_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def build_components(
    resolved: ResolvedConfig, manager: PluginManager, device: torch.device
) -> Components:
    """Create every component now, so a failing factory stops the run before it starts."""
    config = resolved.config
    task = manager.create("task", config.task.name, resolved.task.options)
    backbone = manager.create("backbone", config.model.backbone.name, resolved.backbone.options)
    head = task.build_head(backbone.d_model)
    model = AttdModel(backbone, task.input_spec, head, config.model.pooling).to(device)
    adapter = manager.create("adapter", config.model.adapter.name, resolved.adapter.options)
    objective = manager.create("objective", config.eval.objective.name, resolved.objective.options)
    strategies = {choice.canonical: choice.create() for choice in resolved.tta}
    return Components(task, model, adapter, objective, strategies)


def evaluate_all(
    parts: Components,
    config: RunConfig,
    device: torch.device,
    metrics: MetricsWriter,
    console: Console | None,
) -> dict[str, EvalResult]:
    """Every strategy on the same examples, with the same initial adapter states."""
    examples = parts.task.load_split(config.eval.split)
    if config.eval.limit is not None:
        examples = Subset(examples, range(min(config.eval.limit, len(examples))))
    bound = BoundModel(parts.task, parts.model, parts.adapter, seed=config.runtime.seed)
    results = {}
    for canonical, strategy in parts.strategies.items():
        results[canonical] = evaluate(
            bound,
            strategy,
            parts.objective,
            examples,
            tta=canonical,
            split=config.eval.split,
            batch_size=config.train.eval_batch_size,
            device=device,
            console=console,
        )
        metrics.write(results[canonical].record())
    return results


def scan_backend(model: AttdModel) -> str | None:
    """The selective-scan backend training ran (`auto` resolves per machine), for the record.

    Backbones that run a scan expose `scan_backend_used`; others (attention) have none.
    """
    return getattr(model.backbone, "scan_backend_used", None)


def choose_output_dir(requested: str | None, task: str) -> Path:
    """The run folder: `requested`, which must not hold a run, or a fresh timestamped one."""
    if requested is not None:
        path = Path(requested)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"output dir {str(path)!r} exists and is not a folder")
        for marker in RUN_MARKERS:
            if (path / marker).exists():
                raise ConfigError(
                    f"output dir {str(path)!r} already holds a run ({marker}); "
                    "choose another --output-dir"
                )
        return path
    stem = Path("runs") / f"{task}-{datetime.now():%Y%m%d-%H%M%S}"
    path, suffix = stem, 1
    while path.exists():
        suffix += 1
        path = stem.with_name(f"{stem.name}-{suffix}")
    return path
