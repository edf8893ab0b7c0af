"""`attd sweep`: train and evaluate every cell of a grid of config values, then tabulate.

Each `--grid KEY=V1,V2,...` names one config key and its values; the cells are the
cartesian product of the grids, in the order given (the first grid varies slowest).
A value is YAML, as with `--set` (`3` is an int, `0.01` a float, `[1, 2]` a list); the
values are split at the commas outside brackets, braces and quotes, so
`model.adapter=[delta-ssm, norm-affine],delta-ssm` has two values and a value that holds
a comma is quoted: `eval.tta='fixed:3,lr=0.1',fixed:1`. A cell's values are applied
after `--set` (they win over it).

Every cell resolves before anything trains, so a bad value stops the sweep at once with
an error that names the cell. Each cell runs as `attd run` would, into its own folder
`DIR/CELL`, CELL being its `key=value` pairs joined by commas (characters other than
letters, digits and `._=,+-` become `_`; a name that had to change, or is longer than
100 characters, ends with a hash of the exact pairs, so names never collide):

- a folder with `summary.json` is a finished cell: it is skipped and its summary read
  back, after checking that it ran with the same settings (else the sweep stops and
  says which key differs);
- a folder with `config.yaml` but no `summary.json` was left by a cell that failed or was
  killed: it is moved aside, into `DIR/.incomplete/CELL-TIMESTAMP` (nothing is deleted),
  and the cell runs again from scratch; one that a live process holds (a `--resume`
  finishing it) stops the sweep with an error naming it.

One sweep writes a folder at a time: it holds `DIR`'s lock throughout (see
`attd_core.lock_folder`), and each cell's run holds its own folder's, so a second sweep
into `DIR` exits with an error naming it.

So re-running a sweep runs only what is missing, and adding values to a grid runs only
the new cells. A cell that raises is recorded as failed with a one-line error and the
sweep goes on. `DIR/sweep.json` and `DIR/sweep.md` are rewritten (atomically) after every
cell, so they show progress; the final ones hold one row per cell and strategy.

`jobs > 1` runs cells in that many processes (started with `spawn`). Each builds its own
plugin manager with `manager_factory` (the CLI's: `attd_core.get_plugin_manager`, the
installed plugins, as `attd` loads them), and caps torch at `cpu_count // jobs` threads
unless the config sets `runtime.threads`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import re
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console
from rich.markup import escape

import attd_core
from attd_cli.tables import WrappingTable
from attd_core import AttdError, ConfigError, PluginManager, RunSummary, get_plugin_manager

if TYPE_CHECKING:
    from attd_core import ResolvedConfig

REPORT_STEM = "sweep"
INCOMPLETE = ".incomplete"
MAX_NAME = 100
SAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._=,+-]")
IGNORED_WHEN_SKIPPING = ("runtime.output_dir", "runtime.threads")
"""Settings that may differ between a finished cell and the sweep that finds it."""


class _Unset:
    def __repr__(self) -> str:
        return "unset"


_UNSET = _Unset()


# -- the grid ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GridAxis:
    """One `--grid`: a config key, its values (parsed) and their text as given."""

    key: str
    values: tuple[Any, ...]
    texts: tuple[str, ...]


def parse_grid(text: str) -> GridAxis:
    """`KEY=V1,V2,...` as an axis; each value is YAML, as with `--set`."""
    key, has_values, raw = text.partition("=")
    key = ".".join(part.strip() for part in key.split("."))
    if not has_values or not all(key.split(".")):
        raise ConfigError(f"bad --grid {text!r}: expected KEY=V1,V2,..., e.g. train.lr=0.001,0.01")
    texts = split_values(raw)
    if not all(texts):
        raise ConfigError(
            f"bad --grid {text!r}: an empty value (write null or '' for one; "
            "quote a value that holds a comma)"
        )
    values = []
    for value_text in texts:
        try:
            values.append(yaml.safe_load(value_text))
        except yaml.YAMLError as exc:
            problem = " ".join(str(exc).split())
            raise ConfigError(
                f"bad --grid {text!r}: value {value_text!r} is not valid YAML: {problem}"
            ) from None
    for index, value in enumerate(values):
        if value in values[:index]:
            raise ConfigError(f"bad --grid {text!r}: value {texts[index]!r} is given twice")
    return GridAxis(key, tuple(values), tuple(texts))


def split_values(text: str) -> list[str]:
    """`text` split at the commas outside `[]`, `{}` and quotes, each part stripped."""
    parts: list[str] = []
    depth, quote, escaped, start = 0, "", False, 0
    for index, char in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\" and quote == '"':
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part.strip() for part in parts]


def value_text(value: Any) -> str:
    """A value as a cell shows it: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its folder name, values and `--set`-style overrides."""

    name: str
    values: dict[str, Any]
    overrides: tuple[str, ...]


def plan_cells(axes: Sequence[GridAxis]) -> list[Cell]:
    """The cartesian product of `axes`, the first varying slowest."""
    cells = []
    for combination in itertools.product(*(range(len(axis.values)) for axis in axes)):
        picked = [(axis, index) for axis, index in zip(axes, combination, strict=True)]
        cells.append(
            Cell(
                name=cell_name([(axis.key, axis.values[index]) for axis, index in picked]),
                values={axis.key: axis.values[index] for axis, index in picked},
                overrides=tuple(f"{axis.key}={axis.texts[index]}" for axis, index in picked),
            )
        )
    seen: dict[str, Cell] = {}
    for cell in cells:
        if cell.name in seen:
            raise ConfigError(
                f"grid cells {_pairs(seen[cell.name])} and {_pairs(cell)} would share the "
                f"folder {cell.name!r}; give values that read differently"
            )
        seen[cell.name] = cell
    return cells


def cell_name(pairs: Iterable[tuple[str, Any]]) -> str:
    """`key=value,...`, made safe for a folder name; a hash keeps changed names unique."""
    raw = ",".join(f"{key}={value_text(value)}" for key, value in pairs)
    safe = SAFE_CHARACTERS.sub("_", raw)
    if safe == raw and len(raw) <= MAX_NAME and not raw.endswith("."):
        return raw
    digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:8]
    return f"{safe[: MAX_NAME - len(digest) - 1]}-{digest}"


def _pairs(cell: Cell) -> str:
    return ",".join(f"{key}={value_text(value)}" for key, value in cell.values.items())


def _check_axes(axes: Sequence[GridAxis], flags: Mapping[str, str]) -> None:
    """No key twice, no key inside another, none that a sweep flag sets."""
    for index, axis in enumerate(axes):
        for other in axes[:index]:
            if _overlap(axis.key, other.key):
                raise ConfigError(
                    f"--grid {axis.key} overlaps --grid {other.key}; "
                    "give each key once, with all its values"
                )
        for path, flag in flags.items():
            if _overlap(axis.key, path):
                raise ConfigError(f"--grid {axis.key} conflicts with {flag}; drop one of them")


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(f"{b}.") or b.startswith(f"{a}.")


# -- running a cell ----------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What every cell shares: the `attd sweep` options other than the grid."""

    task: str | None
    preset: str | None
    config_files: tuple[str, ...]
    overrides: tuple[str, ...]
    tta: tuple[str, ...]
    seed: int | None

    def resolve(
        self, manager: PluginManager, cell_overrides: Sequence[str], output_dir: str
    ) -> ResolvedConfig:
        return attd_core.resolve_run_config(
            manager,
            task=self.task,
            tta=self.tta,
            preset=self.preset,
            config_files=self.config_files,
            overrides=[*self.overrides, *cell_overrides],
            seed=self.seed,
            output_dir=output_dir,
        )


