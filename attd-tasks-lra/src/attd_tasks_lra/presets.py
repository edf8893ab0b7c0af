"""What every LRA task's `paper` preset shares: the S4 settings of specs/lra.md.

6 layers x 256 with d_state 64, mean pooling over real tokens, AdamW with weight decay
0.05, 10% linear warm-up then cosine decay. Each task adds its data, learning rate,
batch size and epochs. The shape applies to whichever backbone runs: `hybrid` takes all
of it; the transformer has no `d_state`, so `--preset paper` with it is refused by name
rather than trained at another size.
"""

from __future__ import annotations

from typing import Any

S4: dict[str, Any] = {
    "model.backbone.d_model": 256,
    "model.backbone.n_layers": 6,
    "model.backbone.d_state": 64,
    "model.pooling": "masked-mean",
    "train.weight_decay": 0.05,
    "train.warmup_ratio": 0.1,
}
