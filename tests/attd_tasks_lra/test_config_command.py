"""`attd config show|validate|schema` with the installed plugins.

The checks read the `listops` task, so they live with attd-tasks-lra, whose test session
installs it (attd-cli's own session has no task plugins).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict
from typer.testing import CliRunner, Result

import attd_core
from attd_cli.app import app
from attd_cli.config_command import config_schema
from attd_core import TaskSpec, get_plugin_manager, hookimpl
from attd_core.testing import new_plugin_manager

LISTOPS = ["--task", "listops"]


def invoke(*args: str, manager: attd_core.PluginManager | None = None) -> Result:
    """Run `attd ARGS` with `manager`, or with the installed plugins when it is None."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "100"}, obj=manager)


def assert_user_error(result: Result, *fragments: str) -> None:
    """Exit code 2, one `error: ...` line on stderr, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def resolved(**kwargs: Any) -> dict[str, Any]:
    return attd_core.resolve_run_config(get_plugin_manager(), **kwargs).to_yaml_dict()


def write_yaml(path: Path, data: Any) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(path)


# -- show --------------------------------------------------------------------------------


def test_show_prints_the_resolved_config_as_yaml():
    result = invoke("config", "show", *LISTOPS)
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown == resolved(task="listops")
    assert list(shown) == ["task", "model", "train", "eval", "runtime"]
    assert shown["task"]["max_depth"] == 6 and shown["model"]["backbone"]["name"] == "mamba"


def test_show_as_json_parses_set_values_to_the_field_type():
    args = ["--set", "train.lr=0.5", "--set", "train.epochs=3", "--tta", "fixed:3"]
    result = invoke("config", "show", *LISTOPS, *args, "--format", "json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["train"]["lr"] == 0.5 and isinstance(shown["train"]["lr"], float)
    assert shown["train"]["epochs"] == 3 and isinstance(shown["train"]["epochs"], int)
    assert shown["eval"]["tta"] == ["fixed:3"]


def test_show_applies_the_preset_under_set():
    preset = yaml.safe_load(invoke("config", "show", *LISTOPS, "--preset", "paper").stdout)
    assert preset == resolved(task="listops", preset="paper")
    assert preset != resolved(task="listops")
    result = invoke("config", "show", *LISTOPS, "--preset", "paper", "--set", "task.max_depth=9")
    shown = yaml.safe_load(result.stdout)
    assert shown["task"]["max_depth"] == 9 and shown["task"]["num_train"] == 96000


def test_the_paper_preset_keeps_its_shape_on_another_backbone_or_refuses_it():
    """The paper preset used to become 64 x 2 silently under another backbone's name."""
    paper = [*LISTOPS, "--preset", "paper"]
    result = invoke("config", "show", *paper, "--set", "model.backbone.name=hybrid")
    backbone = yaml.safe_load(result.stdout)["model"]["backbone"]
    assert (backbone["d_model"], backbone["n_layers"], backbone["d_state"]) == (256, 6, 64)
    result = invoke("config", "show", *paper, "--set", "model.backbone.name=transformer")
    assert_user_error(
        result,
        "preset 'paper' of task 'listops' sets model.backbone.d_state",
        "backbone 'transformer' does not take",
        "(hybrid, mamba)",
    )


