"""ListOps data generator: a pure-Python port of LRA's ``lra_benchmarks/data/listops.py``.

The official archive cannot be downloaded everywhere, so the data are regenerated. Random
draws happen in LRA's order (r, then the digit, or the arity, the arguments and last the
operator), so a ``random.Random`` stream yields the trees LRA's code draws from the same state.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any, Literal, NamedTuple, TypedDict

from pydantic import BaseModel, ConfigDict, Field, model_validator

Operator = Literal["MAX", "MIN", "MED", "SM"]
SPLITS = ("train", "validation", "test")
_DIGITS = range(10)

# Consecutive rejected or duplicate draws after which a window is deemed (nearly) exhausted.
_MAX_MISSES = 1_000_000
MAX_EXAMPLES = 10_000_000
"""Examples per generated split: 100x LRA's 96,000 train examples."""
MAX_LENGTH = 1_000_000
"""Symbols per expression: 500x LRA's 2,000."""


class Node(NamedTuple):
    """An operator applied to its arguments; a leaf is a plain ``int`` digit 0..9."""

    op: Operator
    args: tuple[Tree, ...]


Tree = int | Node


class Example(TypedDict):
    """One row, with the column names of LRA's TSV files and the hub copy."""

    Source: str
    Target: int


class ListOpsGeneratorConfig(BaseModel):
    """Every knob of the generator; the defaults are the CPU-scale ``small`` preset."""

    # Built on first use, not at import: listing plugins imports every options model.
    # Floats must be finite; counts have upper bounds, stated in the error.
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True, allow_inf_nan=False)

    max_depth: int = Field(
        6,
        ge=1,
        le=100,
        description="Depth of the deepest nodes, which are leaves; root = 1 (LRA 10).",
    )
    max_args: int = Field(
        10,
        ge=2,
        le=100,
        description="Most arguments of an operator; the arity is uniform on 2..max_args.",
    )
    value_p: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
        description="LRA's VALUE_P: a node shallower than max_depth is an operator when "
        "r ~ U(0,1) <= value_p, else a leaf digit (so leaves have probability 1 - value_p).",
    )
    min_length: int = Field(
        50, ge=0, description="Exclusive lower bound on the length (symbols, no parentheses)."
    )
    max_length: int = Field(
        300, ge=2, le=MAX_LENGTH, description="Exclusive upper bound on the length."
    )
    operators: tuple[Operator, ...] = Field(
        ("MIN", "MAX", "MED", "SM"),
        min_length=1,
        description="Operators, drawn uniformly; LRA's order, which fixes the random stream.",
    )
    num_train: int = Field(8000, ge=1, le=MAX_EXAMPLES, description="Examples in the train split.")
    num_val: int = Field(
        1000, ge=1, le=MAX_EXAMPLES, description="Examples in the validation split."
    )
    num_test: int = Field(1000, ge=1, le=MAX_EXAMPLES, description="Examples in the test split.")
    seed: int = Field(0, description="Seed of the one random stream all splits are drawn from.")

    @model_validator(mode="after")
    def _check_consistency(self) -> ListOpsGeneratorConfig:
        if len(set(self.operators)) != len(self.operators):
            raise ValueError(f"operators must not repeat an operator, got {self.operators}")
        if self.min_length >= self.max_length - 1:
            raise ValueError(
                f"min_length ({self.min_length}) must be below max_length - 1 "
                f"({self.max_length - 1}) so that some length lies strictly between them"
            )
        longest = 1
        for _ in range(self.max_depth - 1):
            longest = 2 + self.max_args * longest
        if self.min_length >= longest:
            raise ValueError(
                f"min_length ({self.min_length}) must be below {longest}, the longest tree that "
                f"max_depth={self.max_depth} and max_args={self.max_args} allow"
            )
        return self

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ListOpsGeneratorConfig:
        """A named preset with some fields replaced, validated like any config."""
        if name not in PRESETS:
            raise ValueError(f"unknown ListOps preset {name!r}; known: {sorted(PRESETS)}")
        return cls.model_validate({**PRESETS[name].model_dump(), **overrides})


PRESETS: dict[str, ListOpsGeneratorConfig] = {
    # Exactly LRA's `basic` task: 100,000 unique trees of length 500 < len < 2000.
    "lra": ListOpsGeneratorConfig(
        max_depth=10,
        max_args=10,
        min_length=500,
        max_length=2000,
        num_train=96_000,
        num_val=2_000,
        num_test=2_000,
    ),
    # LRA with shallower trees and a 50 < len < 300 window: about 1 in 8 draws is kept.
    "small": ListOpsGeneratorConfig(),
}


