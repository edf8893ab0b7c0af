"""What a killed training run needs to go on bit for bit: optimiser, schedule, RNG, position.

A training checkpoint is the ordinary checkpoint (weights + metadata) plus
`optimizer.safetensors` (AdamW's moments and step counts) and `rng.safetensors` (the
torch generator states), with the rest, plain numbers, in the metadata's `training`
entry: the step, the epoch, how many batches of that epoch were done, the losses of the
unfinished logging window, the schedule's counters and Python's and NumPy's RNG states.
Nothing is pickled, so resuming cannot run code from the checkpoint.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attd_core.errors import CheckpointError

OPTIMIZER_FILE = "optimizer"
RNG_FILE = "rng"


@dataclass
class TrainingPosition:
    """Where the loop stood after `step` optimiser steps.

    `epoch` is the epoch in progress (1-based) and `batches` how many of its batches
    were used; `window` holds the losses since the last logged record.
    """

    step: int = 0
    epoch: int = 0
    batches: int = 0
    window: list[float] = field(default_factory=list)


@dataclass
class TrainingState:
    """A resumable snapshot: the position, the optimiser and schedule, every RNG state.

    `epoch_generator` is the data order's generator as it was when the epoch began, so
    that the epoch's batches can be drawn again and the used ones skipped.
    """

    position: TrainingPosition
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    epoch_generator: Tensor
    torch_rng: Tensor
    cuda_rng: list[Tensor]
    python_rng: list[Any]
    numpy_rng: list[Any]
    generators: dict[str, Tensor] = field(default_factory=dict)

    @classmethod
    def capture(
        cls,
        position: TrainingPosition,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        epoch_generator: Tensor,
        generators: Mapping[str, torch.Generator] | None = None,
    ) -> TrainingState:
        """The state now; `generators` are other generators the loss draws from."""
        version, internal, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        return cls(
            position=TrainingPosition(**asdict(position)),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            epoch_generator=epoch_generator.clone(),
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            python_rng=[version, list(internal), gauss],
            numpy_rng=[kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            generators={name: g.get_state() for name, g in (generators or {}).items()},
        )

    def restore_rng(self, generators: Mapping[str, torch.Generator] | None = None) -> None:
        """Put every global generator, and `generators`, back as they were captured."""
        for name, generator in (generators or {}).items():
            if name not in self.generators:
                raise CheckpointError(f"the checkpoint's training state has no generator {name!r}")
            generator.set_state(self.generators[name])
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.cuda_rng)
        version, internal, gauss = self.python_rng
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = self.numpy_rng
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))

    # -- files -----------------------------------------------------------------------------

    def to_files(self) -> tuple[dict[str, Any], dict[str, dict[str, Tensor]]]:
        """JSON-ready metadata and the tensor files (`name -> {key: tensor}`) to save."""
        tensors, groups = _flatten_optimizer(self.optimizer)
        rng = {"epoch_generator": self.epoch_generator, "torch": self.torch_rng}
        rng.update({f"cuda.{i}": state for i, state in enumerate(self.cuda_rng)})
        rng.update({f"generator.{name}": state for name, state in self.generators.items()})
        record = {
            "position": asdict(self.position),
            "optimizer_groups": groups,
            "scheduler": self.scheduler,
            "python_rng": self.python_rng,
            "numpy_rng": self.numpy_rng,
            "cuda_devices": len(self.cuda_rng),
        }
        return record, {OPTIMIZER_FILE: tensors, RNG_FILE: rng}

    @classmethod
    def from_files(
        cls, record: dict[str, Any], tensors: dict[str, dict[str, Tensor]]
    ) -> TrainingState:
        """The inverse of `to_files`; a missing or malformed part is a `CheckpointError`."""
        try:
            rng = tensors[RNG_FILE]
            return cls(
                position=TrainingPosition(**record["position"]),
                optimizer=_unflatten_optimizer(tensors[OPTIMIZER_FILE], record["optimizer_groups"]),
                scheduler=record["scheduler"],
                epoch_generator=rng["epoch_generator"],
                torch_rng=rng["torch"],
                cuda_rng=[rng[f"cuda.{i}"] for i in range(record["cuda_devices"])],
                python_rng=record["python_rng"],
                numpy_rng=record["numpy_rng"],
                generators={
                    key.removeprefix("generator."): value
                    for key, value in rng.items()
                    if key.startswith("generator.")
                },
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"the checkpoint's training state is incomplete or malformed ({exc!r}); "
                "it cannot be resumed"
            ) from None


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """`state.<param index>.<name>` tensors, and the param groups as plain data."""
    tensors = {
        f"state.{index}.{name}": value.detach().cpu().contiguous()
        if isinstance(value, Tensor)
        else torch.tensor(value)
        for index, entries in state["state"].items()
        for name, value in entries.items()
    }
    return tensors, state["param_groups"]


def _unflatten_optimizer(
    tensors: dict[str, Tensor], groups: list[dict[str, Any]]
) -> dict[str, Any]:
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": groups}
