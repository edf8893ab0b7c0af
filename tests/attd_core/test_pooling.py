"""Poolings: the four built-ins, their registration, `model.pooling`, third-party poolings."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from attd_core import AttdModel, ConfigError, Pooling, PoolingSpec, TaskSpec, hookimpl
from attd_core.pooling import BUILT_IN, first_token, last_token, masked_mean, mean
from attd_core.runtime.config import resolve_run_config
from attd_core.runtime.run import build_components
from attd_core.testing import TinyTask, new_plugin_manager, task_batch, tiny_backbone

# Two samples, D = 1, so every pooled value is easy to read: sample 0 has 3 real tokens
# of 4 (right padding), sample 1 has 2 (left padding).
FEATURES = torch.tensor([[1.0, 2.0, 6.0, 100.0], [100.0, 100.0, 4.0, 8.0]]).unsqueeze(-1)
MASK = torch.tensor([[True, True, True, False], [False, False, True, True]])


def pooled(pooling: Pooling, mask: Tensor | None = MASK) -> list[float]:
    return pooling(FEATURES, mask).squeeze(-1).tolist()


def test_masked_mean_averages_real_tokens_only():
    assert pooled(masked_mean) == [3.0, 6.0]


def test_mean_averages_every_position():
    assert pooled(mean) == [27.25, 53.0]
    assert pooled(mean, None) == pooled(masked_mean, None) == [27.25, 53.0]


def test_last_and_cls_take_the_last_and_first_real_token():
    assert pooled(last_token) == [6.0, 8.0]
    assert pooled(first_token) == [1.0, 4.0]
    assert pooled(last_token, None) == [100.0, 8.0]
    assert pooled(first_token, None) == [1.0, 100.0]


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_poolings_keep_batch_and_width_and_ignore_padding_unless_plain_mean(name):
    features = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    mask = torch.arange(5) < torch.tensor([[5], [3], [1]])
    out = BUILT_IN[name](features, mask)
    assert out.shape == (3, 4)
    changed = torch.where(mask.unsqueeze(-1), features, torch.full_like(features, 50.0))
    if name == "mean":
        assert not torch.equal(BUILT_IN[name](changed, mask), out)
    else:
        assert torch.equal(BUILT_IN[name](changed, mask), out)


def test_core_registers_the_poolings_without_importing_torch():
    manager = new_plugin_manager()
    assert manager.names("pooling") == ["cls", "last", "masked-mean", "mean"]
    for name, function in BUILT_IN.items():
        assert manager.create("pooling", name) is function
    probe = (
        "import sys, attd_core; m = attd_core.PluginManager(autoload=False, environ={}); "
        "import attd_core._plugin as p; m.add_plugin(p, name='core'); "
        "print(m.names('pooling'), 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "['cls', 'last', 'masked-mean', 'mean'] False", result.stderr


# -- the model and the run config --------------------------------------------------------


class MaxPooling(nn.Module):
    """A third-party pooling with a learned scale: max over real tokens, times `scale`."""

    def __init__(self, options: Any = None) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, features: Tensor, mask: Tensor | None) -> Tensor:
        if mask is not None:
            features = features.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        return self.scale * features.amax(dim=1)


def make_tiny_task(options: Any) -> TinyTask:
    return TinyTask()


class PoolingPlugin:
    @hookimpl
    def attd_register(self, register: Any) -> None:
        register(PoolingSpec(name="max", summary="max", factory=f"{__name__}:MaxPooling"))
        register(TaskSpec(name="tiny", summary="tiny", factory=f"{__name__}:make_tiny_task"))


@pytest.fixture
def manager(attd_pm):
    attd_pm.add_plugin(PoolingPlugin(), name="pooling-plugin")
    return attd_pm


def model(*pooling: Any, **kwargs: Any) -> AttdModel:
    task = TinyTask()
    return AttdModel(task, tiny_backbone(), *pooling, **kwargs)


def test_the_model_pools_with_masked_mean_by_default():
    built = model()
    assert built.pooling_name == "masked-mean" and built.pooling is masked_mean
    assert model("cls").pooling is first_token


def test_a_third_party_pooling_resolves_through_the_manager_and_trains(manager):
    built = model("max", manager=manager)
    assert built.pooling_name == "max" and isinstance(built.pooling, MaxPooling)
    assert "pooling.scale" in built.state_dict()  # trained and checkpointed with the model
    batch = task_batch(TinyTask(), "test")
    features = torch.randn(len(batch), batch.inputs.shape[1], 16)
    expected = features.masked_fill(~batch.mask.unsqueeze(-1), float("-inf")).amax(1)
    torch.testing.assert_close(built.pool(features, batch.mask), expected)


def test_a_plugin_pooling_needs_the_manager_never_a_process_wide_one():
    with pytest.raises(ConfigError, match="pooling 'max' is not one of attd-core's .* pass the"):
        model("max")


def test_a_pooling_callable_is_used_as_given():
    built = model(last_token)
    assert built.pooling is last_token and built.pooling_name == "last_token"


def test_an_unknown_pooling_lists_the_available_ones(manager):
    with pytest.raises(ConfigError, match="unknown pooling 'median'; available: cls, last, masked"):
        model("median", manager=manager)
    with pytest.raises(ConfigError, match="a pooling is a name or a callable"):
        model(3)


def test_model_pooling_defaults_to_masked_mean_and_reaches_the_model(manager):
    resolved = resolve_run_config(manager, task="tiny")
    assert resolved.config.model.pooling == "masked-mean"
    assert resolved.to_yaml_dict()["model"]["pooling"] == "masked-mean"
    resolved = resolve_run_config(manager, task="tiny", overrides=["model.pooling=max"])
    parts = build_components(resolved, manager, torch.device("cpu"))
    assert parts.model.pooling_name == "max" and isinstance(parts.model.pooling, MaxPooling)


def test_an_unknown_model_pooling_names_the_key_and_the_poolings(manager):
    with pytest.raises(ConfigError) as error:
        resolve_run_config(manager, task="tiny", overrides=["model.pooling=median"])
    assert str(error.value) == (
        "model.pooling: unknown pooling 'median'; available: cls, last, masked-mean, max, mean"
    )
