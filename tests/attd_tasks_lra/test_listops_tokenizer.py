"""ListOps tokeniser: LRA's symbol mapping, the 18-entry vocabulary, EOS and truncation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attd_tasks_lra.listops.generator import Node, Tree, tree_length, tree_to_source
from attd_tasks_lra.listops.tokenizer import VOCAB, ListOpsTokenizer, source_to_symbols

TOKENIZER = ListOpsTokenizer()
EXAMPLE = "( ( ( [MAX 2 ) 9 ) ] )"

trees = st.recursive(
    st.integers(0, 9),
    lambda children: st.builds(
        Node,
        st.sampled_from(["MAX", "MIN", "MED", "SM"]),
        st.lists(children, min_size=2, max_size=6).map(tuple),
    ),
    max_leaves=40,
)


def count_operators(tree: Tree) -> int:
    if isinstance(tree, int):
        return 0
    return 1 + sum(count_operators(arg) for arg in tree.args)


def test_vocabulary() -> None:
    assert TOKENIZER.vocab_size == len(VOCAB) == 18
    assert (TOKENIZER.pad_id, TOKENIZER.unk_id, TOKENIZER.eos_id) == (0, 1, 2)
    assert VOCAB[:3] == ("<pad>", "<unk>", "<eos>")
    assert VOCAB[3:13] == tuple("0123456789")
    assert VOCAB[13:] == ("[MAX", "[MIN", "[MED", "[SM", "X")


def test_closing_bracket_becomes_x_and_parentheses_go() -> None:
    assert source_to_symbols(EXAMPLE) == ["[MAX", "2", "9", "X"]
    assert TOKENIZER.encode(EXAMPLE) == [13, 5, 12, 17, 2]
    assert TOKENIZER.encode(EXAMPLE, append_eos=False) == [13, 5, 12, 17]


def test_truncation_keeps_eos() -> None:
    assert TOKENIZER.encode(EXAMPLE, max_length=3) == [13, 5, 2]
    assert TOKENIZER.encode(EXAMPLE, max_length=1) == [2]
    assert TOKENIZER.encode(EXAMPLE, append_eos=False, max_length=3) == [13, 5, 12]
    assert TOKENIZER.encode(EXAMPLE, max_length=100) == TOKENIZER.encode(EXAMPLE)
    with pytest.raises(ValueError, match="max_length"):
        TOKENIZER.encode(EXAMPLE, max_length=0)


@pytest.mark.parametrize(
    ("source", "symbol"),
    [("( ( [FOO 1 ) ] )", "[FOO"), ("[MAX 12 3 ]", "12"), ("<pad> 1", "<pad>"), ("max 1", "max")],
)
def test_unknown_symbol_is_named(source: str, symbol: str) -> None:
    with pytest.raises(ValueError, match="unknown ListOps symbol") as error:
        TOKENIZER.encode(source)
    assert repr(symbol) in str(error.value)


def test_decode() -> None:
    ids = TOKENIZER.encode(EXAMPLE) + [TOKENIZER.pad_id] * 3
    assert TOKENIZER.decode(ids) == "[MAX 2 9 X"
    assert TOKENIZER.encode(TOKENIZER.decode(ids)) == TOKENIZER.encode(EXAMPLE)
    with pytest.raises(ValueError, match="18"):
        TOKENIZER.decode([18])


@given(trees)
@settings(max_examples=200, deadline=None)
def test_symbols_of_any_tree(tree: Tree) -> None:
    source = tree_to_source(tree)
    symbols = source_to_symbols(source)
    assert "(" not in symbols and ")" not in symbols
    assert symbols.count("X") == count_operators(tree) == sum(s.startswith("[") for s in symbols)
    ids = TOKENIZER.encode(source)
    assert len(ids) == tree_length(tree) + 1 and ids[-1] == TOKENIZER.eos_id
    assert TOKENIZER.pad_id not in ids and TOKENIZER.unk_id not in ids