def _sampler(
    rng: random.Random, config: ListOpsGeneratorConfig
) -> Callable[[int], tuple[Tree, int]]:
    """A function drawing a subtree at a depth, and its length, in LRA's order of draws.

    ``choice`` over ranges consumes the stream exactly as LRA's ``choice(range(10))`` and
    ``randint(2, max_args)`` do, at a fraction of ``randrange``'s overhead.
    """
    uniform, choice = rng.random, rng.choice
    max_depth, value_p, operators = config.max_depth, config.value_p, config.operators
    arities = range(2, config.max_args + 1)

    def grow(depth: int) -> tuple[Tree, int]:
        if depth < max_depth and uniform() <= value_p:
            length = 2
            args = []
            for _ in range(choice(arities)):
                arg, arg_length = grow(depth + 1)
                args.append(arg)
                length += arg_length
            return Node(choice(operators), tuple(args)), length
        return choice(_DIGITS), 1

    return grow


def generate_tree(rng: random.Random, config: ListOpsGeneratorConfig) -> Tree:
    """Draw one tree from the root (depth 1), before any length filter."""
    return _sampler(rng, config)(1)[0]


def tree_length(tree: Tree) -> int:
    """LRA's length: 1 per leaf, 2 per operator (its name and closing bracket)."""
    if isinstance(tree, int):
        return 1
    return 2 + sum(tree_length(arg) for arg in tree.args)


def tree_to_source(tree: Tree) -> str:
    """LRA's string: each argument and the closing bracket open one more parenthesis pair.

    ``[MAX 2 9]`` becomes ``( ( ( [MAX 2 ) 9 ) ] )``.
    """
    if isinstance(tree, int):
        return str(tree)
    args = " ) ".join(tree_to_source(arg) for arg in tree.args)
    return "( " * (len(tree.args) + 1) + f"[{tree.op} {args} ) ] )"


# MED follows LRA's int(np.median(...)): an even count averages the two middle values and
# int() truncates the .5 away.
_APPLY: dict[str, Callable[[list[int]], int]] = {
    "MAX": max,
    "MIN": min,
    "MED": lambda values: int(statistics.median(values)),
    "SM": lambda values: sum(values) % 10,
}


def evaluate_tree(tree: Tree) -> int:
    """The label: the tree's value, a digit 0..9."""
    if isinstance(tree, int):
        return tree
    return _APPLY[tree.op]([evaluate_tree(arg) for arg in tree.args])


def _unique_examples(config: ListOpsGeneratorConfig) -> Iterator[Example]:
    """Yield in-window examples, each source once, from the single seeded stream."""
    grow = _sampler(random.Random(config.seed), config)
    seen: set[str] = set()
    misses = 0
    while True:
        tree, length = grow(1)
        if config.min_length < length < config.max_length:
            source = tree_to_source(tree)
            if source not in seen:
                seen.add(source)
                misses = 0
                yield Example(Source=source, Target=evaluate_tree(tree))
                continue
        misses += 1
        if misses > _MAX_MISSES:
            raise RuntimeError(
                f"no new tree in {_MAX_MISSES} draws after {len(seen)} examples: the window "
                f"{config.min_length} < len < {config.max_length} is too rare or too small "
                "for the requested split sizes"
            )


def _split_bounds(config: ListOpsGeneratorConfig) -> dict[str, tuple[int, int]]:
    """Where each split lies in the stream; test and validation come first so that they
    stay the same when only num_train changes."""
    val_end = config.num_test + config.num_val
    return {
        "test": (0, config.num_test),
        "validation": (config.num_test, val_end),
        "train": (val_end, val_end + config.num_train),
    }


def iter_examples(config: ListOpsGeneratorConfig, split: str) -> Iterator[Example]:
    """Stream one split's ``{"Source": str, "Target": int}`` rows, the same as generate_splits."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    start, stop = _split_bounds(config)[split]
    return islice(_unique_examples(config), start, stop)


def generate_splits(config: ListOpsGeneratorConfig) -> dict[str, list[Example]]:
    """All three splits, disjoint by construction; rows are ``{"Source": str, "Target": int}``."""
    bounds = _split_bounds(config)
    rows = list(islice(_unique_examples(config), max(stop for _, stop in bounds.values())))
    return {split: rows[slice(*bounds[split])] for split in SPLITS}
