"""Run-config resolution: merge order, value parsing, errors that name their key, round trip.

Resolution only validates options against spec config models; no factory is imported,
so the fake specs below point at factories that do not exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

import attd_core
from attd_core import BackboneSpec, ConfigError, TaskSpec, UnknownComponentError, hookimpl
from attd_core.runtime.config import ResolvedConfig, nest_dotted, resolve_run_config


class ToyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    depth: int = Field(3, ge=1, le=10)
    mode: Literal["a", "b"] = "a"


class OtherBackboneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: int = Field(16, ge=1)


class ToyPlugin:
    @hookimpl
    def attd_register(self, register: Any) -> None:
        register(
            TaskSpec(
                name="toy",
                summary="a toy task",
                factory="nowhere:Toy",
                config=ToyOptions,
                run_defaults={"train.epochs": 5, "train.lr": 0.01, "task.depth": 4},
                presets={"paper": {"train.epochs": 50, "task.depth": 10, "task.mode": "b"}},
            )
        )
        register(
            BackboneSpec(
                name="other",
                summary="another backbone",
                factory="nowhere:Other",
                config=OtherBackboneOptions,
            )
        )


@pytest.fixture
def manager(attd_pm: attd_core.PluginManager) -> attd_core.PluginManager:
    attd_pm.add_plugin(ToyPlugin(), name="toy")
    return attd_pm


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def resolve(manager: attd_core.PluginManager, **kwargs: Any) -> ResolvedConfig:
    kwargs.setdefault("task", "toy")
    return resolve_run_config(manager, **kwargs)


# -- merging -----------------------------------------------------------------------------


def test_defaults_and_task_run_defaults_fill_every_option(manager):
    resolved = resolve(manager)
    data = resolved.to_yaml_dict()
    assert data["task"] == {"name": "toy", "depth": 4, "mode": "a"}
    assert data["train"]["epochs"] == 5 and data["train"]["lr"] == 0.01
    assert data["model"]["backbone"]["name"] == "mamba"
    assert data["model"]["backbone"]["d_model"] == 64  # MambaOptions default, filled in
    assert data["model"]["adapter"] == {
        "name": "delta-ssm",
        **resolved.adapters[0].options.model_dump(),
    }
    assert data["eval"]["objective"]["name"] == "entropy-kl"
    assert data["eval"]["tta"] == []
    assert [choice.canonical for choice in resolved.tta] == ["none"]


def test_precedence_defaults_task_files_sets_flags(manager, tmp_path):
    first = write_yaml(
        tmp_path / "a.yaml",
        {"train": {"epochs": 6, "lr": 0.2, "batch_size": 7}, "runtime": {"seed": 1}},
    )
    second = write_yaml(tmp_path / "b.yaml", {"train": {"epochs": 7}, "task": {"mode": "b"}})
    resolved = resolve(
        manager,
        config_files=[first, second],
        overrides=["train.epochs=8", "runtime.seed=2", "task.depth=9"],
        seed=3,
    )
    config = resolved.config
    assert config.train.epochs == 8  # --set beats both files
    assert config.train.lr == 0.2  # first file beats the task's run_defaults
    assert config.train.batch_size == 7  # a deep merge keeps keys later layers leave alone
    assert config.task.model_extra == {"depth": 9, "mode": "b"}
    assert config.runtime.seed == 3  # the explicit flag beats --set


def test_a_preset_lies_between_the_run_defaults_and_user_layers(manager):
    config = resolve(manager, preset="paper", overrides=["task.depth=7"]).config
    assert config.train.epochs == 50 and config.train.lr == 0.01
    assert config.task.model_extra == {"depth": 7, "mode": "b"}


def test_an_unknown_preset_lists_the_task_presets(manager):
    with pytest.raises(ConfigError, match="task 'toy' has no preset 'fast' \\(presets: paper\\)"):
        resolve(manager, preset="fast")


def test_a_shift_is_validated_and_canonical(manager):
    resolved = resolve(manager, shift="token-deletion:severity=5")
    assert resolved.config.eval.shift == "token-deletion:5"
    assert resolved.shift is not None and resolved.shift.spec.name == "token-deletion"
    assert resolve(manager).shift is None
    with pytest.raises(UnknownComponentError, match="unknown shift 'blurry'"):
        resolve(manager, shift="blurry:2")
    with pytest.raises(ConfigError, match="severity"):
        resolve(manager, overrides=["eval.shift=token-deletion:9"])


def test_cli_tta_flag_replaces_the_file_list(manager, tmp_path):
    config_file = write_yaml(tmp_path / "c.yaml", {"eval": {"tta": ["fixed:1", "fixed:2"]}})
    assert resolve(manager, config_files=[config_file]).config.eval.tta == ["fixed:1", "fixed:2"]
    assert resolve(manager, config_files=[config_file], tta=["fixed:5"]).config.eval.tta == [
        "fixed:5"
    ]


@pytest.mark.parametrize(
    ("override", "path", "expected"),
    [
        ("train.max_steps=3", ("train", "max_steps"), 3),
        ("model.adapter.per_sample=false", ("model", "adapter", "per_sample"), False),
        ("train.grad_clip=null", ("train", "grad_clip"), None),
        ("train.lr=1e-3", ("train", "lr"), 0.001),
        ("runtime.output_dir=out/x", ("runtime", "output_dir"), "out/x"),
        ("eval.tta=fixed:3", ("eval", "tta"), ["fixed:3"]),
        ("eval.tta=[fixed:3, none]", ("eval", "tta"), ["fixed:3", "none"]),
    ],
)
def test_set_values_are_parsed_as_yaml(manager, override, path, expected):
    value: Any = resolve(manager, overrides=[override]).to_yaml_dict()
    for key in path:
        value = value[key]
    assert value == expected and type(value) is type(expected)


def test_tta_specs_become_canonical_and_unique(manager):
    resolved = resolve(manager, tta=["fixed:3", "fixed:k=3", "none", "fixed:3,lr=0.01"])
    assert resolved.config.eval.tta == ["fixed:3", "none", "fixed:3,lr=0.01"]
    assert [choice.canonical for choice in resolved.tta] == ["none", "fixed:3", "fixed:3,lr=0.01"]


def test_resolved_yaml_round_trips(manager, tmp_path):
    resolved = resolve(
        manager,
        tta=["fixed:k=2,grad_clip=0.5"],
        overrides=["task.mode=b", "model.backbone.d_model=32", "train.max_steps=4"],
    )
    saved = write_yaml(tmp_path / "resolved.yaml", resolved.to_yaml_dict())
    again = resolve_run_config(manager, config_files=[saved])
    assert again.to_yaml_dict() == resolved.to_yaml_dict()
    assert again.config.eval.tta == ["fixed:2,grad_clip=0.5"]


def test_naming_another_component_drops_the_options_given_with_the_old_name(manager, tmp_path):
    named = {"model": {"backbone": {"name": "mamba", "d_model": 32, "d_state": 8}}}
    config_file = write_yaml(tmp_path / "m.yaml", named)
    resolved = resolve(manager, config_files=[config_file], backbone="other")
    assert resolved.to_yaml_dict()["model"]["backbone"] == {"name": "other", "width": 16}
    same = resolve(manager, config_files=[config_file], backbone="mamba")
    assert same.to_yaml_dict()["model"]["backbone"]["d_model"] == 32


def test_options_given_without_a_name_follow_the_chosen_component(manager, tmp_path):
    """`--set model.backbone.d_model=128 --backbone transformer` used to drop the 128."""
    resolved = resolve(manager, overrides=["model.backbone.d_model=128"], backbone="transformer")
    assert resolved.backbone.canonical.startswith("transformer")
    assert resolved.backbone.options.d_model == 128
    unnamed = write_yaml(tmp_path / "m.yaml", {"model": {"backbone": {"d_model": 96}}})
    from_file = resolve(manager, config_files=[unnamed], overrides=["model.backbone=hybrid"])
    assert from_file.backbone.options.d_model == 96


@pytest.mark.parametrize(
    ("kwargs", "source"),
    [
        ({"overrides": ["model.backbone.d_state=8"]}, "--set 'model.backbone.d_state=8'"),
        ({"config_files": ["unnamed.yaml"]}, "config file"),
    ],
)
def test_an_option_the_chosen_component_lacks_is_refused_by_source(
    manager, tmp_path, kwargs, source
):
    if "config_files" in kwargs:
        path = write_yaml(tmp_path / "unnamed.yaml", {"model": {"backbone": {"d_state": 8}}})
        kwargs = {"config_files": [path]}
    with pytest.raises(ConfigError) as caught:
        resolve(manager, backbone="transformer", **kwargs)
    message = str(caught.value)
    assert message.startswith(source)
    assert "sets model.backbone.d_state, which backbone 'transformer' does not take: " in message
    assert "choose a backbone that has it (hybrid, mamba)" in message


class ShapedPlugin:
    """A task whose defaults and preset set the backbone's shape, as the LRA tasks do."""

    @hookimpl
    def attd_register(self, register: Any) -> None:
        register(
            TaskSpec(
                name="shaped",
                summary="a task that sets the backbone's shape",
                factory="nowhere:Shaped",
                run_defaults={"model.backbone.n_layers": 3},
                presets={
                    "wide": {"model.backbone.d_model": 128},
                    "ssm": {"model.backbone.d_state": 32},
                },
            )
        )