@dataclass(frozen=True)
class CellJob:
    """A cell to run, as a worker process receives it."""

    settings: Settings
    name: str
    overrides: tuple[str, ...]
    output_dir: str


def run_cell(job: CellJob, manager: PluginManager, console: Console | None) -> dict[str, Any]:
    """Resolve and run one cell; an exception becomes a `failed` outcome, not a raise."""
    start = time.perf_counter()
    try:
        resolved = job.settings.resolve(manager, job.overrides, job.output_dir)
        summary = attd_core.run_experiment(resolved, manager, console=console)
    except Exception as exc:
        return _failure(exc, time.perf_counter() - start)
    return {"status": "run", "summary": summary, "seconds": time.perf_counter() - start}


def _run_in_worker(job: CellJob, manager_factory: Callable[[], PluginManager]) -> dict[str, Any]:
    """`run_cell` in a worker process, with its own plugin manager and no progress bars."""
    start = time.perf_counter()
    try:
        manager = manager_factory()
    except Exception as exc:
        return _failure(exc, time.perf_counter() - start)
    return run_cell(job, manager, Console(quiet=True))


def _failure(exc: BaseException, seconds: float) -> dict[str, Any]:
    text = str(exc) if isinstance(exc, AttdError) else f"{type(exc).__name__}: {exc}"
    return {
        "status": "failed",
        "error": " ".join(text.split()),
        "traceback": None if isinstance(exc, AttdError) else traceback.format_exc(),
        "seconds": seconds,
    }


