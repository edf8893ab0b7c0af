"""`attd report`: a finished run's folder as one Markdown page with its figures.

Writes `report.md`, `report_training.png` (loss and learning rate against step, the
validation metric against step when the run validated, and the controller phase when
it had one) and `report_eval.png` (the task's headline metric and mean k per strategy)
into the run folder or `--output DIR`. It reads the run's files only (`config.yaml`,
`metrics.jsonl`, `summary.json`, and `compare.json` when `attd compare` wrote one): no
torch, no model. matplotlib loads when the figures are drawn, with the object API on
the Agg canvas, as for `attd compare`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from attd_cli.compare import ORACLE_NOTE
from attd_cli.evaluate import CLEAN, check_run_dir
from attd_cli.paired_columns import HEADERS, note
from attd_cli.paired_columns import cells as paired_cells
from attd_cli.plots import stage_png, strategy_label
from attd_core import (
    ConfigError,
    EvalSummary,
    PhaseSummary,
    RunSummary,
    TrainSummary,
    ValidationRecord,
    check_destination,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

REPORT_MD = "report.md"
TRAINING_PNG = "report_training.png"
EVAL_PNG = "report_eval.png"
COMPARE_JSON = "compare.json"
COMPARE_PNG = "compare.png"


@dataclass(frozen=True)
class RunFiles:
    """What a finished run's folder holds, read and checked."""

    path: Path
    summary: RunSummary
    records: list[dict[str, Any]]
    config_text: str
    config: dict[str, Any]
    compare: dict[str, Any] | None


def report(run_dir: str | Path, *, output: str | None, console: Console) -> list[Path]:
    """Read the run, write `report.md` and its two figures; returns the files written."""
    path = check_run_dir(run_dir)
    if output is not None and not output.strip():
        raise ConfigError("--output must name a folder (an empty name means the current one)")
    out = path if output is None else Path(output)
    for name in (REPORT_MD, TRAINING_PNG, EVAL_PNG):  # before any work; creates the folder
        check_destination(out / name, "report file")
    run = read_run(path)
    written = write_report(out, run)
    for file in written:
        console.print(f"[bold]wrote[/] {escape(str(file))}", highlight=False)
    return written


# Reading ---------------------------------------------------------------------------------


def read_run(path: Path) -> RunFiles:
    """Every file the report needs; a missing or corrupt one is a one-line ConfigError."""
    from attd_core import load_yaml_file

    summary = RunSummary.read(path)
    records = read_metrics(path / "metrics.jsonl")
    config_file = path / "config.yaml"
    config = load_yaml_file(config_file)
    compare = read_compare(path / COMPARE_JSON)
    return RunFiles(
        path, summary, records, config_file.read_text(encoding="utf-8"), config, compare
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{str(path)!r}: unreadable: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{str(path)!r}: not valid JSON: {exc}") from None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every record of `metrics.jsonl`, in order; blank lines are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"{str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{str(path)!r}: unreadable: {exc}") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{path}:{number}: not a JSON object: {exc}") from None
        if not isinstance(record, dict):
            raise ConfigError(f"{path}:{number}: not a JSON object: got a {type(record).__name__}")
        records.append(record)
    return records


def read_compare(path: Path) -> dict[str, Any] | None:
    """`compare.json` from `attd compare`, when the run folder has one."""
    if not path.is_file():
        return None
    data = _read_json(path)
    try:
        compare_markdown(data)  # fail now, before anything is written
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"{str(path)!r} is not an attd compare report ({type(exc).__name__}: {exc})"
        ) from None
    return data


def events(records: Iterable[Mapping[str, Any]], event: str, *keys: str) -> list[dict[str, Any]]:
    """The records of one event that hold a number for each of `keys`."""
    return [
        dict(record)
        for record in records
        if record.get("event") == event and all(_is_number(record.get(key)) for key in keys)
    ]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# Markdown --------------------------------------------------------------------------------


def _code(value: Any) -> str:
    return "-" if value is None else f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _number(value: Any, spec: str) -> str:
    return format(value, spec) if _is_number(value) else "-"


def metric_names(entries: Mapping[str, EvalSummary]) -> list[str]:
    return list(dict.fromkeys(name for entry in entries.values() for name in entry.metrics))


def headline_metric(entries: Mapping[str, EvalSummary]) -> str | None:
    """The task's headline metric: accuracy when reported, else its first metric."""
    names = [
        name
        for name in metric_names(entries)
        if any(_is_number(entry.metrics.get(name)) for entry in entries.values())
    ]
    if not names:
        return None
    return "accuracy" if "accuracy" in names else names[0]


