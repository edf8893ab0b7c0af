"""One experiment end to end: build from plugins, train, checkpoint, evaluate every strategy.

A run owns one folder: `config.yaml` (written first, so even a crashed run says what it
was), `metrics.jsonl`, `checkpoint/` and `summary.json` (written last, atomically, so its
presence means the run finished). Choosing and locking the folder (one writer at a
time), finishing a stopped run's folder and rebuilding a finished one live beside this
module, in `run_folder.py`, `stopped_run.py` and `finished_run.py`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from torch import nn
from torch.utils.data import Subset

from attd_core.errors import ConfigError, PluginError
from attd_core.interfaces import InnerObjective, Shift, Task, TTAStrategy
from attd_core.model import AttdModel, BoundModel
from attd_core.plugins import PluginManager
from attd_core.runtime.checkpoint import save_checkpoint
from attd_core.runtime.config import ResolvedConfig, RunConfig
from attd_core.runtime.distributed import (
    SINGLE,
    Distributed,
    start_distributed,
    stop_distributed,
)
from attd_core.runtime.environment import configure_threads, seed_everything, select_device
from attd_core.runtime.evaluator import EvalResult, evaluate
from attd_core.runtime.files import atomic_write_text
from attd_core.runtime.metrics import MetricsWriter
from attd_core.runtime.paired import paired_summaries
from attd_core.runtime.regimes import aligned_loss, meta_loss, train_controller
from attd_core.runtime.resume import TrainingState
from attd_core.runtime.run_folder import claimed_output_dir
from attd_core.runtime.stopped_run import restart_point
from attd_core.runtime.summary import PhaseSummary, RunSummary, TrainSummary
from attd_core.runtime.trainer import TrainResult, train
from attd_core.spec_strings import ComponentChoice
from attd_core.tta.strategies import InnerLoopStrategy


@dataclass(frozen=True)
class Components:
    """Everything a run builds from plugins before it touches its folder.

    `training` is the strategy the controller or meta regime trains with (the same
    object as the evaluated strategy of that spec, so a trained controller is the one
    evaluated); None for the base regime.
    """

    task: Task
    model: AttdModel
    bound: BoundModel
    objective: InnerObjective
    strategies: dict[str, TTAStrategy]
    training: TTAStrategy | None = None


def run_experiment(
    resolved: ResolvedConfig,
    manager: PluginManager,
    *,
    console: Console | None = None,
    resume: bool = False,
) -> RunSummary | None:
    """Train and evaluate as `resolved` says; returns what `summary.json` holds.

    Its `eval` maps each canonical TTA spec string (`none` first) to the task's metrics,
    step-count statistics, wall seconds and number of examples. With `resume`,
    `runtime.output_dir` is an unfinished run of this config (see `resume_config`).

    Started by `torchrun`, every process trains its share (see `train`); rank 0 alone
    writes the run folder and evaluates, and the other ranks return None after training.
    """
    config = resolved.config
    distributed, device = start_distributed(select_device(config.runtime.device))
    if resume and distributed.active:
        raise ConfigError("--resume finishes a run in one process; start it without torchrun")
    with claimed_output_dir(resolved, resume, distributed) as output_dir:
        return _run_in(output_dir, resolved, manager, device, distributed, console, resume)


def _run_in(
    output_dir: Path,
    resolved: ResolvedConfig,
    manager: PluginManager,
    device: torch.device,
    distributed: Distributed,
    console: Console | None,
    resume: bool,
) -> RunSummary | None:
    """`run_experiment` in its run folder, which rank 0 holds the lock of."""
    config = resolved.config
    seed_everything(config.runtime.seed)
    configure_threads(config.runtime.threads)
    parts = build_components(resolved, manager, device)
    _check_validation_split(parts.task, config)
    if not distributed.is_main:
        with MetricsWriter(os.devnull) as discarded:
            quiet = Console(quiet=True)
            _train(parts, resolved, device, discarded, quiet, output_dir, None, distributed)
        stop_distributed()
        return None

    restart = restart_point(output_dir, parts.model, parts.training, resolved) if resume else None
    if not resume:
        atomic_write_text(
            output_dir / "config.yaml", yaml.safe_dump(resolved.to_yaml_dict(), sort_keys=False)
        )
    with MetricsWriter(
        output_dir / "metrics.jsonl", tensorboard=config.runtime.tensorboard
    ) as metrics:
        if isinstance(restart, TrainResult):  # trained before it was stopped
            trained, controller = restart, None
        else:
            trained, controller = _train(
                parts, resolved, device, metrics, console, output_dir, restart, distributed
            )
        stop_distributed()
        extra = {"strategy": parts.training} if config.train.regime == "controller" else {}
        save_checkpoint(
            output_dir,
            parts.model,
            {
                **_checkpoint_record(parts, resolved, trained.steps),
                "epochs": trained.epochs,
                "loss": trained.loss,
                "seconds": trained.seconds,
            },
            extra=extra,
        )
        shift = None if resolved.shift is None else resolved.shift.create()
        results = evaluate_strategies(parts, config, device, metrics, console, shift=shift)

    summary = RunSummary(
        task=config.task.name,
        shift=config.eval.shift,
        eval=paired_summaries(results, seed=config.runtime.seed),
        backbone=resolved.backbone.canonical,
        adapter=resolved.adapter_text,
        scan_backend=scan_backend(parts.model),
        train=TrainSummary(
            regime=config.train.regime,
            steps=trained.steps,
            epochs=trained.epochs,
            loss=trained.loss,
            seconds=trained.seconds,
            controller=controller,
        ),
        seed=config.runtime.seed,
        device=str(device),
        output_dir=str(output_dir),
    )
    summary.write(output_dir)
    return summary


def _checkpoint_record(parts: Components, resolved: ResolvedConfig, step: int) -> dict[str, Any]:
    config = resolved.config
    return {
        "task": config.task.name,
        "backbone": config.model.backbone.name,
        "scan_backend": scan_backend(parts.model),
        "pooling": config.model.pooling,
        "step": step,
        "trained_strategy": _training_text(resolved),
        "config": resolved.to_yaml_dict(),
    }


def _train(
    parts: Components,
    resolved: ResolvedConfig,
    device: torch.device,
    metrics: MetricsWriter,
    console: Console | None,
    output_dir: Path,
    resume: TrainingState | None,
    distributed: Distributed = SINGLE,
) -> tuple[TrainResult, PhaseSummary | None]:
    """The base (or meta) phase, then the controller phase when the regime asks for it
    (returned as the second item; None without one).

    The base phase saves a resumable checkpoint every `train.checkpoint_every` steps.
    """
    config = resolved.config
    loss_fn = None
    if config.train.regime == "meta":
        second = config.train.meta_order == "second"
        loss_fn = meta_loss(parts.bound, parts.training, parts.objective, second)
    elif config.train.regime == "aligned":
        loss_fn = aligned_loss(parts.bound, parts.objective, config.train.aligned_weight)

    def save_training(state: TrainingState) -> None:
        record, tensors = state.to_files()
        metadata = {**_checkpoint_record(parts, resolved, state.position.step), "training": record}
        save_checkpoint(output_dir, parts.model, metadata, tensors=tensors)

    trained = train(
        parts.model,
        parts.task,
        config.train,
        seed=config.runtime.seed,
        device=device,
        metrics=metrics,
        console=console,
        loss_fn=loss_fn,
        resume=resume,
        checkpoint=save_training,
        generators={"adapter_init": parts.bound.generator},
        distributed=distributed,
    )
    controller = None
    if config.train.regime == "controller" and distributed.is_main:
        result = train_controller(
            parts.bound,
            parts.training,
            parts.objective,
            config.train,
            seed=config.runtime.seed,
            device=device,
            metrics=metrics,
            console=console,
        )
        controller = PhaseSummary(steps=result.steps, loss=result.loss, seconds=result.seconds)
    return trained, controller


def _training_text(resolved: ResolvedConfig) -> str | None:
    choice = resolved.training_strategy
    return None if choice is None else choice.canonical


def build_components(
    resolved: ResolvedConfig, manager: PluginManager, device: torch.device
) -> Components:
    """Create every component and check the evaluation now, so a failing factory, a
    model too large for memory, a split the task lacks or that is empty, or a shift that
    cannot handle the task's inputs stops the run before it trains."""
    config = resolved.config
    task = manager.create("task", config.task.name, resolved.task.options)
    objective = manager.create("objective", config.eval.objective.name, resolved.objective.options)
    with _memory_guard(resolved):
        backbone = manager.create("backbone", config.model.backbone.name, resolved.backbone.options)
        head = _objective_head(objective, backbone.d_model, task, config)
        model = AttdModel(
            task, backbone, config.model.pooling, manager=manager, objective_head=head
        ).to(device)
    adapters = {choice.spec.name: choice.create() for choice in resolved.adapters}
    bound = BoundModel(model, adapters, seed=config.runtime.seed)
    check_objective = getattr(objective, "check", None)
    if check_objective is not None:  # what the objective needs of the task (memo: views)
        check_objective(task)
    strategies = {choice.canonical: choice.create() for choice in resolved.tta}
    training = None
    if resolved.training_strategy is not None:
        canonical = resolved.training_strategy.canonical
        training = strategies.get(canonical) or resolved.training_strategy.create()
        _check_trainable(training, config)
    parts = Components(task, model, bound, objective, strategies, training)
    _check_splits(parts, config)
    _check_data(parts, config, resolved.shift)
    return parts


