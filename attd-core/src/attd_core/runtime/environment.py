"""Process-wide run settings: random seeds, CPU threads and the device."""

from __future__ import annotations

import random

import numpy as np
import torch

from attd_core.errors import ConfigError


def seed_everything(seed: int) -> None:
    """Seed every generator a run may draw from (Python, NumPy, torch on CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_threads(threads: int | None) -> None:
    """Cap torch's intra-op threads; None keeps torch's own choice."""
    if threads is not None:
        torch.set_num_threads(threads)


def select_device(name: str) -> torch.device:
    """`auto` picks CUDA when it is available; asking for CUDA without it is an error."""
    cuda = torch.cuda.is_available()
    if name == "cuda" and not cuda:
        raise ConfigError("runtime.device: 'cuda' requested but no CUDA device is available")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and cuda) else "cpu")
