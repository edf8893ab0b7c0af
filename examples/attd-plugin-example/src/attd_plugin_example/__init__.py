"""attd-plugin-example: a third-party attd plugin registering the `majority` task."""

__version__ = "0.1.0"
