"""The optimiser's parameter groups: decay, no decay, and the SSM's own learning rate."""

from __future__ import annotations

import torch

from attd_core import TrainConfig
from attd_core.runtime.trainer import build_optimizer
from attd_core.testing import tiny_backbone, tiny_model

SSM = ("A_log", "D", "dt_proj.weight", "dt_proj.bias")


def group_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[set[str]]:
    names = {id(param): name for name, param in model.named_parameters()}
    return [{names[id(param)] for param in group["params"]} for group in optimizer.param_groups]


def test_ssm_parameters_get_their_own_lr_and_no_weight_decay():
    model = tiny_model(backbone=tiny_backbone(bidirectional=True, n_layers=2))
    config = TrainConfig(lr=1e-3, ssm_lr=1e-4, weight_decay=0.1)
    optimizer = build_optimizer(model, config)
    decay, no_decay, ssm = group_names(model, optimizer)
    assert ssm == {
        f"backbone.layers.{i}.{mixer}.{name}"
        for i in range(2)
        for mixer in ("mixer", "reverse")
        for name in SSM
    }
    assert "embed.weight" in no_decay  # embeddings are not decayed
    others = no_decay - {"embed.weight"}
    assert others and all(model.get_parameter(name).dim() == 1 for name in others)  # biases, norms
    assert decay and all(model.get_parameter(name).dim() >= 2 for name in decay)
    lrs = [(group["lr"], group["weight_decay"]) for group in optimizer.param_groups]
    assert lrs == [(1e-3, 0.1), (1e-3, 0.0), (1e-4, 0.0)]


def test_without_ssm_lr_the_ssm_group_takes_the_lr_and_the_schedule_scales_it():
    model = tiny_model()
    optimizer = build_optimizer(model, TrainConfig(lr=2e-3))
    assert [group["lr"] for group in optimizer.param_groups] == [2e-3, 2e-3, 2e-3]
    optimizer = build_optimizer(model, TrainConfig(lr=2e-3, ssm_lr=5e-4))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    assert schedule.get_last_lr() == [1e-3, 1e-3, 2.5e-4]


def test_a_backbone_without_ssm_parameters_has_two_groups():
    model = tiny_model(backbone=tiny_backbone("transformer"))
    optimizer = build_optimizer(model, TrainConfig(ssm_lr=1e-4))
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.01, 0.0]
