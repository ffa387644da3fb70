"""Callbacks: tied-transpose sync, layer freezing, stack growth, reconstruction logging."""

from convae_lightning.callbacks.freezing import LayerFreezing
from convae_lightning.callbacks.reconstruction import ReconstructionLogger
from convae_lightning.callbacks.stack_growth import StackGrowth
from convae_lightning.callbacks.transpose_sync import TiedTransposeSync

__all__ = ["LayerFreezing", "ReconstructionLogger", "StackGrowth", "TiedTransposeSync"]
