"""The `attd` command line: the built-in commands, as module-level functions.

`app` is the root, with the `data` and `config` sub-apps; the plugins' commands join it
when it runs (see `group.py`, which also turns user errors into one `error: ...` line
with exit code 2). A command gets the plugin manager from its context,
`plugin_manager(ctx)`: `main(argv, manager=...)` or a test runner's `obj=` chooses it,
and by default the installed plugins are loaded. This module imports no torch: the
commands that need it (and rich, which `list-plugins --json` does not) import it when
they run, so that start-up stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

import attd_cli
import attd_core
from attd_cli.group import USER_ERROR, AttdGroup, fail, plugin_manager
from attd_core import AttdError, PluginManager

TtaSpecs = Annotated[
    list[str] | None,
    typer.Option(
        "--tta",
        metavar="SPEC",
        help="Strategy to compare with no adaptation, e.g. fixed:3 (repeatable).",
    ),
]
Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override one config value, e.g. train.lr=0.01 or eval.limit=200 "
        "(repeatable; YAML value).",
    ),
]
ConfigFiles = Annotated[
    list[str] | None,
    typer.Option("--config", metavar="FILE", help="YAML config, merged in order (repeatable)."),
]
TaskName = Annotated[
    str | None,
    typer.Option(metavar="NAME", help="Task to train and evaluate (see list-plugins)."),
]
Preset = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        help="The task's named settings, e.g. paper (see list-plugins); --set still wins.",
    ),
]
DataTask = Annotated[
    str, typer.Option("--task", metavar="NAME", help="The task (see list-plugins).")
]
TaskOverrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a task option, e.g. max_depth=8 (task. prefix optional; repeatable).",
    ),
]
RunDir = Annotated[str, typer.Argument(metavar="RUN_DIR", help="A finished run's folder.")]

app = typer.Typer(
    name="attd",
    cls=AttdGroup,
    help="Mamba state-space models that adapt themselves at test time.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Export a task's examples or summarise its splits.", no_args_is_help=True
)
"""`attd data export|info`: a task's data, as a run with these settings would see them."""
config_app = typer.Typer(
    help="Show the resolved run config, validate config files, print the JSON Schema.",
    no_args_is_help=True,
)
"""`attd config show|validate|schema`: the run config, resolved or described."""
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"attd-cli {attd_cli.__version__} (attd-core {attd_core.__version__})")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Print the versions of attd-cli and attd-core, then exit.",
        ),
    ] = False,
) -> None:
    """attd: Mamba state-space models that adapt themselves at test time."""


@app.command("list-plugins")
def list_plugins_command(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the rows as a JSON list of objects.")
    ] = False,
) -> None:
    """List installed plugins and the components they provide."""
    from attd_cli.list_plugins import list_plugins

    list_plugins(plugin_manager(ctx), as_json=as_json)


@app.command("run")
def run_command(
    ctx: typer.Context,
    task: TaskName = None,
    backbone: Annotated[
        str | None, typer.Option(metavar="NAME", help="Backbone (default: mamba).")
    ] = None,
    tta: TtaSpecs = None,
    preset: Preset = None,
    shift: Annotated[
        str | None,
        typer.Option(
            "--shift",
            metavar="SPEC",
            help="Evaluate under this shift, e.g. token-deletion:3 (see list-plugins).",
        ),
    ] = None,
    config: ConfigFiles = None,
    overrides: Overrides = None,
    seed: Annotated[int | None, typer.Option(metavar="N", help="Random seed (default 0).")] = None,
    output_dir: Annotated[
        str | None,
        typer.Option(
            metavar="DIR", help="Run folder (default runs/TASK-YYYYmmdd-HHMMSS); must be new."
        ),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            metavar="RUN_DIR",
            help="Finish a stopped run from its last checkpoint, with its own config "
            "(no other options).",
        ),
    ] = None,
) -> None:
    """Train on a task, then evaluate with no adaptation and with each --tta strategy."""
    from rich.console import Console

    from attd_cli.run import run

    given = [task, backbone, tta, preset, shift, config, overrides, seed, output_dir]
    if resume is not None and any(value is not None for value in given):
        fail("--resume finishes a run with its own config.yaml: give it no other options")
    run(
        plugin_manager(ctx),
        resume=resume,
        task=task,
        backbone=backbone,
        tta=tta or [],
        preset=preset,
        shift=shift,
        config_files=config or [],
        overrides=overrides or [],
        seed=seed,
        output_dir=output_dir,
        console=Console(),
        progress_console=Console(stderr=True),
    )