def _objective_head(
    objective: InnerObjective, d_model: int, task: Task, config: RunConfig
) -> nn.Module | None:
    """The objective's own head, if it declares one; only the aligned regime trains it,
    so any other regime would adapt through a random head: refused."""
    build = getattr(objective, "build_head", None)
    try:
        head = None if build is None else build(d_model, task)
    except ValueError as exc:
        raise ConfigError(f"eval.objective {config.eval.objective.name!r}: {exc}") from None
    if head is not None and config.train.regime != "aligned":
        raise ConfigError(
            f"eval.objective {config.eval.objective.name!r} adapts through a head of its "
            f"own, which only train.regime=aligned trains (this run: "
            f"{config.train.regime!r}); set train.regime=aligned or pick an objective "
            "without a head"
        )
    return head


@contextmanager
def _memory_guard(resolved: ResolvedConfig) -> Iterator[None]:
    """Turn an allocator failure while the model is built into a `ConfigError` naming
    the backbone: the limits on each size still allow products that no memory holds."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "allocat" not in str(exc):
            raise
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "out of memory"
        raise ConfigError(
            f"model.backbone {resolved.backbone.canonical!r} does not fit in memory "
            f"({reason}); lower d_model, n_layers, expand or d_state"
        ) from None


def _calibrating(parts: Components, config: RunConfig) -> bool:
    """Whether an evaluated strategy calibrates on `eval.calibration_split`: one that
    needs calibration, other than the one the controller regime trains (and fits)."""
    fitted_by_training = parts.training if config.train.regime == "controller" else None
    return any(
        getattr(strategy, "needs_calibration", False)
        for strategy in parts.strategies.values()
        if strategy is not fitted_by_training
    )


def _check_splits(parts: Components, config: RunConfig) -> None:
    """Refuse an evaluation split the task does not declare, before anything trains.

    `eval.calibration_split` is checked when a strategy will calibrate on it.
    """
    declared = getattr(parts.task, "splits", None)
    if declared is None:
        raise PluginError(
            f"task {config.task.name!r} declares no splits: a Task names the splits its "
            "load_split serves in `splits` (attd_core.ClassificationTask has train, "
            "validation and test)"
        )
    wanted = {"eval.split": config.eval.split}
    if _calibrating(parts, config):
        wanted["eval.calibration_split"] = config.eval.calibration_split
    for key, split in wanted.items():
        if split not in declared:
            raise ConfigError(
                f"{key}: task {config.task.name!r} has no split {split!r}; "
                f"splits: {', '.join(declared)}"
            )


def _check_validation_split(task: Task, config: RunConfig) -> None:
    """Refuse a `train.eval_split` the task does not declare, or an empty one, before
    training (`build_components` checks only what evaluation needs: `attd eval` and
    `attd compare` rebuild a finished run with it and validate nothing)."""
    split, name = config.train.eval_split, config.task.name
    if split is None:
        return
    if split not in task.splits:
        raise ConfigError(
            f"train.eval_split: task {name!r} has no split {split!r}; splits: "
            f"{', '.join(task.splits)}; train.eval_split=null trains without validation"
        )
    if len(task.load_split(split)) == 0:
        raise ConfigError(
            f"train.eval_split: split {split!r} of task {name!r} is empty; training "
            "validates on it (train.eval_split=null trains without validation)"
        )


def _check_data(parts: Components, config: RunConfig, shift: ComponentChoice | None) -> None:
    """Load the evaluated split (and the calibration split, when a strategy calibrates)
    and refuse an empty one; apply `shift` to a batch of it, so a shift that cannot
    handle the task's inputs (a pixel shift on tokens) fails now, naming both."""
    name = config.task.name
    if shift is not None:
        check_shift(parts.task, shift, config.eval.split, name)
    elif len(parts.task.load_split(config.eval.split)) == 0:
        raise ConfigError(f"eval.split: split {config.eval.split!r} of task {name!r} is empty")
    split = config.eval.calibration_split
    if _calibrating(parts, config) and len(parts.task.load_split(split)) == 0:
        raise ConfigError(
            f"eval.calibration_split: split {split!r} of task {name!r} is empty; a "
            "strategy here calibrates its controller on it"
        )


