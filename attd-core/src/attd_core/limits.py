"""Upper bounds of the counts a user sets, shared by the run config and the options models.

Generous for real research, yet small enough that a typo (`--tta fixed:1000000000`,
`d_model=1000000`) is refused while the config resolves, with the limit in the message,
instead of running until killed or dying in the allocator. `attd config schema` shows
each as the field's `maximum`. Imports nothing: listing plugins reads these.
"""

MAX_WIDTH = 16_384
"""d_model (and dt_rank): 6x Mamba-2.8B's 2,560, above GPT-3's 12,288."""
MAX_LAYERS = 256
"""Residual layers: 4x Mamba-2.8B's 64."""
MAX_STATE = 4_096
"""d_state: Mamba uses 16, Mamba-2 64 to 256."""
MAX_CONV = 256
"""d_conv, the causal convolution's width: Mamba uses 4."""
MAX_RATIO = 64
"""expand and mlp_ratio (widths as multiples of d_model): 2 and 4 are usual."""
MAX_HEADS = 1_024
"""Attention heads (they must divide d_model)."""
MAX_RANK = 4_096
"""Adapter ranks: low-rank deltas use 1 to 64."""
MAX_INNER_STEPS = 1_000
"""Inner steps per sample (fixed k, adaptive/gate/oracle k_max): papers use 1 to 100."""
MAX_VIEWS = 256
"""Augmented views per sample (memo): MEMO uses 8 to 64, each one more forward."""
MAX_BATCH = 65_536
"""Examples per training or evaluation batch."""
MAX_EPOCHS = 100_000
"""Training epochs."""
MAX_OPTIMIZER_STEPS = 100_000_000
"""Optimiser steps (max_steps, controller_steps) and step intervals (log, checkpoint)."""
MAX_EXAMPLES = 1_000_000_000
"""Examples a limit keeps (eval.limit, eval.calibration_limit)."""
MAX_THREADS = 4_096
"""CPU threads."""
MAX_SEED = 2**32 - 1
"""Seeds: what numpy's and torch's generators all take."""
