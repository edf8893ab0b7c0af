"""What the built-in adapters share: options with `per_sample`, deltas read as they are,
and no constraint. An adapter overrides only what makes it different."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import BaseModel
from torch import Tensor

from attd_core.interfaces import AdapterSlot, AdapterState


class SlotAdapter:
    """A base for adapters whose state the backbone reads directly."""

    options_model: ClassVar[type[BaseModel]]

    def __init__(self, options: BaseModel | None = None) -> None:
        self.options = options or self.options_model()

    @property
    def per_sample(self) -> bool:
        return self.options.per_sample

    def deltas(self, state: AdapterState) -> AdapterState:
        """The backbone reads the state as it is."""
        return state

    def project(
        self, state: AdapterState, slots: Mapping[str, AdapterSlot]
    ) -> tuple[AdapterState, dict[str, Tensor]]:
        """Unconstrained: the state is returned as it is, with no counts."""
        return state, {}