@pytest.mark.parametrize("backbone", ["mamba", "transformer", "hybrid"])
def test_a_tasks_backbone_settings_follow_the_chosen_backbone(manager, backbone):
    """`--preset wide --backbone transformer` used to drop the preset's shape silently."""
    manager.add_plugin(ShapedPlugin(), name="shaped")
    for chosen in ([f"model.backbone.name={backbone}"], [f"model.backbone={backbone}"]):
        config = resolve(manager, task="shaped", preset="wide", overrides=chosen).to_yaml_dict()
        shape = config["model"]["backbone"]
        assert (shape["name"], shape["d_model"], shape["n_layers"]) == (backbone, 128, 3)
    mine = resolve(
        manager,
        task="shaped",
        preset="wide",
        overrides=[f"model.backbone.name={backbone}", "model.backbone.d_model=8"],
    )
    assert mine.config.model.backbone.options()["d_model"] == 8  # the user's value wins


def test_a_preset_setting_the_chosen_backbone_lacks_is_refused_by_name(manager):
    manager.add_plugin(ShapedPlugin(), name="shaped")
    assert resolve(manager, task="shaped", preset="ssm").backbone.options.d_state == 32
    with pytest.raises(
        ConfigError,
        match=r"preset 'ssm' of task 'shaped' sets model.backbone.d_state, which backbone "
        r"'transformer' does not take: choose a backbone that has it \(hybrid, mamba\)",
    ):
        resolve(manager, task="shaped", preset="ssm", backbone="transformer")
    with pytest.raises(
        ConfigError,
        match="the run_defaults of task 'shaped' sets model.backbone.n_layers, which backbone "
        "'other' does not take",
    ):
        resolve(manager, task="shaped", backbone="other")


