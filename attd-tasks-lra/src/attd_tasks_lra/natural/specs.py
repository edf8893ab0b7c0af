"""Registrations of this task family (options only: no torch, no datasets).

Each task has two presets: `cpu` (also its `run_defaults`: short sequences, the default
small Mamba, a few thousand examples, minutes on 2 CPU cores) and `paper`, the S4 LRA
settings (specs/lra.md; state-spaces/s4 `configs/experiment/lra/s4-lra-{imdb,cifar,aan}`):
6 x 256 with d_state 64, mean pooling over real tokens, AdamW with weight decay 0.05 at
lr 0.01, 10% warm-up then cosine decay, each task's S4 batch size and epochs, full
lengths and all data. S4 differs where attd-core has no equivalent or the spec fixes a
family-wide choice: its layers are bidirectional (here `model.backbone.bidirectional`,
left off: Mamba stays causal), its image model is 512 wide with dropout 0.1, and its
warm-up is a fixed step count (0.5-5% of training).
"""

from __future__ import annotations

from typing import Any

from attd_core import PluginSpec, TaskSpec
from attd_tasks_lra.natural.options import LraImageOptions, LraRetrievalOptions, LraTextOptions
from attd_tasks_lra.presets import S4

_ALL_DATA = {"task.limit_train": None, "task.limit_validation": None, "task.limit_test": None}
_S4 = {**S4, "train.lr": 0.01, **_ALL_DATA}
"""What the three paper presets share."""

# The first 512 bytes (about 100 words) of 4,000 reviews: one epoch is 125 steps of the
# default 2 x 64 Mamba, under a minute on 2 idle cores (1024 bytes take 2-4 times longer).
TEXT_CPU: dict[str, Any] = {
    "task.max_length": 512,
    "task.limit_train": 4000,
    "task.limit_validation": 256,
    "task.limit_test": 500,
    "train.lr": 0.01,
}
TEXT_PAPER: dict[str, Any] = {
    **_S4,
    "task.max_length": 4096,
    "train.batch_size": 16,
    "train.epochs": 32,
}

# 16 x 16 grayscale (256 pixel tokens), 5,000 images, two epochs: 310 steps, about 2
# minutes on 2 cores; the paper preset keeps LRA's 32 x 32 (1024 tokens).
IMAGE_CPU: dict[str, Any] = {
    "task.image_size": 16,
    "task.limit_train": 5000,
    "task.limit_validation": 256,
    "task.limit_test": 500,
    "train.epochs": 2,
    "train.lr": 0.01,
}
IMAGE_PAPER: dict[str, Any] = {
    **_S4,
    "task.image_size": 32,
    # S4 reads grayscale CIFAR as floats through a linear encoder, normalised with
    # mean 122.6 / 255 and std 61.0 / 255.
    "task.encoder": "pixels",
    "task.encoder_options": {"dtype": "float", "mean": 0.4808, "std": 0.2392},
    "train.batch_size": 50,
    "train.epochs": 200,
}

# Two documents of up to 512 bytes each, 2,000 pairs: 63 steps of two tower passes,
# about 75 seconds on 2 cores.
RETRIEVAL_CPU: dict[str, Any] = {
    "task.max_length": 512,
    "task.limit_train": 2000,
    "task.limit_validation": 256,
    "task.limit_test": 500,
    "train.lr": 0.01,
}
RETRIEVAL_PAPER: dict[str, Any] = {
    **_S4,
    "task.max_length": 4000,
    "train.batch_size": 64,
    "train.epochs": 20,
}

SPECS: tuple[PluginSpec, ...] = (
    TaskSpec(
        name="lra-text",
        summary="LRA Text: IMDB sentiment from UTF-8 bytes, up to 4096 tokens (2 classes)",
        factory="attd_tasks_lra.natural.text:LraTextTask",
        config=LraTextOptions,
        run_defaults=TEXT_CPU,
        presets={"cpu": TEXT_CPU, "paper": TEXT_PAPER},
    ),
    TaskSpec(
        name="lra-image",
        summary="LRA Image: CIFAR-10 in grayscale as 1024 pixel tokens (10 classes)",
        factory="attd_tasks_lra.natural.image:LraImageTask",
        config=LraImageOptions,
        run_defaults=IMAGE_CPU,
        presets={"cpu": IMAGE_CPU, "paper": IMAGE_PAPER},
    ),
    TaskSpec(
        name="lra-retrieval",
        summary="LRA Retrieval: do two AAN papers cite each other? Byte-level, two shared "
        "towers (2 classes)",
        factory="attd_tasks_lra.natural.retrieval:LraRetrievalTask",
        config=LraRetrievalOptions,
        run_defaults=RETRIEVAL_CPU,
        presets={"cpu": RETRIEVAL_CPU, "paper": RETRIEVAL_PAPER},
    ),
)