def test_show_merges_config_files_in_order_then_set(tmp_path):
    first = write_yaml(tmp_path / "a.yaml", {"task": "listops", "train": {"lr": 0.1, "epochs": 2}})
    second = write_yaml(tmp_path / "b.yaml", {"train": {"lr": 0.2}, "task": {"max_depth": 4}})
    args = ["config", "show", "--config", first, "--config", second, "--format", "json"]
    shown = json.loads(invoke(*args).stdout)
    assert shown["train"]["lr"] == 0.2 and shown["train"]["epochs"] == 2
    assert shown["task"]["name"] == "listops" and shown["task"]["max_depth"] == 4
    swapped = ["config", "show", "--config", second, "--config", first, "--format", "json"]
    assert json.loads(invoke(*swapped).stdout)["train"]["lr"] == 0.1
    shown = json.loads(invoke(*args, "--set", "train.lr=0.3").stdout)
    assert shown["train"]["lr"] == 0.3


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--set", "train.lrr=1"], ["train.lrr", "allowed in train: epochs", "lr"]),
        (["--set", "task.dpth=3"], ["task.dpth", "allowed in task: max_depth"]),
        (["--set", "trian.lr=1"], ["trian", "allowed in the top level: task, model, train"]),
        (["--set", "train.lr=-1"], ["train.lr", "-1", "greater than 0"]),
        (["--set", "task.max_depth=x"], ["task.max_depth", "'x'", "integer"]),
        (["--tta", "bogus:1"], ["unknown strategy 'bogus'; available: adaptive, fixed"]),
        (["--preset", "nope"], ["no preset 'nope'", "cpu, cpu-long, paper"]),
        (["--format", "xml"], ["--format", "'xml'", "yaml or json"]),
    ],
)
def test_show_errors_name_the_key_the_value_and_what_is_allowed(args, fragments):
    assert_user_error(invoke("config", "show", *LISTOPS, *args), *fragments)


def test_show_without_a_task_lists_the_tasks():
    tasks = ", ".join(get_plugin_manager().names("task"))
    assert_user_error(invoke("config", "show"), f"no task: pass --task NAME (available: {tasks})")


# -- validate ----------------------------------------------------------------------------


def test_validate_accepts_a_good_file(tmp_path):
    path = write_yaml(tmp_path / "good.yaml", {"task": {"name": "listops", "max_depth": 4}})
    result = invoke("config", "validate", path)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{path}: ok (task listops)\n" and result.stderr == ""


def test_validate_names_the_file_and_the_unknown_key(tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", {"task": "listops", "train": {"lrr": 0.1}})
    assert_user_error(
        invoke("config", "validate", path), f"error: {path}: ", "train.lrr", "allowed in train"
    )


def test_validate_checks_every_file_and_reports_each_problem(tmp_path):
    good = write_yaml(tmp_path / "good.yaml", {"task": "listops"})
    unknown = write_yaml(tmp_path / "unknown.yaml", {"task": {"name": "listops", "dpth": 3}})
    no_task = write_yaml(tmp_path / "no-task.yaml", {"train": {"lr": 0.1}})
    missing = str(tmp_path / "missing.yaml")
    result = invoke("config", "validate", unknown, good, no_task, missing)
    assert result.exit_code == 2
    assert result.stdout == f"{good}: ok (task listops)\n"
    errors = result.stderr.splitlines()
    assert [line.split(": ", 2)[1] for line in errors] == [unknown, no_task, missing]
    assert all(line.startswith("error: ") for line in errors)
    assert "task.dpth" in errors[0] and "no task: pass --task NAME" in errors[1]
    assert errors[2] == f"error: {missing}: not found"


def test_validate_takes_the_task_from_the_option(tmp_path):
    path = write_yaml(tmp_path / "train.yaml", {"train": {"lr": 0.1}})
    result = invoke("config", "validate", path, *LISTOPS)
    assert result.exit_code == 0 and result.stdout == f"{path}: ok (task listops)\n"


def test_validate_accepts_a_runs_config_yaml(tmp_path):
    # what `attd run` writes into its folder (attd_core.runtime.run)
    config = attd_core.resolve_run_config(
        get_plugin_manager(), task="listops", tta=["fixed:3"], output_dir=tmp_path / "run"
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_yaml_dict(), sort_keys=False), encoding="utf-8")
    result = invoke("config", "validate", str(path))
    assert result.exit_code == 0 and result.stdout == f"{path}: ok (task listops)\n"


# -- schema ------------------------------------------------------------------------------


