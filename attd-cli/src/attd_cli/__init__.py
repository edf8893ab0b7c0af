"""attd-cli: the `attd` command (list plugins, run experiments).

The entry point is `attd_cli.app:main`; `python -m attd_cli` runs the same program.
"""

__version__ = "0.1.0"