@app.command("eval")
def eval_command(
    ctx: typer.Context,
    run_dir: RunDir,
    tta: Annotated[
        str, typer.Option("--tta", metavar="SPEC", help="Strategy to evaluate, e.g. fixed:3.")
    ],
    shift: Annotated[
        str | None,
        typer.Option("--shift", metavar="SPEC", help="Shift the test data (see list-plugins)."),
    ] = None,
    overrides: Overrides = None,
) -> None:
    """Evaluate a run with one strategy; record it in summary.json and metrics.jsonl."""
    from rich.console import Console

    from attd_cli.evaluate import evaluate_run

    evaluate_run(
        plugin_manager(ctx),
        run_dir,
        tta=tta,
        shift=shift,
        overrides=overrides or [],
        console=Console(),
        progress_console=Console(stderr=True),
    )


@app.command("compare")
def compare_command(
    ctx: typer.Context,
    run_dirs: Annotated[
        list[str],
        typer.Argument(
            metavar="RUN_DIR",
            help="A finished run's folder; several: one config, different runtime.seed "
            "(pooled; needs --output).",
        ),
    ],
    tta: TtaSpecs = None,
    shift: Annotated[
        list[str] | None,
        typer.Option(
            "--shift",
            metavar="SPEC",
            help="Evaluate under this shift instead of clean data (repeatable).",
        ),
    ] = None,
    overrides: Overrides = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            metavar="STEM",
            help="Write STEM.json, STEM.md and STEM.png (default RUN_DIR/compare).",
        ),
    ] = None,
) -> None:
    """Compare each --tta strategy with none on runs; write compare.json/md/png."""
    from rich.console import Console

    from attd_cli.compare import compare

    compare(
        plugin_manager(ctx),
        run_dirs,
        tta=tta or [],
        shifts=shift or [],
        overrides=overrides or [],
        output=output,
        console=Console(),
        progress_console=Console(stderr=True),
    )


@app.command("report")
def report_command(
    run_dir: RunDir,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            metavar="DIR",
            help="Write report.md and its figures here (default RUN_DIR; created if missing).",
        ),
    ] = None,
) -> None:
    """Write report.md: training curves, evaluation tables and PNG figures of a run."""
    from rich.console import Console

    from attd_cli.report import report

    report(run_dir, output=output, console=Console())


@app.command("new-plugin")
def new_plugin_command(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="The component's name, e.g. my-task: lowercase letters and digits, "
            "words joined by - or _. The package is attd-NAME (import attd_NAME).",
        ),
    ],
    kind: Annotated[
        str,
        typer.Option("--kind", metavar="KIND", help="What the plugin provides: task or strategy."),
    ] = "task",
    out: Annotated[
        str,
        typer.Option(
            "--out", metavar="DIR", help="Folder to write attd-NAME into (created if missing)."
        ),
    ] = ".",
) -> None:
    """Write a ready-to-install plugin package: a working example, tests, README."""
    from attd_cli.new_plugin import new_plugin

    new_plugin(plugin_manager(ctx), name, kind=kind, out=out, echo=typer.echo)


@app.command("sweep")
def sweep_command(
    ctx: typer.Context,
    grid: Annotated[
        list[str],
        typer.Option(
            "--grid",
            metavar="KEY=V1,V2",
            help="A config key and its values, YAML each, split at commas outside "
            "brackets and quotes (repeatable: the cells are the product).",
        ),
    ],
    output_dir: Annotated[
        str,
        typer.Option(
            metavar="DIR",
            help="Sweep folder: a run folder per cell, sweep.json and sweep.md.",
        ),
    ],
    task: TaskName = None,
    preset: Preset = None,
    config: ConfigFiles = None,
    overrides: Overrides = None,
    tta: TtaSpecs = None,
    seed: Annotated[int | None, typer.Option(metavar="N", help="Random seed (default 0).")] = None,
    jobs: Annotated[
        int,
        typer.Option(
            metavar="N",
            min=1,
            help="Cells run at once, in separate processes that load the installed "
            "plugins (default 1: one after the other).",
        ),
    ] = 1,
) -> None:
    """Run every cell of a grid (skipping finished ones) and write sweep.json/md."""
    from rich.console import Console

    from attd_cli.sweep import sweep

    report = sweep(
        plugin_manager(ctx),
        task=task,
        preset=preset,
        config_files=config or [],
        overrides=overrides or [],
        grid=grid,
        tta=tta or [],
        seed=seed,
        output_dir=output_dir,
        jobs=jobs,
        console=Console(),
        progress_console=Console(stderr=True),
    )
    failed = report["counts"]["failed"]
    if failed:
        raise AttdError(
            f"{failed} of {len(report['cells'])} cells failed (see {report['output_dir']}/sweep.md)"
        )