# -- the sweep ---------------------------------------------------------------------------


def sweep(
    manager: PluginManager,
    *,
    task: str | None,
    preset: str | None,
    config_files: Sequence[str],
    overrides: Sequence[str],
    grid: Sequence[str],
    tta: Sequence[str],
    seed: int | None,
    output_dir: str | Path,
    jobs: int = 1,
    console: Console,
    progress_console: Console,
    manager_factory: Callable[[], PluginManager] = get_plugin_manager,
) -> dict[str, Any]:
    """Run the grid's cells into `output_dir`, write `sweep.json`/`sweep.md`, print the
    table; returns the JSON report. With `jobs == 1` the cells run here, with `manager`;
    with more, in worker processes whose managers come from `manager_factory`
    (picklable).

    The sweep holds `output_dir`'s lock throughout, so a second sweep into it is refused
    at once (and each cell's run holds its own folder's)."""
    if not str(output_dir).strip():
        raise ConfigError("--output-dir must name a folder (an empty name means this one)")
    with attd_core.lock_folder(output_dir, what="sweep folder") as lock:
        lock.remove_leftovers(attd_core.is_staging_name)  # sweep.json/md a killed sweep left
        return _sweep(
            manager,
            task=task,
            preset=preset,
            config_files=config_files,
            overrides=overrides,
            grid=grid,
            tta=tta,
            seed=seed,
            output_dir=lock.folder,
            jobs=jobs,
            console=console,
            progress_console=progress_console,
            manager_factory=manager_factory,
        )


def _sweep(
    manager: PluginManager,
    *,
    task: str | None,
    preset: str | None,
    config_files: Sequence[str],
    overrides: Sequence[str],
    grid: Sequence[str],
    tta: Sequence[str],
    seed: int | None,
    output_dir: Path,
    jobs: int,
    console: Console,
    progress_console: Console,
    manager_factory: Callable[[], PluginManager],
) -> dict[str, Any]:
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1 (got {jobs})")
    if not grid:
        raise ConfigError("sweep needs at least one --grid KEY=V1,V2")
    axes = [parse_grid(text) for text in grid]
    flags = {"runtime.output_dir": "--output-dir"}
    flags.update({"task.name": "--task"} if task is not None else {})
    flags.update({"eval.tta": "--tta"} if tta else {})
    flags.update({"runtime.seed": "--seed"} if seed is not None else {})
    _check_axes(axes, flags)
    cells = plan_cells(axes)
    out = _check_output_dir(output_dir)
    settings = Settings(task, preset, tuple(config_files), tuple(overrides), tuple(tta), seed)
    threads = _threads_per_job(jobs)

    jobs_by_name: dict[str, CellJob] = {}
    records: list[dict[str, Any]] = []
    incomplete: list[Path] = []
    for cell in cells:  # resolve and check every cell before anything runs or moves
        folder = out / cell.name
        try:
            resolved = settings.resolve(manager, cell.overrides, str(folder))
        except AttdError as exc:
            raise ConfigError(f"grid cell {_pairs(cell)}: {exc}") from None
        record = {
            "name": cell.name,
            "dir": str(folder),
            "values": cell.values,
            "overrides": list(cell.overrides),
            "task": resolved.config.task.name,
            "status": "pending",
            "seconds": None,
            "error": None,
            "traceback": None,
            "train": None,
            "eval": {},
        }
        records.append(record)
        if (folder / "summary.json").is_file():
            summary = _finished_summary(cell, folder, resolved)
            record.update(status="skipped", **_results(summary))
            continue
        if (folder / "config.yaml").exists():
            incomplete.append(folder)
        cell_overrides = cell.overrides
        if threads is not None and resolved.config.runtime.threads is None:
            cell_overrides = (*cell_overrides, f"runtime.threads={threads}")
        jobs_by_name[cell.name] = CellJob(settings, cell.name, cell_overrides, str(folder))

    out.mkdir(parents=True, exist_ok=True)
    for folder in incomplete:
        moved = _move_aside(folder, out)
        progress_console.print(
            f"{escape(folder.name)}: unfinished run moved to {escape(str(moved))}", highlight=False
        )
    report = {
        "output_dir": str(out),
        "task": task,
        "preset": preset,
        "config_files": list(config_files),
        "overrides": list(overrides),
        "tta": list(tta),
        "seed": seed,
        "jobs": jobs,
        "grid": {axis.key: list(axis.values) for axis in axes},
        "counts": {},
        "cells": records,
    }
    write_reports(out, report)
    by_name = {record["name"]: record for record in records}
    total = len(records)
    for position, record in enumerate(records, 1):
        if record["status"] == "skipped":
            console.print(
                f"[bold][{position}/{total}][/] {escape(record['name'])}: finished, skipped",
                highlight=False,
            )

    def finish(name: str, outcome: dict[str, Any]) -> None:
        record = by_name[name]
        summary = outcome.pop("summary", None)
        record.update(outcome)
        if summary is not None:
            record.update(_results(summary))
        write_reports(out, report)
        if record["status"] == "failed":
            if record["traceback"]:
                progress_console.print(escape(record["traceback"].rstrip()), highlight=False)
            progress_console.print(
                f"[bold red]failed[/] {escape(name)}: {escape(record['error'])}", highlight=False
            )
        else:
            console.print(
                f"[bold]done[/] {escape(name)} in {record['seconds']:.1f} s", highlight=False
            )

    pending = list(jobs_by_name.values())
    if jobs == 1 or len(pending) <= 1:
        for job in pending:
            position = records.index(by_name[job.name]) + 1
            console.print(f"[bold][{position}/{total}][/] {escape(job.name)}", highlight=False)
            finish(job.name, run_cell(job, manager, progress_console))
    else:
        workers = min(jobs, len(pending))
        console.print(f"running {len(pending)} cells in {workers} processes", highlight=False)
        _run_parallel(pending, workers, manager_factory, finish)

    counts = {status: 0 for status in ("run", "skipped", "failed")}
    for record in records:
        counts[record["status"]] += 1
    report["counts"] = counts
    written = write_reports(out, report)
    console.print(sweep_table(report))
    for file in written:
        console.print(f"[bold]wrote[/] {escape(str(file))}", highlight=False)
    return report