def check_shift(task: Task, choice: ComponentChoice, split: str, task_name: str) -> None:
    """Apply the shift `choice` to a batch of two examples of `split` (the shift's own
    examples when it supplies them), so that a shift the task's inputs do not suit stops
    before any training or evaluation; the `ConfigError` names the shift and the task.

    A shift states what it needs by raising `ConfigError` from `apply` (or `load_split`),
    so third-party shifts are checked the same way. An empty split is refused too.
    """
    shift = choice.create()
    load_split = getattr(shift, "load_split", None)
    try:
        examples = load_split(task, split) if load_split else task.load_split(split)
        if len(examples) == 0:
            raise ConfigError(f"split {split!r} is empty")
        sample = [examples[index] for index in range(min(2, len(examples)))]
        shift.apply(task.preprocess(sample), torch.Generator().manual_seed(0))
    except ConfigError as exc:
        raise ConfigError(
            f"eval.shift {choice.canonical!r} does not fit task {task_name!r}: {exc}"
        ) from None


def _check_trainable(strategy: TTAStrategy, config: RunConfig) -> None:
    if not isinstance(strategy, InnerLoopStrategy):
        raise ConfigError(
            f"train.strategy {config.train.strategy!r} does not adapt; the "
            f"{config.train.regime} regime needs a strategy such as fixed:1 or adaptive:5"
        )
    second = config.train.regime == "meta" and config.train.meta_order == "second"
    backend = config.model.backbone.options().get("scan_backend")
    if second and backend not in (None, "chunked", "reference"):
        raise ConfigError(
            "train.meta_order=second differentiates through the scan twice; set "
            "model.backbone.scan_backend=chunked (the fused backends differentiate once)"
        )