def test_a_component_may_be_given_by_name_alone(manager, tmp_path):
    config_file = write_yaml(tmp_path / "t.yaml", {"task": "toy"})
    resolved = resolve_run_config(
        manager, config_files=[config_file], overrides=["model.backbone=other"]
    )
    assert resolved.task.spec.name == "toy"
    assert resolved.backbone.canonical == "other"


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("task.depth=x", ["task.depth", "'x'", "integer"]),
        ("task.depth=11", ["task.depth", "11", "less than or equal to 10"]),
        ("task.dpth=3", ["task.dpth", "allowed in task: depth, mode"]),
        ("train.lr=-1", ["train.lr", "-1", "greater than 0"]),
        ("train.lrr=1", ["train.lrr", "allowed in train: epochs, max_steps, batch_size, lr"]),
        ("trian.lr=1", ["trian", "allowed in the top level: task, model, train, eval, runtime"]),
        ("runtime.device=tpu", ["runtime.device", "'tpu'", "'auto', 'cpu' or 'cuda'"]),
        ("model.backbone.d_model=0", ["model.backbone.d_model", "0", "greater than or equal"]),
        ("model.pooling=[1]", ["model.pooling", "[1]"]),
        ("train.lr", ["train.lr", "KEY=VALUE"]),
        ("=3", ["'=3'", "KEY=VALUE"]),
        ("train..lr=3", ["train..lr", "KEY=VALUE"]),
        ("train.lr=[1", ["train.lr=[1", "not valid YAML"]),
    ],
)
def test_bad_values_name_key_value_and_what_is_allowed(manager, override, fragments):
    with pytest.raises(ConfigError) as caught:
        resolve(manager, overrides=[override])
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("tta", "fragments"),
    [
        ("fixed:x", ["fixed:x", "k", "integer"]),
        ("fixed:-1", ["fixed:-1", "k", "greater than or equal to 0"]),
        ("fixed:3,foo=1", ["fixed:3,foo=1", "'foo'", "options: k, lr, optimizer, momentum"]),
    ],
)
def test_bad_tta_specs_name_the_bad_part(manager, tta, fragments):
    with pytest.raises(ConfigError) as caught:
        resolve(manager, tta=[tta])
    for fragment in fragments:
        assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "nope"}, "unknown task 'nope'; available: toy"),
        (
            {"backbone": "nope"},
            "unknown backbone 'nope'; available: hybrid, mamba, other, transformer",
        ),
        ({"tta": ["bogus:1"]}, "unknown strategy 'bogus'; available: adaptive, fixed, gate, none"),
        (
            {"overrides": ["model.adapter=nope"]},
            "unknown adapter 'nope'; available: delta-ssm, lora, norm-affine, state-offset",
        ),
    ],
)
def test_unknown_components_list_what_is_available(manager, kwargs, message):
    with pytest.raises(UnknownComponentError, match=message):
        resolve(manager, **kwargs)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train=5", "--set 'train=5': train is a section and takes a mapping of settings "
         "(train.NAME=VALUE), not 5"),
        ("task=5", "--set 'task=5': task takes the task's name or a mapping of its name and "
         "options, not 5"),
        ("eval=[1]", "--set 'eval=[1]': eval is a section"),
        ("runtime=null", "--set 'runtime=null': runtime is a section"),
        ("model.backbone=3",
         "--set 'model.backbone=3': model.backbone takes the backbone's name"),
        ("eval.objective=true",
         "--set 'eval.objective=true': eval.objective takes the objective's name"),
    ],
)  # fmt: skip
def test_a_scalar_where_a_section_belongs_is_refused(manager, override, message):
    """`--set train=5 --set train.epochs=2` used to reset the task's lr 0.01 to 0.001."""
    with pytest.raises(ConfigError) as caught:
        resolve(manager, overrides=[override, "train.epochs=2"])
    assert str(caught.value).startswith(message)