def split_entries(
    summary: RunSummary, config: Mapping[str, Any]
) -> tuple[dict[str, EvalSummary], dict[str, EvalSummary]]:
    """The run's own evaluations (`none` and `eval.tta`), and those `attd eval` added."""
    section = config.get("eval")
    tta = section.get("tta") if isinstance(section, dict) else None
    own = {"none", *(tta if isinstance(tta, list) else [])}
    run, later = {}, {}
    for key, entry in summary.eval.items():
        (run if key in own else later)[key] = entry
    return run, later


def _shift_of(key: str) -> tuple[str, str]:
    """`attd eval`'s summary key `TTA@SHIFT` as (TTA, SHIFT); unshifted keys are clean."""
    tta, at, shift = key.partition("@")
    return (tta, shift) if at else (key, CLEAN)


def eval_table(entries: Mapping[str, EvalSummary], *, shifts: bool = False) -> list[str]:
    """One row per strategy: every metric, the comparison with `none` (when a strategy
    other than `none` is there), mean/p50/p90 k, seconds per sample, n; then the note
    on the comparison."""
    names = metric_names(entries)
    compared = any(_shift_of(key)[0] != "none" for key in entries)
    columns = ["tta", *(["shift"] if shifts else []), *names, *(HEADERS if compared else ())]
    columns += ["mean k", "p50 k", "p90 k", "s/sample", "n", "uses labels"]
    left = {"tta", "shift"}
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" if c in left else "---:" for c in columns) + "|",
    ]
    for key, entry in entries.items():
        tta, shift = _shift_of(key) if shifts else (key, "")
        labels = entry.uses_labels
        cells = [f"`{tta}`" + (" (uses labels)" if labels else "")]
        cells += [f"`{shift}`" if shift != CLEAN else CLEAN] if shifts else []
        cells += [_number(entry.metrics.get(name), ".4f") for name in names]
        cells += paired_cells(entry.paired) if compared else []
        cells += [
            _number(entry.mean_k, ".2f"),
            _number(entry.p50_k, "g"),
            _number(entry.p90_k, "g"),
            _number(entry.seconds_per_sample, ".2e"),
            str(entry.n),
            "yes" if labels else "no",
        ]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    if compared:
        lines += ["", note(entry.paired for entry in entries.values())]
    return lines


def compare_markdown(compare: Mapping[str, Any]) -> list[str]:
    """`attd compare`'s Markdown tables, one heading level down, without its title."""
    from attd_cli.compare import markdown

    lines = markdown(compare).rstrip("\n").split("\n")
    body = [line for line in lines if not line.startswith("# ")]
    return ["#" + line if line.startswith("## ") else line for line in body]


def _relative(target: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(target, start)).as_posix()
    except ValueError:  # another drive (Windows)
        return target.resolve().as_posix()


def validation_headline(validations: Sequence[ValidationRecord]) -> str | None:
    """The metric the curve shows: accuracy when recorded, else the first metric."""
    names = list(dict.fromkeys(name for record in validations for name in record.metrics))
    if not names:
        return None
    return "accuracy" if "accuracy" in names else names[0]


def validation_lines(validations: Sequence[ValidationRecord]) -> list[str]:
    """A sentence on the validations while training (the headline metric at the first
    and the last, and the highest accuracy), then a table: one row per validation."""
    names = list(dict.fromkeys(name for record in validations for name in record.metrics))
    latest = validations[-1]
    text = (
        f"Validated {len(validations)} times while training, on the first {latest.n} "
        f"examples of split `{latest.split}`, without adaptation; seconds are training "
        "seconds so far (validation not counted)."
    )
    headline = validation_headline(validations)
    scored = [r for r in validations if _is_number(r.metrics.get(headline))]
    if scored:
        first, last = scored[0], scored[-1]
        text += (
            f" Validation {headline}: {first.metrics[headline]:.4f} at step {first.step}, "
            f"{last.metrics[headline]:.4f} at step {last.step}"
        )
        if headline == "accuracy":
            best = max(scored, key=lambda record: record.metrics[headline])
            text += f" (highest {best.metrics[headline]:.4f}, at step {best.step})"
        text += "."
    columns = ["step", "epoch", "seconds", *names]
    lines = [
        text,
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" for _ in columns) + "|",
    ]
    for record in validations:
        cells = [str(record.step), str(record.epoch), _number(record.seconds, ".1f")]
        cells += [_number(record.metrics.get(name), ".4f") for name in names]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return lines


