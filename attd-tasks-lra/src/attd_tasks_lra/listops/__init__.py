"""ListOps: the LRA generator, tokeniser and task."""