def schema_problems(schema: dict[str, Any], value: Any, root: dict[str, Any], at: str = "$"):
    """The structural JSON Schema keywords the config schema uses, checked by hand."""
    if "$ref" in schema:
        return schema_problems(
            root["$defs"][schema["$ref"].removeprefix("#/$defs/")], value, root, at
        )
    problems: list[str] = []
    for key in ("anyOf", "oneOf"):
        if key in schema:
            matched = sum(not schema_problems(sub, value, root, at) for sub in schema[key])
            if matched == 0 or (key == "oneOf" and matched > 1):
                problems.append(f"{at}: {value!r} matches {matched} of {key}")
    if "const" in schema and value != schema["const"]:
        problems.append(f"{at}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{at}: {value!r} is not one of {schema['enum']}")
    if "type" in schema and not JSON_TYPES[schema["type"]](value):
        return [*problems, f"{at}: {value!r} is not of type {schema['type']}"]
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append(f"{at}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        problems += [
            f"{at}.{key}: missing" for key in schema.get("required", ()) if key not in value
        ]
        for key, item in value.items():
            if key in properties:
                problems += schema_problems(properties[key], item, root, f"{at}.{key}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{at}.{key}: not allowed")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems += schema_problems(schema["items"], item, root, f"{at}[{index}]")
    return problems


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "string": lambda value: isinstance(value, str),
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "number": _number,
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    result = invoke("config", "schema")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_schema_lists_every_registered_component_with_its_options(schema):
    manager = get_plugin_manager()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["task"] and schema["additionalProperties"] is False
    choices = schema["properties"]["task"]["anyOf"]
    assert choices[0]["enum"] == manager.names("task")
    assert choices[1]["discriminator"]["propertyName"] == "name"
    assert sorted(choices[1]["discriminator"]["mapping"]) == manager.names("task")
    assert len(choices[1]["oneOf"]) == len(manager.names("task"))
    backbone = schema["$defs"]["ModelConfig"]["properties"]["backbone"]["anyOf"][1]
    assert sorted(backbone["discriminator"]["mapping"]) == manager.names("backbone")
    for kind in ("task", "backbone", "adapter", "objective"):
        for name in manager.names(kind):
            choice = schema["$defs"][f"{kind}-{name}"]
            assert choice["additionalProperties"] is False and choice["required"][0] == "name"
            assert choice["properties"]["name"]["const"] == name
            assert list(choice["properties"])[0] == "name"
            options = manager.get(kind, name).config.model_fields
            assert set(choice["properties"]) == {"name", *options}
    listops = schema["$defs"]["task-listops"]["properties"]
    assert listops["max_depth"]["type"] == "integer" and listops["max_depth"]["default"] == 6


def test_schema_describes_spec_strings_with_the_registered_names(schema):
    manager = get_plugin_manager()
    evaluation = schema["$defs"]["EvalConfig"]["properties"]
    tta_item = evaluation["tta"]["anyOf"][0]["items"]
    assert all(name in tta_item["description"] for name in manager.names("strategy"))
    shift = evaluation["shift"]["anyOf"][0]
    assert all(name in shift["description"] for name in manager.names("shift"))
    pooling = schema["$defs"]["ModelConfig"]["properties"]["pooling"]
    assert pooling["enum"] == manager.names("pooling")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"task": "listops"},
        {"task": "listops", "preset": "paper", "tta": ["fixed:3", "adaptive:5"]},
        {"task": "listops", "shift": "token-deletion:3", "backbone": "transformer"},
        {"task": "listops", "overrides": ["model.adapter=[delta-ssm, norm-affine]"]},
        {"task": "pathfinder", "overrides": ["train.regime=controller"]},
        {"task": "lra-image", "overrides": ["eval.objective=entropy"]},
    ],
)
def test_resolved_configs_match_the_schema(schema, kwargs):
    assert schema_problems(schema, resolved(**kwargs), schema) == []


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (("task", "dpth"), 3, "$.task"),
        (("task", "name"), "nope", "$.task"),
        (("task", "max_depth"), "deep", "$.task"),
        (("model", "backbone", "n_heads"), 2, "$.model.backbone"),
        (("model", "pooling"), "max", "$.model.pooling"),
        (("eval", "tta"), ["bogus:1"], "$.eval.tta"),
        (("eval", "shift"), "rain:2", "$.eval.shift"),
        (("train", "lrr"), 0.1, "$.train.lrr: not allowed"),
    ],
)
def test_bad_configs_do_not_match_the_schema(schema, path, value, problem):
    config = resolved(task="listops")
    *parents, leaf = path
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = value
    problems = schema_problems(schema, config, schema)
    assert any(line.startswith(problem) for line in problems), problems


