"""Convolutional autoencoders for speech spectrograms, on PyTorch Lightning."""

__version__ = "0.1.0"
