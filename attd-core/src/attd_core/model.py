"""The model the runtime assembles from plugins: embedding, backbone, pooling, task head.

`AttdModel.forward` is the one forward pass: tasks supply only their head and, when
they need them, a per-token readout or a second tower (see `Task`). `BoundModel` ties
a model to its adapters so that TTA strategies see one callable and never the task's
internals.
"""

from __future__ import annotations

import warnings
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


def padding_mask(mask: Tensor | None) -> Tensor | None:
    """The mask the backbone and the pooling get: `mask`, or None when no token is padding.

    Tasks without padding (every image task, equal-length text batches) still collate an
    all-True mask. Passing None instead gives the same outputs without the work a mask
    costs: in each Mamba block three multiplies and, bidirectional, a gather per
    direction; in attention layers a `(B, 1, L, L)` mask that also keeps SDPA off its
    unmasked kernels; in `masked-mean` a weighted sum. The check is one reduction of a
    `(B, L)` bool tensor (on CUDA, one synchronisation per forward).
    """
    if mask is None or bool(mask.all()):
        return None
    return mask


class AttdModel(nn.Module):
    """Input embedding + backbone + pooling + the task's head, run by `forward`.

    The head is `task.build_head(d_model)`. `pooling` is a registered pooling's name
    (resolved through `manager`, see `resolve_pooling`) or a `Pooling` callable; one
    that is an `nn.Module` is a submodule, so its parameters train and are saved with
    the model. The task's optional hooks (`token_level`, `second_tower` with
    `pair_towers`) decide what the head reads.

    A token embedding starts from the backbone's `pretrained_embedding` (a pretrained
    Mamba's) when that has one row per token id of the task's vocabulary; otherwise it
    is trained from scratch, with a warning.

    `objective_head` is the inner objective's own head, if it built one (see
    `InnerObjective`): a submodule so that training reaches it and checkpoints keep it;
    `forward` never runs it.
    """

    def __init__(
        self,
        task: Task,
        backbone: Backbone,
        pooling: str | Pooling = DEFAULT,
        *,
        manager: PluginManager | None = None,
        objective_head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        two_towers = [hasattr(task, name) for name in ("second_tower", "pair_towers")]
        if any(two_towers) and not all(two_towers):
            raise ConfigError(
                f"task {type(task).__name__} defines one of second_tower and pair_towers; "
                "a two-tower task needs both"
            )
        head = task.build_head(backbone.d_model)
        pooling_name, pool = resolve_pooling(pooling, manager)
        input_spec = task.input_spec
        if input_spec.vocab_size is not None:
            self.embed: nn.Module = nn.Embedding(
                input_spec.vocab_size, backbone.d_model, padding_idx=input_spec.pad_id
            )
        elif input_spec.channels is not None:
            self.embed = nn.Linear(input_spec.channels, backbone.d_model)
        else:
            raise ConfigError("a task's input_spec needs vocab_size or channels")
        pretrained = getattr(backbone, "pretrained_embedding", None)
        tokens = isinstance(self.embed, nn.Embedding)
        if tokens and pretrained is not None:
            if pretrained.shape == self.embed.weight.shape:
                with torch.no_grad():
                    self.embed.weight.copy_(pretrained)
            else:
                warnings.warn(
                    f"the pretrained embedding has shape {tuple(pretrained.shape)}, the "
                    f"task's {tuple(self.embed.weight.shape)}: the token embedding is "
                    "trained from scratch",
                    stacklevel=2,
                )
        self.backbone = backbone
        self.head = head
        self.objective_head = objective_head
        self.pooling_name = pooling_name
        self.pooling = pool
        self.task = task
        self.token_level = bool(getattr(task, "token_level", False))
        self.two_towers = all(two_towers)

    def forward(self, batch: Batch, adapter_state: AdapterState | None = None) -> ModelOutput:
        """The task's logits for `batch`; the backbone reads `adapter_state` (its deltas).

        A token-level task's head reads every position's features `(B, L, D)`; any
        other head reads the pooled `(B, D)`, or for a two-tower task
        `task.pair_towers(first, second)` of both pooled towers, the second being
        `task.second_tower(batch)` through the same embedding, backbone, adapter state
        and pooling. `features`, `embedded` and `pooled` are the first tower's.
        """
        mask = padding_mask(batch.mask)
        embedded, features = self._tower(batch.inputs, mask, adapter_state)
        if self.token_level:
            return ModelOutput(logits=self.head(features), features=features, embedded=embedded)
        pooled = self.pool(features, mask)
        head_input = pooled
        if self.two_towers:
            second = self.task.second_tower(batch)
            second_mask = padding_mask(second.mask)
            _, second_features = self._tower(second.inputs, second_mask, adapter_state)
            head_input = self.task.pair_towers(pooled, self.pool(second_features, second_mask))
        return ModelOutput(
            logits=self.head(head_input), features=features, embedded=embedded, pooled=pooled
        )

    def _tower(
        self, inputs: Tensor, mask: Tensor | None, adapter_state: AdapterState | None
    ) -> tuple[Tensor, Tensor]:
        """Embed `inputs` and run the backbone: `(embedded, features)`, both `(B, L, D)`."""
        embedded = self.embed(inputs)
        return embedded, self.backbone(embedded, mask=mask, adapter_state=adapter_state)

    def pool(self, features: Tensor, mask: Tensor | None) -> Tensor:
        """`(B, L, D)` features to `(B, D)` with the model's pooling (what heads read)."""
        return self.pooling(features, mask)


class BoundModel:
    """A model bound to its adapters: what a `TTAStrategy` adapts.

    Calling it maps an adapter state to the deltas the backbone reads and runs the
    model's forward. `adapters` maps names to adapters (several combine by dict union
    of their states). The generator makes fresh adapter states reproducible:
    `reset_generator()` before an evaluation pass gives every pass the same initial
    states.
    """

    def __init__(self, model: AttdModel, adapters: Mapping[str, Adapter], seed: int = 0) -> None:
        self.model, self.seed = model, seed
        self.adapter = CombinedAdapter(adapters)
        self.generator = torch.Generator().manual_seed(seed)

    def reset_generator(self) -> None:
        self.generator.manual_seed(self.seed)

    def __call__(self, batch: Batch, adapter_state: AdapterState | None = None) -> ModelOutput:
        deltas = None if adapter_state is None else self.adapter.deltas(adapter_state)
        return self.model(batch, deltas)

    @property
    def task(self) -> Task:
        return self.model.task

    @property
    def per_sample(self) -> bool:
        return self.adapter.per_sample

    @property
    def input_spec(self) -> InputSpec:
        return self.model.task.input_spec

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
        return self.model.task.sample_losses(output, batch)
