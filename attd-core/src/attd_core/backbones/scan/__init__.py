"""The selective scan of Mamba behind one API, with backends chosen per call."""

from attd_core.backbones.scan.dispatch import (
    BACKENDS,
    available_backends,
    resolve_backend,
    selective_scan,
)

__all__ = ["BACKENDS", "available_backends", "resolve_backend", "selective_scan"]