def _training_line(label: str, phase: TrainSummary | PhaseSummary) -> str:
    parts = [f"{phase.steps} steps"]
    if isinstance(phase, TrainSummary):
        parts.append(f"{phase.epochs} epochs")
    parts.append(f"{_number(phase.seconds, '.1f')} s")
    parts.append(f"final loss {_number(phase.loss, '.4f')}")
    return f"- **{label}**: " + ", ".join(parts)


def markdown(run: RunFiles, out: Path) -> str:
    """`report.md`: header, training curves, evaluation tables, comparison, config."""
    summary = run.summary
    task = summary.task
    section = run.config.get("eval") if isinstance(run.config.get("eval"), dict) else {}
    limit = section.get("limit")
    shift = summary.shift

    lines = [
        f"# attd report: {task}",
        "",
        f"- **run**: `{run.path}`",
        f"- **task**: {_code(task)}",
        f"- **backbone**: {_code(summary.backbone)}",
        f"- **adapter**: {_code(summary.adapter)}",
        f"- **seed**: {summary.seed}",
        f"- **device**: {_code(summary.device)}",
        f"- **scan backend**: {_code(summary.scan_backend)}",
        f"- **regime**: `{summary.train.regime}`",
        _training_line("training", summary.train),
    ]
    if summary.train.controller is not None:
        lines.append(_training_line("controller phase", summary.train.controller))

    train_records = events(run.records, "train", "step", "loss")
    lines += ["", "## Training", "", f"![training curves]({TRAINING_PNG})", ""]
    if train_records:
        first, last = train_records[0], train_records[-1]
        lines.append(
            f"{len(train_records)} logged training records, steps {first['step']} to "
            f"{last['step']}; loss {first['loss']:.4f} at the first, {last['loss']:.4f} "
            "at the last."
        )
    else:
        lines.append("`metrics.jsonl` holds no training records.")
    validations = ValidationRecord.read(run.records)
    if validations:
        lines += ["", *validation_lines(validations)]
    controller_records = events(run.records, "controller", "step", "loss")
    if controller_records:
        lines.append(
            f"The controller phase logged {len(controller_records)} records "
            f"(loss {controller_records[-1]['loss']:.4f} at the last)."
        )

    run_entries, later = split_entries(summary, run.config)
    where = f"shift `{shift}`" if shift else "clean data"
    on = f"split `{section.get('split', 'test')}` (limit {'all' if limit is None else limit})"
    lines += ["", "## Evaluation", "", f"`attd run` evaluated on {on}, {where}.", ""]
    lines += eval_table(run_entries) if run_entries else ["No evaluation recorded."]
    lines += ["", f"![evaluation]({EVAL_PNG})"]
    if later:
        lines += [
            "",
            "## Later evaluations (`attd eval`)",
            "",
            "Recorded in `summary.json` by `attd eval`; shifted ones name their shift.",
            "",
            *eval_table(later, shifts=True),
        ]
    if any(entry.uses_labels for entry in summary.eval.values()):
        lines += ["", ORACLE_NOTE]

    if run.compare is not None:
        lines += ["", "## Comparison (`attd compare`)", "", f"From `{COMPARE_JSON}`."]
        lines += compare_markdown(run.compare)
        if (run.path / COMPARE_PNG).is_file():
            lines += ["", f"![attd compare]({_relative(run.path / COMPARE_PNG, out)})"]

    yaml_text = run.config_text.rstrip("\n")
    lines += [
        "",
        "## Config",
        "",
        "<details>",
        "<summary>The resolved config (<code>config.yaml</code>)</summary>",
        "",
        "```yaml",
        yaml_text,
        "```",
        "",
        "</details>",
    ]
    return "\n".join(lines) + "\n"


# Figures ---------------------------------------------------------------------------------


def _figure(size: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="tight")
    FigureCanvasAgg(figure)
    return figure


def _curve(
    axes: Axes,
    records: Sequence[Mapping[str, Any]],
    key: str,
    twin_key: str | None,
    *,
    label: str,
    twin_label: str,
) -> None:
    """`key` against step on `axes`, and `twin_key` (when logged) on a second y axis."""
    from matplotlib.ticker import MaxNLocator

    marker = "o" if len(records) <= 20 else None
    steps = [record["step"] for record in records]
    axes.plot(steps, [r[key] for r in records], color="C0", marker=marker, label=label)
    axes.set_xlabel("step")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(label, color="C0")
    axes.grid(alpha=0.3)
    twin_records = [r for r in records if twin_key and _is_number(r.get(twin_key))]
    if twin_key and twin_records:
        twin = axes.twinx()
        twin.plot(
            [r["step"] for r in twin_records],
            [r[twin_key] for r in twin_records],
            color="C1",
            linestyle="--",
            marker=marker,
            label=twin_label,
        )
        twin.set_ylabel(twin_label, color="C1")


