"""Test-time adaptation: inner objectives, the inner loop and the strategies built on it."""
