"""The plugin manager: discovery, isolation of broken plugins, filters, lazy factories."""

from __future__ import annotations

import sys
import textwrap
import types
from importlib import metadata

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from attd_core import (
    NoOptions,
    PluginError,
    PluginManager,
    StrategySpec,
    TaskSpec,
    UnknownComponentError,
    get_plugin_manager,
    hookimpl,
    parse_component,
)


def make_plugin(*specs, fail: Exception | None = None) -> types.SimpleNamespace:
    """A plugin object whose attd_register registers `specs` (or raises `fail`)."""

    @hookimpl
    def attd_register(register):
        if fail is not None:
            raise fail
        for spec in specs:
            register(spec)

    return types.SimpleNamespace(attd_register=attd_register)


def task_spec(name: str, factory: str = "collections:OrderedDict") -> TaskSpec:
    return TaskSpec(name=name, summary=f"the {name} task", factory=factory)


def test_builtins_register_through_the_entry_point():
    manager = get_plugin_manager()
    assert "mamba" in manager.names("backbone")
    assert {"none", "fixed"} <= set(manager.names("strategy"))
    core = manager.plugins["core"]
    assert (core.distribution, core.status) == ("attd-core", "ok")


def test_lookup_and_unknown_name_lists_what_exists(fresh_plugin_manager):
    fresh_plugin_manager.add_plugin(make_plugin(task_spec("alpha"), task_spec("beta")), name="p")
    assert fresh_plugin_manager.get("task", "alpha").summary == "the alpha task"
    with pytest.raises(
        UnknownComponentError, match=r"unknown task 'gamma'; available: alpha, beta"
    ):
        fresh_plugin_manager.get("task", "gamma")
    with pytest.raises(PluginError, match="unknown plugin kind 'tasks'"):
        fresh_plugin_manager.names("tasks")


def test_a_failing_plugin_is_skipped_with_one_line_and_listed_broken(fresh_plugin_manager, capsys):
    fresh_plugin_manager.add_plugin(make_plugin(fail=RuntimeError("boom")), name="bad")
    fresh_plugin_manager.add_plugin(make_plugin(task_spec("alpha")), name="good")
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "skipping plugin 'bad'" in err and "RuntimeError: boom" in err
    assert fresh_plugin_manager.names("task") == ["alpha"]
    broken = [row for row in fresh_plugin_manager.rows() if row.status.startswith("broken")]
    assert [(row.name, row.kind) for row in broken] == [("bad", "plugin")]
    assert "boom" in broken[0].status


def test_a_plugin_registers_all_or_nothing(fresh_plugin_manager):
    plugin = types.SimpleNamespace()

    @hookimpl
    def attd_register(register):
        register(task_spec("alpha"))
        register("not a spec")

    plugin.attd_register = attd_register
    info = fresh_plugin_manager.add_plugin(plugin, name="half")
    assert info.status == "broken" and "takes a PluginSpec, got str" in info.reason
    assert fresh_plugin_manager.names("task") == []


def test_misspelled_hook_is_caught_by_check_pending(fresh_plugin_manager, capsys):
    @hookimpl
    def attd_registr(register):  # typo on purpose
        pass

    info = fresh_plugin_manager.add_plugin(
        types.SimpleNamespace(attd_registr=attd_registr), name="typo"
    )
    assert info.status == "broken" and "attd_registr" in info.reason
    assert "typo" in capsys.readouterr().err


def test_duplicate_names_are_rejected_naming_both_plugins(fresh_plugin_manager, capsys):
    fresh_plugin_manager.add_plugin(
        make_plugin(task_spec("alpha")), name="first", distribution="d1"
    )
    fresh_plugin_manager.add_plugin(
        make_plugin(task_spec("alpha", "json:loads"), task_spec("beta")),
        name="second",
        distribution="d2",
    )
    err = capsys.readouterr().err
    assert "duplicate task name 'alpha'" in err and "'second' (d2)" in err and "'first' (d1)" in err
    assert fresh_plugin_manager.get("task", "alpha").factory == "collections:OrderedDict"
    assert fresh_plugin_manager.names("task") == ["alpha", "beta"]
    rejected = [row for row in fresh_plugin_manager.rows() if row.status.startswith("rejected")]
    assert [(row.distribution, row.name) for row in rejected] == [("d2", "alpha")]


