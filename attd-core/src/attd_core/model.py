"""The model the runtime assembles from plugins: embedding, backbone, pooling, task head.

Tasks compose these pieces in their `forward`; `BoundModel` ties a model to its task
and adapter so that TTA strategies see one callable and never the task's internals.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from attd_core.adapters.combined import CombinedAdapter
from attd_core.errors import ConfigError, UnknownComponentError
from attd_core.interfaces import (
    Adapter,
    AdapterState,
    Backbone,
    Batch,
    InputSpec,
    ModelOutput,
    Pooling,
    Task,
)
from attd_core.plugins import PluginManager
from attd_core.pooling import BUILT_IN, DEFAULT


def resolve_pooling(
    pooling: str | Pooling, manager: PluginManager | None = None
) -> tuple[str, Pooling]:
    """`(name, pooling callable)` for a registered name or a callable given directly.

    A name is looked up in `manager` (its `pooling` plugins); without one, only
    attd-core's own poolings resolve (a plugin's pooling needs the manager that has it).
    """
    if not isinstance(pooling, str):
        if not callable(pooling):
            raise ConfigError(
                f"a pooling is a name or a callable (features, mask) -> (B, D); "
                f"got {type(pooling).__name__}"
            )
        name = getattr(pooling, "__name__", None) or type(pooling).__name__
        return name, pooling
    if manager is None:
        if pooling not in BUILT_IN:
            raise ConfigError(
                f"pooling {pooling!r} is not one of attd-core's ({', '.join(BUILT_IN)}): "
                "pass the plugin manager that registers it"
            )
        return pooling, BUILT_IN[pooling]
    try:
        return pooling, manager.create("pooling", pooling)
    except UnknownComponentError as exc:
        raise ConfigError(str(exc)) from None


class AttdModel(nn.Module):
    """Input embedding + backbone + pooling + the task's head.

    `pooling` is a registered pooling's name (resolved through `manager`, see
    `resolve_pooling`) or a `Pooling` callable; one that is an `nn.Module` is a submodule,
    so its parameters train and are saved with the model.
    """

    def __init__(
        self,
        backbone: Backbone,
        input_spec: InputSpec,
        head: nn.Module,
        pooling: str | Pooling = DEFAULT,
        *,
        manager: PluginManager | None = None,
    ) -> None:
        super().__init__()
        pooling_name, pool = resolve_pooling(pooling, manager)
        d_model = backbone.d_model
        if input_spec.vocab_size is not None:
            self.embed: nn.Module = nn.Embedding(
                input_spec.vocab_size, d_model, padding_idx=input_spec.pad_id
            )
        elif input_spec.channels is not None:
            self.embed = nn.Linear(input_spec.channels, d_model)
        else:
            raise ConfigError("a task's input_spec needs vocab_size or channels")
        self.backbone = backbone
        self.head = head
        self.pooling_name = pooling_name
        self.pooling = pool

    def encode(
        self, inputs: Tensor, mask: Tensor | None = None, adapter_state: AdapterState | None = None
    ) -> Tensor:
        """Embed the inputs and run the backbone: `(B, L, D)` features."""
        return self.backbone(self.embed(inputs), mask=mask, adapter_state=adapter_state)

    def pool(self, features: Tensor, mask: Tensor | None) -> Tensor:
        """`(B, L, D)` features to `(B, D)` with the model's pooling (what heads read)."""
        return self.pooling(features, mask)


class BoundModel:
    """A model bound to its task and adapters: what a `TTAStrategy` adapts.

    `adapters` maps names to adapters (several combine by dict union of their states).
    The generator makes fresh adapter states reproducible: `reset_generator()` before an
    evaluation pass gives every pass the same initial states.
    """

    def __init__(
        self, task: Task, model: AttdModel, adapters: Mapping[str, Adapter], seed: int = 0
    ) -> None:
        self.task, self.model, self.seed = task, model, seed
        self.adapter = CombinedAdapter(adapters)
        self.generator = torch.Generator().manual_seed(seed)

    def reset_generator(self) -> None:
        self.generator.manual_seed(self.seed)

    def __call__(self, batch: Batch, adapter_state: AdapterState | None = None) -> ModelOutput:
        deltas = None if adapter_state is None else self.adapter.deltas(adapter_state)
        return self.task.forward(self.model, batch, deltas)

    @property
    def per_sample(self) -> bool:
        return self.adapter.per_sample

    @property
    def input_spec(self) -> InputSpec:
        return self.task.input_spec

    def init_adapter_state(self, batch_size: int) -> AdapterState:
        return self.adapter.init_state(self.model.backbone, batch_size, generator=self.generator)

    def project_adapter_state(
        self, state: AdapterState
    ) -> tuple[AdapterState, Mapping[str, Tensor]]:
        return self.adapter.project(state, self.model.backbone.adapter_slots())

    def adapter_owners(self, state: AdapterState) -> Mapping[str, str]:
        return self.adapter.owners(state)

    def num_adapter_parameters(self, state: AdapterState) -> int:
        return self.adapter.num_parameters(state)

    def sample_losses(self, output: ModelOutput, batch: Batch) -> Tensor:
        return self.task.sample_losses(output, batch)
