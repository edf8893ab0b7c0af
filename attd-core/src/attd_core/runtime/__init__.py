"""The runtime: run configuration, training, evaluation, checkpoints and metrics.

`config` imports no torch, so the CLI can resolve and report configuration errors
before the heavy modules load; the others import torch.
"""
