"""Several adapters at once: states combine by dict union, each part keeps its own rules.

Adapters build their states from slot metadata alone, so combining them is a union of
keys; the combination remembers which adapter made each key, so that deltas and
projections go back to their owner and the parameter selector can pick adapters by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from attd_core.errors import ConfigError
from attd_core.interfaces import Adapter, AdapterSlot, AdapterState, Backbone


class CombinedAdapter:
    """The union of named adapters; a single adapter is a combination of one."""

    def __init__(self, parts: Mapping[str, Adapter]) -> None:
        if not parts:
            raise ConfigError("model.adapter: name at least one adapter")
        self.parts = dict(parts)
        self._owners: dict[str, str] = {}

    @property
    def per_sample(self) -> bool:
        """Per-sample only when every part is: one shared tensor couples all samples."""
        return all(part.per_sample for part in self.parts.values())

    def init_state(
        self, backbone: Backbone, batch_size: int | None = None, *, generator: Any = None
    ) -> AdapterState:
        state: AdapterState = {}
        owners: dict[str, str] = {}
        for name, part in self.parts.items():
            for key, value in part.init_state(backbone, batch_size, generator=generator).items():
                if key in owners:
                    raise ConfigError(
                        f"adapters {owners[key]!r} and {name!r} both adapt {key!r}; "
                        "narrow one of them with its targets option"
                    )
                owners[key] = name
                state[key] = value
        self._owners = owners
        return state

    def owners(self, state: AdapterState) -> dict[str, str]:
        """Which adapter made each key of `state` (a state made by `init_state`)."""
        unknown = sorted(set(state) - set(self._owners))
        if unknown:
            raise ValueError(f"adapter state key {unknown[0]!r} was not made by these adapters")
        return {key: self._owners[key] for key in state}

    def _split(self, state: AdapterState) -> dict[str, AdapterState]:
        split: dict[str, AdapterState] = {name: {} for name in self.parts}
        for key, owner in self.owners(state).items():
            split[owner][key] = state[key]
        return split

    def deltas(self, state: AdapterState) -> AdapterState:
        result: AdapterState = {}
        for name, sub_state in self._split(state).items():
            result.update(self.parts[name].deltas(sub_state))
        return result

    def project(
        self, state: AdapterState, slots: Mapping[str, AdapterSlot]
    ) -> tuple[AdapterState, dict[str, Tensor]]:
        projected: AdapterState = {}
        stats: dict[str, Tensor] = {}
        for name, sub_state in self._split(state).items():
            part_state, part_stats = self.parts[name].project(sub_state, slots)
            projected.update(part_state)
            for key, value in part_stats.items():
                stats[key] = stats.get(key, torch.zeros((), dtype=value.dtype)) + value
        return projected, stats

    def num_parameters(self, state: AdapterState) -> int:
        return sum(
            self.parts[name].num_parameters(sub_state)
            for name, sub_state in self._split(state).items()
        )
