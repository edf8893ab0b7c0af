"""Sequence backbones: Mamba blocks and the selective scan they run on."""
