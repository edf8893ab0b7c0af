"""Options of the `majority` task: pydantic only, so registering it imports no torch."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MajorityOptions(BaseModel):
    """Every knob of the generator; `attd run --set task.KEY=VALUE` sets them."""

    model_config = ConfigDict(extra="forbid")

    num_train: int = Field(2000, ge=1, description="Examples in the train split.")
    num_val: int = Field(200, ge=1, description="Examples in the validation split.")
    num_test: int = Field(500, ge=1, description="Examples in the test split.")
    seq_len: int = Field(64, ge=2, description="Tokens per sequence.")
    vocab_size: int = Field(
        16, ge=4, description="Token ids: 0 pad, 1 and 2 the counted tokens, the rest distractors."
    )
    seed: int = Field(0, description="Seed of the generator; each split draws its own stream.")
