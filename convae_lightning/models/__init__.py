"""LightningModules: the forward classifier, autoencoders, and autoencoder-based classifiers."""

from convae_lightning.models.autoencoder import ConvAutoencoder, StackedAutoencoder
from convae_lightning.models.base import ConvaeModule
from convae_lightning.models.classifier import AutoencoderClassifier, ForwardClassifier
from convae_lightning.models.metrics import ClassificationMetrics, reconstruction_measures

__all__ = [
    "AutoencoderClassifier",
    "ClassificationMetrics",
    "ConvAutoencoder",
    "ConvaeModule",
    "ForwardClassifier",
    "StackedAutoencoder",
    "reconstruction_measures",
]
