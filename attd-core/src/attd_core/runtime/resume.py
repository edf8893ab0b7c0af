"""What a killed training run needs to go on bit for bit: optimiser, schedule, RNG, position.

A training checkpoint is the ordinary checkpoint (weights + metadata) plus
`optimizer.safetensors` (AdamW's moments and step counts) and `rng.safetensors` (the
torch generator states), with the rest, plain numbers, in the metadata's `training`
entry: the step, the epoch, how many batches of that epoch were done, the losses of the
unfinished logging window, the schedule's counters and Python's and NumPy's RNG states.
Nothing is pickled, so resuming cannot run code from the checkpoint. A state that is
malformed, or does not fit the run it would go into, is refused whole, before any part
of it is restored.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import Tensor

from attd_core.errors import CheckpointError, describe_validation_error
from attd_core.runtime.checkpoint_metadata import TrainingRecord

OPTIMIZER_FILE = "optimizer"
RNG_FILE = "rng"
_STATE_KEY = re.compile(r"state\.(?P<index>\d+)\.(?P<name>.+)")


@dataclass
class TrainingPosition:
    """Where the loop stood after `step` optimiser steps.

    `epoch` is the epoch in progress (1-based) and `batches` how many of its batches
    were used; `window` holds the losses since the last logged record; `seconds` the
    training seconds so far (validation not counted).
    """

    step: int = 0
    epoch: int = 0
    batches: int = 0
    window: list[float] = field(default_factory=list)
    seconds: float = 0.0


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

    def restore(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        epoch_generator: torch.Generator,
        generators: Mapping[str, torch.Generator] | None = None,
        *,
        total: int,
        epoch_length: int,
    ) -> TrainingPosition:
        """Put the optimiser, the schedule, the data order's generator, `generators` and
        every global generator back as captured; returns the position to go on from.

        Every part is checked first against what it goes into (the position against the
        run's `total` steps and `epoch_length` batches, the optimiser state against the
        model's parameters, both torch states against this torch's keys, each generator
        state by a scratch generator taking it), so a checkpoint that does not fit is a
        `CheckpointError` naming the part, raised before anything has changed.
        """
        generators = dict(generators or {})
        try:
            self._check_position(total, epoch_length)
            _check_optimizer(self.optimizer, optimizer)
            _check_keys("training.scheduler", self.scheduler, scheduler.state_dict())
            self._check_rng(epoch_generator, generators)
        except CheckpointError as exc:
            raise CheckpointError(
                f"the checkpoint's training state does not fit this run: {exc}"
            ) from None
        optimizer.load_state_dict(self.optimizer)
        scheduler.load_state_dict(self.scheduler)
        epoch_generator.set_state(self.epoch_generator)
        for name, generator in generators.items():
            generator.set_state(self.generators[name])
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.cuda_rng)
        random.setstate(self._python_state())
        np.random.set_state(self._numpy_state())
        return self.position

    def _check_position(self, total: int, epoch_length: int) -> None:
        if self.position.step > total:
            raise CheckpointError(
                f"training.position.step: {self.position.step} is past the run's {total} steps"
            )
        if self.position.batches > epoch_length:
            raise CheckpointError(
                f"training.position.batches: {self.position.batches} is past the "
                f"{epoch_length} batches of an epoch"
            )

    def _check_rng(
        self, epoch_generator: torch.Generator, generators: Mapping[str, torch.Generator]
    ) -> None:
        for name in generators:
            if name not in self.generators:
                raise CheckpointError(f"{RNG_FILE}.safetensors: holds no generator.{name}")
        states = {
            "epoch_generator": (self.epoch_generator, epoch_generator.device),
            "torch": (self.torch_rng, torch.device("cpu")),
            **{f"generator.{n}": (self.generators[n], g.device) for n, g in generators.items()},
        }
        if torch.cuda.is_available():
            states.update(
                {f"cuda.{i}": (s, torch.device("cuda", i)) for i, s in enumerate(self.cuda_rng)}
            )
        for name, (state, device) in states.items():
            _try_state(
                f"{RNG_FILE}.safetensors: {name}",
                lambda s=state, d=device: torch.Generator(device=d).set_state(s),
            )
        _try_state("training.python_rng", lambda: random.Random().setstate(self._python_state()))
        _try_state(
            "training.numpy_rng", lambda: np.random.RandomState().set_state(self._numpy_state())
        )

    def _python_state(self) -> tuple[Any, ...]:
        version, internal, gauss = self.python_rng
        return version, tuple(internal), gauss

    def _numpy_state(self) -> tuple[Any, ...]:
        kind, keys, pos, has_gauss, cached = self.numpy_rng
        return kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached

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
        cls, record: Mapping[str, Any], tensors: Mapping[str, Mapping[str, Tensor]]
    ) -> TrainingState:
        """The inverse of `to_files`; a missing or malformed part is a `CheckpointError`
        naming it."""
        try:
            training = TrainingRecord.model_validate(record)
        except ValidationError as exc:
            problems = describe_validation_error(exc, "training")
            raise CheckpointError(
                f"the checkpoint's training state is malformed: {problems}"
            ) from None
        rng = tensors[RNG_FILE]
        cuda = [f"cuda.{i}" for i in range(training.cuda_devices)]
        missing = [key for key in ("epoch_generator", "torch", *cuda) if key not in rng]
        if missing:
            raise CheckpointError(f"{RNG_FILE}.safetensors: holds no {missing[0]!r} state")
        groups = [group.model_dump(exclude_unset=True) for group in training.optimizer_groups]
        return cls(
            position=TrainingPosition(**training.position.model_dump()),
            optimizer=_unflatten_optimizer(tensors[OPTIMIZER_FILE], groups),
            scheduler=training.scheduler.model_dump(exclude_unset=True),
            epoch_generator=rng["epoch_generator"],
            torch_rng=rng["torch"],
            cuda_rng=[rng[key] for key in cuda],
            python_rng=list(training.python_rng),
            numpy_rng=list(training.numpy_rng),
            generators={
                key.removeprefix("generator."): value
                for key, value in rng.items()
                if key.startswith("generator.")
            },
        )


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
    tensors: Mapping[str, Tensor], groups: list[dict[str, Any]]
) -> dict[str, Any]:
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        match = _STATE_KEY.fullmatch(key)
        if match is None:
            raise CheckpointError(
                f"{OPTIMIZER_FILE}.safetensors: key {key!r} is not state.<parameter>.<name>"
            )
        state.setdefault(int(match["index"]), {})[match["name"]] = value
    return {"state": state, "param_groups": groups}


def _check_optimizer(saved: Mapping[str, Any], optimizer: torch.optim.Optimizer) -> None:
    """Refuse saved optimiser state that does not fit `optimizer`: another number of
    groups or of parameters in one, a parameter in two groups, state of a parameter no
    group has or of another shape, group keys this torch does not write."""
    live = optimizer.state_dict()["param_groups"]
    groups = saved["param_groups"]
    if len(groups) != len(live):
        raise CheckpointError(
            f"training.optimizer_groups: {len(groups)} groups, but the model's optimizer "
            f"has {len(live)}"
        )
    shapes: dict[int, torch.Size] = {}
    for i, (group, live_group) in enumerate(zip(groups, optimizer.param_groups, strict=True)):
        where = f"training.optimizer_groups.{i}"
        _check_keys(where, group, live[i])
        if len(group["params"]) != len(live_group["params"]):
            raise CheckpointError(
                f"{where}.params: {len(group['params'])} parameters, but the model's group "
                f"has {len(live_group['params'])}"
            )
        for index, param in zip(group["params"], live_group["params"], strict=True):
            if index in shapes:
                raise CheckpointError(f"{where}.params: parameter {index} is in two groups")
            shapes[index] = param.shape
    for index, entries in saved["state"].items():
        if index not in shapes:
            raise CheckpointError(
                f"{OPTIMIZER_FILE}.safetensors: state.{index} is of no parameter in "
                "training.optimizer_groups"
            )
        for name, value in entries.items():
            if value.shape not in (torch.Size([]), shapes[index]):
                raise CheckpointError(
                    f"{OPTIMIZER_FILE}.safetensors: state.{index}.{name} has shape "
                    f"{tuple(value.shape)}, its parameter {tuple(shapes[index])}"
                )


def _check_keys(where: str, saved: Mapping[str, Any], live: Mapping[str, Any]) -> None:
    """Refuse a key of a torch `state_dict()` that the live object's does not have: torch
    writes such keys into the object, where a stray one replaces an attribute."""
    unknown = [key for key in saved if key not in live]
    if unknown:
        raise CheckpointError(f"{where}.{unknown[0]}: not a key this torch's state has")


def _try_state(part: str, set_state: Callable[[], object]) -> None:
    """`set_state()`, which sets a state on a scratch generator; a refusal is a
    `CheckpointError` naming `part`."""
    try:
        set_state()
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{part}: not a state the generator takes ({exc})") from None