def _run_parallel(
    pending: Sequence[CellJob],
    workers: int,
    manager_factory: Callable[[], PluginManager],
    finish: Callable[[str, dict[str, Any]], None],
) -> None:
    context = multiprocessing.get_context("spawn")  # torch and fork do not mix
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        futures: dict[Future[dict[str, Any]], str] = {
            executor.submit(_run_in_worker, job, manager_factory): job.name for job in pending
        }
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as exc:  # the worker died, or the job did not pickle
                outcome = _failure(exc, 0.0)
            finish(futures[future], outcome)
    except BaseException:
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    executor.shutdown(wait=True)


def _check_output_dir(out: Path) -> Path:
    from attd_core import RUN_MARKERS

    for marker in RUN_MARKERS:
        if (out / marker).exists():
            raise ConfigError(
                f"output dir {str(out)!r} holds a run ({marker}), not a sweep; "
                "choose another --output-dir"
            )
    return out


def _threads_per_job(jobs: int) -> int | None:
    """torch threads per worker process; None (torch's own choice) for one job."""
    if jobs == 1:
        return None
    affinity = getattr(os, "sched_getaffinity", None)
    cpus = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    return max(1, cpus // jobs)


def _finished_summary(cell: Cell, folder: Path, resolved: ResolvedConfig) -> RunSummary:
    """A finished cell's summary, if it ran with the settings this sweep gives it."""
    try:
        summary = RunSummary.read(folder)
    except ConfigError as exc:
        raise ConfigError(
            f"grid cell {_pairs(cell)}: {exc}; remove the folder to run the cell again"
        ) from None
    try:
        recorded = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"grid cell {_pairs(cell)}: cannot read the finished run in {str(folder)!r} "
            f"({type(exc).__name__}); remove the folder to run the cell again"
        ) from None
    wanted = attd_core.flatten_dotted(resolved.to_yaml_dict())
    found = attd_core.flatten_dotted(recorded if isinstance(recorded, dict) else {})
    for key in [*wanted, *(key for key in found if key not in wanted)]:
        there, now = found.get(key, _UNSET), wanted.get(key, _UNSET)
        if key in IGNORED_WHEN_SKIPPING or there == now:
            continue
        raise ConfigError(
            f"grid cell {_pairs(cell)}: {str(folder)!r} finished with other settings "
            f"({key}: {there!r} there, {now!r} now); "
            "remove the folder or choose another --output-dir"
        )
    return summary