@data_app.command("export")
def data_export_command(
    ctx: typer.Context,
    task: DataTask,
    out: Annotated[
        str, typer.Option("--out", metavar="PATH", help="The JSON-lines file to write.")
    ],
    preset: Preset = None,
    split: Annotated[
        str, typer.Option(metavar="SPLIT", help="train, validation or test.")
    ] = "test",
    limit: Annotated[
        int | None, typer.Option(metavar="N", min=1, help="Export the first N examples.")
    ] = None,
    overrides: TaskOverrides = None,
) -> None:
    """Write a split's examples as JSON lines (LRA's columns for ListOps; pixels,
    label, height and width for image tasks)."""
    from pathlib import Path

    from attd_cli.data import export_data

    path = Path(out)
    count = export_data(
        plugin_manager(ctx),
        task=task,
        preset=preset,
        split=split,
        limit=limit,
        overrides=overrides or [],
        out=path,
    )
    typer.echo(f"wrote {count} {split} examples of {task} to {path}")


@data_app.command("info")
def data_info_command(
    ctx: typer.Context,
    task: DataTask,
    preset: Preset = None,
    split: Annotated[
        list[str] | None,
        typer.Option(metavar="SPLIT", help="Only this split (repeatable; default all)."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(metavar="N", min=1, help="Measure the first N examples of each split."),
    ] = None,
    overrides: TaskOverrides = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print split sizes, token-length statistics and label balance."""
    from rich.console import Console

    from attd_cli.data import data_info, info_table
    from attd_core import json_text

    info = data_info(
        plugin_manager(ctx),
        task=task,
        preset=preset,
        splits=split or [],
        limit=limit,
        overrides=overrides or [],
    )
    if as_json:
        typer.echo(json_text(info, indent=2))
    else:
        Console().print(info_table(task, info))


@config_app.command("show")
def config_show_command(
    ctx: typer.Context,
    task: Annotated[
        str | None, typer.Option(metavar="NAME", help="The task (see list-plugins).")
    ] = None,
    preset: Preset = None,
    config_files: ConfigFiles = None,
    overrides: Overrides = None,
    tta: TtaSpecs = None,
    fmt: Annotated[
        str, typer.Option("--format", metavar="yaml|json", help="Print YAML or JSON.")
    ] = "yaml",
) -> None:
    """Print the config `attd run` would use with these options, every default filled."""
    from attd_cli.config_command import show_config

    text = show_config(
        plugin_manager(ctx),
        task=task,
        preset=preset,
        config_files=config_files or [],
        overrides=overrides or [],
        tta=tta or [],
        fmt=fmt,
    )
    typer.echo(text, nl=False)


@config_app.command("validate")
def config_validate_command(
    ctx: typer.Context,
    files: Annotated[
        list[str],
        typer.Argument(
            metavar="FILE", help="Config files (or a run's config.yaml), each checked alone."
        ),
    ],
    task: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="The task of files that name none."),
    ] = None,
) -> None:
    """Check config files as `attd run --config FILE` would; exit 2 if any is invalid."""
    from attd_cli.config_command import validate_files

    checks = validate_files(plugin_manager(ctx), files, task=task)
    for check in checks:
        typer.echo(check.line() if check.ok else f"error: {check.line()}", err=not check.ok)
    if not all(check.ok for check in checks):
        raise typer.Exit(USER_ERROR)


@config_app.command("schema")
def config_schema_command(
    ctx: typer.Context,
    tasks: Annotated[
        list[str] | None,
        typer.Option("--task", metavar="NAME", help="Only this task (repeatable; default all)."),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", metavar="FILE", help="Write the schema here, not to stdout."),
    ] = None,
) -> None:
    """Print the run config's JSON Schema, with every installed component's options."""
    from attd_cli.config_command import config_schema, schema_text, write_schema

    schema = config_schema(plugin_manager(ctx), tasks or [])
    if output is None:
        typer.echo(schema_text(schema), nl=False)
    else:
        typer.echo(f"wrote the config schema to {write_schema(schema, output)}")


def main(argv: list[str] | None = None, *, manager: PluginManager | None = None) -> None:
    """The `attd` program, with `manager`'s plugins (default: the installed ones)."""
    app(args=argv, prog_name="attd", obj=manager)