def test_strict_mode_turns_problems_into_errors():
    manager = PluginManager(autoload=False, environ={"ATTD_STRICT_PLUGINS": "1"})
    with pytest.raises(PluginError, match="skipping plugin 'bad'.*ATTD_STRICT_PLUGINS=1"):
        manager.add_plugin(make_plugin(fail=ValueError("nope")), name="bad")


def entry_point(name: str, value: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name=name, value=value, group="attd")


def test_entry_point_import_failure_is_isolated(fresh_plugin_manager, capsys):
    fresh_plugin_manager.load_entry_points([entry_point("ghost", "attd_no_such_module_xyz")])
    info = fresh_plugin_manager.plugins["ghost"]
    assert info.status == "broken" and "ModuleNotFoundError" in info.reason
    assert "skipping plugin 'ghost'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("environ", "loaded"),
    [
        ({}, {"one", "two"}),
        ({"ATTD_LOAD_PLUGINS": "two"}, {"two"}),
        ({"ATTD_DISABLE_PLUGINS": "one, TWO"}, set()),
        ({"ATTD_LOAD_PLUGINS": "one,two", "ATTD_DISABLE_PLUGINS": "two"}, {"one"}),
    ],
)
def test_load_and_disable_filters_act_before_import(environ, loaded):
    manager = PluginManager(autoload=False, environ=environ)
    manager.load_entry_points(
        [entry_point("one", "attd_missing_one"), entry_point("two", "attd_missing_two")]
    )
    # A module that was imported would show up (broken, since it does not exist).
    assert set(manager.plugins) == loaded


def test_factories_are_imported_only_when_used(fresh_plugin_manager, tmp_path, monkeypatch):
    (tmp_path / "attd_lazy_probe.py").write_text(
        textwrap.dedent(
            """
            class Thing:
                def __init__(self, options):
                    self.options = options
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh_plugin_manager.add_plugin(
        make_plugin(task_spec("lazy", "attd_lazy_probe:Thing")), name="p"
    )
    assert "attd_lazy_probe" not in sys.modules
    thing = fresh_plugin_manager.create("task", "lazy")
    assert "attd_lazy_probe" in sys.modules
    assert isinstance(thing.options, NoOptions)
    monkeypatch.delitem(sys.modules, "attd_lazy_probe")


def test_a_broken_factory_names_the_component(fresh_plugin_manager):
    fresh_plugin_manager.add_plugin(make_plugin(task_spec("gone", "attd_nowhere:Task")), name="p")
    with pytest.raises(PluginError, match=r"task 'gone': cannot load factory 'attd_nowhere:Task'"):
        fresh_plugin_manager.create("task", "gone")


class Pair:
    """A component built from another one: it declares the manager it needs."""

    def __init__(self, options, *, manager):
        self.manager = manager
        self.inner = manager.create("task", "inner")


def test_a_factory_that_declares_manager_gets_the_manager_that_creates_it(fresh_plugin_manager):
    specs = task_spec("inner"), task_spec("pair", f"{__name__}:Pair")
    fresh_plugin_manager.add_plugin(make_plugin(*specs), name="p")
    pair = fresh_plugin_manager.create("task", "pair")
    assert pair.manager is fresh_plugin_manager and isinstance(pair.inner, dict)
    choice = parse_component("pair", "task", fresh_plugin_manager)
    assert choice.create().manager is fresh_plugin_manager
    with pytest.raises(PluginError, match="task 'pair' builds other components: create it"):
        fresh_plugin_manager.get("task", "pair").create()
    assert isinstance(fresh_plugin_manager.get("task", "inner").create(), dict)


class LooseOptions(BaseModel):
    size: int = 1


class StrictOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = 1


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"factory": "no_colon"}, "factory"),
        ({"config": LooseOptions}, "extra='forbid'"),
        ({"summary": ""}, "summary"),
    ],
)
def test_specs_are_validated(fields, problem):
    base = {"name": "ok", "summary": "fine", "factory": "m:f", "config": StrictOptions}
    with pytest.raises(ValidationError, match=problem):
        StrategySpec(**{**base, **fields})
