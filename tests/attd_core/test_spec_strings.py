"""Spec strings `NAME[:ARGS]`: parsing, validation errors that name the bad part, canonical form."""

from __future__ import annotations

import pytest

from attd_core import ConfigError, UnknownComponentError, get_plugin_manager, parse_component


@pytest.fixture(scope="module")
def manager():
    return get_plugin_manager()


@pytest.mark.parametrize(
    ("text", "canonical", "k"),
    [
        ("fixed:3", "fixed:3", 3),
        (" fixed:k=3 ", "fixed:3", 3),
        ("fixed:0", "fixed:0", 0),
        ("fixed:3,lr=0.01", "fixed:3,lr=0.01", 3),
        ("fixed:3,lr=0.001", "fixed:3", 3),
        ("fixed:lr=0.5,k=2", "fixed:2,lr=0.5", 2),
    ],
)
def test_fixed_specs_parse_to_a_canonical_text(manager, text, canonical, k):
    choice = parse_component(text, "strategy", manager)
    assert choice.canonical == canonical
    assert choice.options.k == k
    assert parse_component(choice.canonical, "strategy", manager).options == choice.options


def test_none_takes_no_options(manager):
    assert parse_component("none", "strategy", manager).canonical == "none"
    with pytest.raises(ConfigError, match=r"too many positional values \('1'\)"):
        parse_component("none:1", "strategy", manager)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fixed:x", r"bad strategy spec 'fixed:x': k: .*integer.*\(got 'x'\)"),
        ("fixed:-1", r"k: .*greater than or equal to 0 \(got '-1'\)"),
        ("fixed:3,foo=1", r"unknown option 'foo' for 'fixed'; options: k, lr, optimizer, momentum"),
        ("fixed", r"k: Field required"),
        ("fixed:k=1,2", r"positional value '2' after key=value"),
        ("fixed:3,k=4", r"option 'k' given twice"),
        ("fixed:3,lr=-1", r"lr: .*greater than 0"),
    ],
)
def test_bad_specs_name_the_bad_part(manager, text, message):
    with pytest.raises(ConfigError, match=message):
        parse_component(text, "strategy", manager)


def test_unknown_strategy_lists_the_available_ones(manager):
    with pytest.raises(
        UnknownComponentError, match=r"unknown strategy 'adaptve'; available: .*fixed.*none"
    ):
        parse_component("adaptve:5", "strategy", manager)


def test_none_switches_off_an_optional_option_and_round_trips(manager):
    choice = parse_component("fixed:3,grad_clip=none,trust_region=0.5", "strategy", manager)
    assert choice.options.grad_clip is None and choice.options.trust_region == 0.5
    assert choice.canonical == "fixed:3,grad_clip=none,trust_region=0.5"
    assert parse_component(choice.canonical, "strategy", manager).options == choice.options
    with pytest.raises(ConfigError, match="lr"):
        parse_component("fixed:3,lr=none", "strategy", manager)  # lr is not optional


@pytest.mark.parametrize(
    "text",
    [
        "adaptive:8,controller=quantile,target_k=2.0,optimizer=adam,momentum=0.5,grad_clip=0.5,"
        "trust_region=1.0,damping=0.5,learned_damping=true,rollback=true,nonfinite_guard=false,"
        "entropy_filter=0.4,adapt=delta-ssm+layers.0.*,tau=0.2",
        "gate:4,target_k=1.0",
        "oracle:3,lr=0.01",
        "fixed:2,reset=continual,collapse_entropy=0.2",
    ],
)
def test_every_strategy_option_is_a_key_value_in_the_spec_string(manager, text):
    choice = parse_component(text, "strategy", manager)
    assert parse_component(choice.canonical, "strategy", manager).options == choice.options
