"""Pathfinder and Path-X: the LRA generator, the official-data loader and the tasks."""
