"""Adapters: the small, structured parameter deltas that test-time adaptation optimises."""