def render_training_png(path: Path, run: RunFiles) -> Path:
    """Loss and lr against step, the validation metric against step below it (same
    steps, so the end of a plateau lines up), and the controller phase's loss and mean
    k; staged."""
    train = events(run.records, "train", "step", "loss")
    validations = ValidationRecord.read(run.records)
    metric = validation_headline(validations)
    validated = [
        {"step": record.step, metric: record.metrics[metric]}
        for record in validations
        if metric is not None and _is_number(record.metrics.get(metric))
    ]
    controller = events(run.records, "controller", "step", "loss")
    regime = run.summary.train.regime
    panels = 1 + bool(validated) + bool(controller)
    figure = _figure((7.0, 3.4 * panels))
    axes = figure.add_subplot(panels, 1, 1)
    task = run.summary.task
    if train:
        label = "meta loss (after adaptation)" if regime == "meta" else "training loss"
        _curve(axes, train, "loss", "lr", label=label, twin_label="learning rate")
        axes.set_title(f"{task}: {'meta' if regime == 'meta' else 'base'} training")
    else:
        axes.text(0.5, 0.5, "no training records", ha="center", va="center")
        axes.set_axis_off()
    if validated:
        below = figure.add_subplot(panels, 1, 2, sharex=axes if train else None)
        label = f"validation {metric}"
        _curve(below, validated, metric, None, label=label, twin_label="")
        below.set_title(f"{task}: {label} ({validations[-1].n} {validations[-1].split} examples)")
    if controller:
        axes = figure.add_subplot(panels, 1, panels)
        _curve(axes, controller, "loss", "mean_k", label="controller loss", twin_label="mean k")
        axes.set_title(f"{task}: controller phase (backbone frozen)")
    return stage_png(figure, path)


def render_eval_png(path: Path, run: RunFiles) -> Path:
    """The headline metric and mean k of every evaluation in `summary.json`, staged."""
    entries = run.summary.eval
    metric = headline_metric(entries)
    names = list(entries)
    figure = _figure((max(7.0, 1.3 * len(names) + 3.0), 3.8))
    colours = [f"C{index % 10}" for index in range(len(names))]
    hatches = ["//" if entries[name].uses_labels else "" for name in names]
    labels = [strategy_label(name, entries[name].uses_labels) for name in names]

    def bars(axes: Axes, value: Callable[[EvalSummary], Any], ylabel: str) -> None:
        positions = range(len(names))
        heights = [value(entries[name]) for name in names]
        shown = [h if _is_number(h) else 0.0 for h in heights]
        drawn = axes.bar(positions, shown, color=colours, edgecolor="black", linewidth=0.5)
        for bar, hatch, height in zip(drawn, hatches, heights, strict=True):
            bar.set_hatch(hatch)
            text = f"{height:.3g}" if _is_number(height) else "n/a"
            axes.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        axes.set_xticks(list(positions))
        axes.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        axes.set_ylabel(ylabel)
        axes.grid(axis="y", alpha=0.3)

    task = run.summary.task
    left = figure.add_subplot(1, 2, 1)
    if metric is None:
        left.text(0.5, 0.5, "no metric recorded", ha="center", va="center")
        left.set_axis_off()
    else:
        bars(left, lambda e: e.metrics.get(metric), metric)
        left.set_title(f"{task}: {metric}")
    right = figure.add_subplot(1, 2, 2)
    bars(right, lambda e: e.mean_k, "mean inner steps k")
    right.set_title(f"{task}: mean k")
    return stage_png(figure, path)


# Writing ---------------------------------------------------------------------------------


def write_report(out: Path, run: RunFiles) -> list[Path]:
    """The figures first (staged), then `report.md` last, so that it never names a
    figure that is not there; every file is written atomically."""
    from attd_core import atomic_write_text

    md_path, training_path, eval_path = out / REPORT_MD, out / TRAINING_PNG, out / EVAL_PNG
    text = markdown(run, out)
    staged: list[tuple[Path, Path]] = []
    try:
        staged.append((render_training_png(training_path, run), training_path))
        staged.append((render_eval_png(eval_path, run), eval_path))
        for staging, target in staged:
            os.replace(staging, target)
        atomic_write_text(md_path, text)
    except BaseException:
        for staging, _ in staged:
            staging.unlink(missing_ok=True)
        raise
    return [md_path, training_path, eval_path]
