"""ListOps generator: labels, lengths and format checked against evaluators written here."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from attd_tasks_lra.listops import generator
from attd_tasks_lra.listops.generator import (
    PRESETS,
    SPLITS,
    ListOpsGeneratorConfig,
    Node,
    evaluate_tree,
    generate_splits,
    iter_examples,
    tree_length,
    tree_to_source,
)

SMALL = ListOpsGeneratorConfig(num_train=600, num_val=200, num_test=200, seed=7)


def variant(**overrides: object) -> ListOpsGeneratorConfig:
    """SMALL with some fields replaced, validated (model_copy would skip validation)."""
    return ListOpsGeneratorConfig.model_validate({**SMALL.model_dump(), **overrides})


def reference_value(source: str) -> int:
    """Evaluate a Source from its symbols alone, with a stack of open operators."""
    stack: list[tuple[str, list[int]]] = [("", [])]
    for symbol in source.replace("(", " ").replace(")", " ").split():
        if symbol.startswith("["):
            stack.append((symbol[1:], []))
        elif symbol == "]":
            op, values = stack.pop()
            values = sorted(values)
            middle = len(values) // 2
            result = {
                "MAX": values[-1],
                "MIN": values[0],
                "MED": values[middle]
                if len(values) % 2
                else (values[middle - 1] + values[middle]) // 2,
                "SM": sum(values) % 10,
            }[op]
            stack[-1][1].append(result)
        else:
            stack[-1][1].append(int(symbol))
    ((_, [value]),) = stack
    return value


def reference_length(source: str) -> int:
    return sum(symbol not in "()" for symbol in source.split())


def is_binary_nested(source: str) -> bool:
    """LRA's to_string writes every pair as ``( left right )``: each group holds two items."""
    groups: list[int] = [0]
    for symbol in source.split():
        if symbol == "(":
            groups.append(0)
        elif symbol == ")":
            if groups.pop() != 2:
                return False
            groups[-1] += 1
        else:
            groups[-1] += 1
    return groups == [1]


trees = st.recursive(
    st.integers(0, 9),
    lambda children: st.builds(
        Node,
        st.sampled_from(["MAX", "MIN", "MED", "SM"]),
        st.lists(children, min_size=2, max_size=6).map(tuple),
    ),
    max_leaves=40,
)


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    return generate_splits(SMALL)


def test_lra_string_format_of_a_hand_written_tree() -> None:
    assert tree_to_source(Node("MAX", (2, 9))) == "( ( ( [MAX 2 ) 9 ) ] )"
    nested = Node("SM", (Node("MIN", (3, 4)), 7))
    inner = "( ( ( [MIN 3 ) 4 ) ] )"
    assert tree_to_source(nested) == f"( ( ( [SM {inner} ) 7 ) ] )"
    assert evaluate_tree(nested) == 0 == reference_value(tree_to_source(nested))
    assert tree_length(nested) == 7


@pytest.mark.parametrize(
    ("args", "median"), [((2, 3), 2), ((0, 9), 4), ((1, 2, 3, 4), 2), ((9, 1, 5), 5)]
)
def test_median_truncates_like_int_of_np_median(args: tuple[int, ...], median: int) -> None:
    assert evaluate_tree(Node("MED", args)) == median


@given(trees)
@settings(max_examples=200, deadline=None)
def test_tree_functions_agree_with_the_reference_on_any_tree(tree: Node | int) -> None:
    source = tree_to_source(tree)
    assert evaluate_tree(tree) == reference_value(source)
    assert tree_length(tree) == reference_length(source)
    assert is_binary_nested(source)


def test_labels_and_lengths_of_every_example(splits: dict[str, list[dict]]) -> None:
    for rows in splits.values():
        for row in rows:
            assert isinstance(row["Target"], int)
            assert row["Target"] == reference_value(row["Source"])
            assert SMALL.min_length < reference_length(row["Source"]) < SMALL.max_length
            assert is_binary_nested(row["Source"])


