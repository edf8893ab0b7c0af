"""attd-tasks-lra: registers the Long Range Arena tasks."""
