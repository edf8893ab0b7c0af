"""attd-tasks-lra: the Long Range Arena tasks as attd plugins."""

from attd_tasks_lra.listops.generator import ListOpsGeneratorConfig, generate_splits
from attd_tasks_lra.listops.options import ListOpsOptions
from attd_tasks_lra.listops.tokenizer import ListOpsTokenizer

__version__ = "0.1.0"

__all__ = [
    "ListOpsGeneratorConfig",
    "ListOpsOptions",
    "ListOpsTokenizer",
    "__version__",
    "generate_splits",
]