def test_split_sizes_and_no_duplicates(splits: dict[str, list[dict]]) -> None:
    assert list(splits) == list(SPLITS)
    assert [len(splits[name]) for name in SPLITS] == [600, 200, 200]
    sources = [row["Source"] for rows in splits.values() for row in rows]
    assert len(set(sources)) == len(sources)


def test_operators_occur_about_equally_often(splits: dict[str, list[dict]]) -> None:
    counts = Counter(
        symbol for row in splits["train"] for symbol in row["Source"].split() if "[" in symbol
    )
    assert set(counts) == {"[MAX", "[MIN", "[MED", "[SM"}
    mean = sum(counts.values()) / 4
    assert all(abs(count - mean) < 0.1 * mean for count in counts.values())


def test_all_ten_labels_occur(splits: dict[str, list[dict]]) -> None:
    assert {row["Target"] for row in splits["train"]} == set(range(10))


def test_operator_subset_is_respected() -> None:
    config = variant(operators=("SM",), num_train=50)
    rows = generate_splits(config)["train"]
    assert {s for row in rows for s in row["Source"].split() if "[" in s} == {"[SM"}


def test_determinism_by_seed(splits: dict[str, list[dict]]) -> None:
    assert generate_splits(SMALL) == splits
    other = generate_splits(variant(seed=8))
    assert other["train"] != splits["train"]


def test_iter_examples_streams_the_same_rows(splits: dict[str, list[dict]]) -> None:
    for name in SPLITS:
        assert list(iter_examples(SMALL, name)) == splits[name]
    with pytest.raises(ValueError, match="valid"):
        iter_examples(SMALL, "valid")


def test_evaluation_splits_do_not_depend_on_num_train(splits: dict[str, list[dict]]) -> None:
    fewer = generate_splits(variant(num_train=10))
    assert fewer["test"] == splits["test"]
    assert fewer["validation"] == splits["validation"]


def test_presets() -> None:
    lra = PRESETS["lra"]
    assert (lra.max_depth, lra.max_args, lra.value_p) == (10, 10, 0.25)
    assert (lra.min_length, lra.max_length) == (500, 2000)
    assert (lra.num_train, lra.num_val, lra.num_test) == (96_000, 2_000, 2_000)
    assert lra.operators == ("MIN", "MAX", "MED", "SM")
    assert ListOpsGeneratorConfig() == PRESETS["small"]
    assert ListOpsGeneratorConfig.preset("lra", num_train=5).num_train == 5
    with pytest.raises(ValueError, match="unknown ListOps preset"):
        ListOpsGeneratorConfig.preset("huge")


def test_lra_preset_lengths() -> None:
    config = ListOpsGeneratorConfig.preset("lra", num_train=10, num_val=2, num_test=2)
    for rows in generate_splits(config).values():
        for row in rows:
            assert 500 < reference_length(row["Source"]) < 2000
            assert row["Target"] == reference_value(row["Source"])


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"min_length": 300, "max_length": 300}, "min_length"),
        ({"min_length": 299, "max_length": 300}, "min_length"),
        ({"max_depth": 2, "max_args": 2, "min_length": 4, "max_length": 10}, "min_length"),
        ({"operators": ("MAX", "MAX")}, "operators"),
        ({"operators": ("POW",)}, "operators"),
        ({"operators": ()}, "operators"),
        ({"max_depth": 0}, "max_depth"),
        ({"max_args": 1}, "max_args"),
        ({"value_p": 0.0}, "value_p"),
        ({"value_p": 1.5}, "value_p"),
        ({"num_train": -1}, "num_train"),
        ({"max_lenght": 10}, "max_lenght"),
    ],
)
def test_invalid_configs_name_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        ListOpsGeneratorConfig(**overrides)


def test_exhausted_window_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generator, "_MAX_MISSES", 1000)
    only_leaves = ListOpsGeneratorConfig(min_length=0, max_length=2, num_train=11)
    with pytest.raises(RuntimeError, match="no new tree"):
        generate_splits(only_leaves)