def _results(summary: RunSummary) -> dict[str, Any]:
    """A cell's training and evaluations for `sweep.json`, as `summary.json` holds them."""
    return {
        "train": summary.train.model_dump(mode="json"),
        "eval": {key: entry.model_dump(mode="json") for key, entry in summary.eval.items()},
    }


def _move_aside(folder: Path, out: Path) -> Path:
    """Rename an unfinished cell folder into `out/.incomplete/`; nothing is deleted.

    A folder that a live process writes (`attd run --resume` finishing it) is not
    moved: its lock says so, and the sweep stops with an error naming it."""
    with attd_core.lock_folder(folder, what="unfinished cell folder"):
        parking = out / INCOMPLETE
        parking.mkdir(exist_ok=True)
        stem = f"{folder.name}-{datetime.now():%Y%m%d-%H%M%S}"
        target, suffix = parking / stem, 1
        while target.exists():
            suffix += 1
            target = parking / f"{stem}-{suffix}"
        folder.rename(target)
    return target


# -- reports -----------------------------------------------------------------------------


def write_reports(out: Path, report: Mapping[str, Any]) -> list[Path]:
    """`sweep.json` and `sweep.md` in `out`, each written atomically."""
    from attd_core import atomic_write_text

    json_path, md_path = (out / f"{REPORT_STEM}{suffix}" for suffix in (".json", ".md"))
    atomic_write_text(json_path, attd_core.json_text(report, indent=2, default=str) + "\n")
    atomic_write_text(md_path, markdown(report))
    return [json_path, md_path]


def table_rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The summary table: one row per cell and strategy (one per cell that has no
    results), a column per grid key, the task's metrics, mean k, the strategy's
    evaluation seconds, the cell's training seconds and its status."""
    keys = list(report["grid"])
    cells = report["cells"]
    names = list(
        dict.fromkeys(
            name for cell in cells for entry in cell["eval"].values() for name in entry["metrics"]
        )
    )
    columns = [*keys, "tta", *names, "mean k", "seconds", "train s", "status"]
    rows = []
    for cell in cells:
        values = [value_text(cell["values"][key]) for key in keys]
        train = cell["train"] or {}
        train_seconds = _number(train.get("seconds"), 1)
        if not cell["eval"]:
            rows.append([*values, "-", *("-" for _ in names), "-", "-", "-", cell["status"]])
        for canonical, entry in cell["eval"].items():
            rows.append(
                [
                    *values,
                    canonical,
                    *(_number(entry["metrics"].get(name), 4) for name in names),
                    _number(entry["mean_k"], 2),
                    _number(entry["seconds"], 2),
                    train_seconds,
                    cell["status"],
                ]
            )
    return columns, rows


def _number(value: Any, digits: int) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.{digits}f}"


def _title(report: Mapping[str, Any]) -> str:
    tasks = ", ".join(dict.fromkeys(cell["task"] for cell in report["cells"]))
    return f"attd sweep: {tasks}"


def sweep_table(report: Mapping[str, Any]) -> WrappingTable:
    """The printed table; it wraps in a narrow console, never cuts."""
    columns, rows = table_rows(report)
    table = WrappingTable(*columns, title=_title(report))
    for row in rows:
        table.add_row(*row)
    return table


def markdown(report: Mapping[str, Any]) -> str:
    """`sweep.md`: a header, the table, then the failed cells' errors."""
    counts = {status: 0 for status in ("run", "skipped", "failed", "pending")}
    for cell in report["cells"]:
        counts[cell["status"]] += 1
    tally = ", ".join(f"{n} {status}" for status, n in counts.items() if n or status != "pending")
    grid = "; ".join(
        f"`{key}` = {', '.join(value_text(value) for value in values)}"
        for key, values in report["grid"].items()
    )
    lines = [
        f"# {_title(report)}",
        "",
        f"Folder `{report['output_dir']}`; {len(report['cells'])} cells ({tally}).",
        "",
        f"Grid: {grid}.",
        "",
    ]
    columns, rows = table_rows(report)
    text_columns = {*report["grid"], "tta", "status"}
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---" if c in text_columns else "---:" for c in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    failed = [cell for cell in report["cells"] if cell["status"] == "failed"]
    if failed:
        lines += ["", "## Failed cells", ""]
        lines += [f"- `{cell['name']}`: {cell['error']}" for cell in failed]
    return "\n".join(lines) + "\n"