def evaluate_strategies(
    parts: Components,
    config: RunConfig,
    device: torch.device,
    metrics: MetricsWriter | None,
    console: Console | None,
    shift: Shift | None = None,
) -> dict[str, EvalResult]:
    """Every strategy on the same examples, with the same initial adapter states.

    A `shift` that draws other examples (harder instances) supplies the split itself.
    """
    load_split = getattr(shift, "load_split", None)
    split = config.eval.split
    examples = load_split(parts.task, split) if load_split else parts.task.load_split(split)
    examples = _limited(examples, config.eval.limit)
    calibration: Any = ()
    if any(getattr(s, "needs_calibration", False) for s in parts.strategies.values()):
        held_out = parts.task.load_split(config.eval.calibration_split)
        calibration = _limited(held_out, config.eval.calibration_limit)
    results = {}
    for canonical, strategy in parts.strategies.items():
        results[canonical] = evaluate(
            parts.bound,
            strategy,
            parts.objective,
            examples,
            tta=canonical,
            split=config.eval.split,
            batch_size=config.train.eval_batch_size,
            device=device,
            console=console,
            calibration=calibration,
            shift=shift,
            seed=config.runtime.seed,
        )
        if metrics is not None:
            metrics.write(results[canonical].record())
    return results


def _limited(examples: Any, limit: int | None) -> Any:
    return examples if limit is None else Subset(examples, range(min(limit, len(examples))))


def scan_backend(model: AttdModel) -> str | None:
    """The selective-scan backend training ran (`auto` resolves per machine), for the record.

    Backbones that run a scan expose `scan_backend_used`; others (attention) have none.
    """
    return getattr(model.backbone, "scan_backend_used", None)