def test_short_forms_match_the_schema(schema):
    config = {"task": "listops", "model": {"adapter": ["delta-ssm", {"name": "lora", "rank": 2}]}}
    assert schema_problems(schema, config, schema) == []
    assert schema_problems(schema, {"eval": {"tta": "fixed:2"}, "task": "pathx"}, schema) == []
    assert schema_problems(schema, {"model": {}}, schema) == ["$.task: missing"]


def test_schema_can_be_limited_to_some_tasks_and_is_deterministic(tmp_path):
    out = tmp_path / "sub" / "schema.json"
    result = invoke("config", "schema", *LISTOPS, "--output", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote the config schema to {out}\n"
    limited = json.loads(out.read_text(encoding="utf-8"))
    assert limited["properties"]["task"]["anyOf"][0]["const"] == "listops"
    assert [key for key in limited["$defs"] if key.startswith("task-")] == ["task-listops"]
    assert "backbone-mamba" in limited["$defs"]
    assert invoke("config", "schema", *LISTOPS).stdout == out.read_text(encoding="utf-8")
    assert_user_error(invoke("config", "schema", "--task", "nope"), "unknown task 'nope'")


@pytest.mark.parametrize(
    ("relative", "reason"),
    [
        ("afile/schema.json", "'{base}/afile' is not a folder"),
        ("afile/sub/schema.json", "cannot write there: Not a directory"),
        ("x" * 300 + ".json", "cannot write there: File name too long"),
    ],
)
def test_a_schema_destination_that_cannot_be_written_is_one_line(tmp_path, relative, reason):
    (tmp_path / "afile").write_text("")
    out = tmp_path / relative
    result = invoke("config", "schema", *LISTOPS, "--output", str(out))
    assert_user_error(result, f"--output {str(out)!r}: {reason.format(base=tmp_path)}")


def test_options_a_schema_cannot_describe_leave_the_choice_open():
    class OddOptions(BaseModel):
        model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

        hook: Callable[[int], int] | None = None

    class OddPlugin:
        @hookimpl
        def attd_register(self, register: Any) -> None:
            register(TaskSpec(name="odd", summary="odd", factory="nowhere:Odd", config=OddOptions))

    schema = config_schema(new_plugin_manager(odd=OddPlugin()))
    odd = schema["$defs"]["task-odd"]
    assert odd["properties"] == {"name": {"const": "odd", "description": "The task: odd",
                                          "title": "Name", "type": "string"}}  # fmt: skip
    assert odd.get("additionalProperties", True) is not False


# -- no torch ----------------------------------------------------------------------------


def test_config_commands_import_no_torch(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", {"task": "listops"})
    probe = (
        "import sys\n"
        "from attd_cli.app import main\n"
        f"for args in (['config', 'show', '--task', 'listops'], ['config', 'validate', {config!r}],"
        " ['config', 'schema']):\n"
        "    try:\n        main(args)\n    except SystemExit as exit:\n"
        "        assert exit.code == 0, (args, exit.code)\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False"