def test_a_scalar_section_in_a_config_file_is_refused_naming_the_file(manager, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: 5\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        resolve(manager, config_files=[path], overrides=["train.epochs=2"])
    assert str(caught.value) == (
        f"config file {str(path)!r}: train is a section and takes a mapping of settings "
        "(train.NAME=VALUE), not 5"
    )
    assert resolve(manager, overrides=["train.epochs=2"]).config.train.lr == 0.01


@pytest.mark.parametrize(
    "override",
    ["train.lr=.inf", "train.lr=.nan", "train.lambda_cost=.inf", "model.backbone.dt_max=.inf"],
)
def test_non_finite_floats_are_refused_naming_the_key(manager, override):
    key = override.partition("=")[0]
    with pytest.raises(ConfigError) as caught:
        resolve(manager, overrides=[override])
    assert key in str(caught.value) and "finite number" in str(caught.value)


def test_a_non_finite_float_in_a_tta_spec_is_refused(manager):
    with pytest.raises(ConfigError, match="lr: Input should be a finite number"):
        resolve(manager, tta=["fixed:2,lr=inf"])


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"tta": ["fixed:1000000000"]}, ["fixed:1000000000", "k", "less than or equal to 1000"]),
        ({"tta": ["adaptive:5000"]}, ["k_max", "less than or equal to 1000"]),
        ({"tta": ["oracle:2000"]}, ["k_max", "less than or equal to 1000"]),
        ({"overrides": ["model.backbone.d_model=1000000"]}, ["d_model", "16384"]),
        ({"overrides": ["model.backbone.n_layers=1000"]}, ["n_layers", "256"]),
        ({"overrides": ["model.backbone.d_state=100000"]}, ["d_state", "4096"]),
        ({"overrides": ["model.backbone.expand=1000"]}, ["expand", "64"]),
        ({"overrides": ["model.backbone.d_conv=1000"]}, ["d_conv", "256"]),
        ({"overrides": ["model.backbone=transformer", "model.backbone.n_heads=4096"]},
         ["n_heads", "1024"]),
        ({"overrides": ["model.adapter.rank=100000"]}, ["rank", "4096"]),
        ({"overrides": ["train.batch_size=1000000"]}, ["train.batch_size", "65536"]),
        ({"overrides": ["train.epochs=1000000"]}, ["train.epochs", "100000"]),
        ({"overrides": ["train.max_steps=1000000000"]}, ["train.max_steps", "100000000"]),
        ({"overrides": ["train.controller_steps=1000000000"]}, ["controller_steps", "100000000"]),
        ({"overrides": ["eval.limit=10000000000"]}, ["eval.limit", "1000000000"]),
        ({"overrides": ["runtime.threads=100000"]}, ["runtime.threads", "4096"]),
    ],
)  # fmt: skip
def test_every_count_has_an_upper_bound_that_the_message_states(manager, kwargs, fragments):
    with pytest.raises(ConfigError) as caught:
        resolve(manager, **kwargs)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_no_task_says_how_to_pass_one(manager):
    with pytest.raises(ConfigError, match=r"no task: pass --task NAME \(available: toy\)"):
        resolve_run_config(manager)


