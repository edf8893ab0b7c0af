"""attd-vision: the vision modality for attd (pixel and patch encoders, image tasks).

The package is laid out and installable; its encoders and tasks are not written yet.
"""

__version__ = "0.1.0"