def test_a_task_name_must_be_a_string(manager, tmp_path):
    config_file = write_yaml(tmp_path / "t.yaml", {"task": {"name": 3}})
    with pytest.raises(ConfigError, match="task.name"):
        resolve_run_config(manager, config_files=[config_file])


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "not found"),
        ("- a\n- b\n", "expected a mapping of sections"),
        ("train: {lr: [1\n", "invalid YAML: line"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_bad_config_files_are_named(manager, tmp_path, content, fragment):
    path = tmp_path / "bad.yaml"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        resolve(manager, config_files=[path])
    assert str(path) in str(caught.value) and fragment in str(caught.value)


def test_a_folder_is_not_a_config_file(manager, tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        resolve(manager, config_files=[tmp_path])


def test_an_empty_file_is_an_empty_layer(manager, tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert resolve(manager, config_files=[empty]).to_yaml_dict() == resolve(manager).to_yaml_dict()


def test_config_module_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, attd_core.runtime.config; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_flatten_dotted_is_the_inverse_of_nest_dotted():
    nested = {"train": {"lr": 0.1, "eval_every": None}, "model": {"adapter": {}}, "task": "x"}
    flat = attd_core.flatten_dotted(nested)
    assert flat == {"train.lr": 0.1, "train.eval_every": None, "model.adapter": {}, "task": "x"}
    assert nest_dotted(flat) == nested
