"""LightningModules: the forward classifier, autoencoders, and autoencoder-based classifiers."""

from convae_lightning.models.autoencoder import ConvAutoencoder, StackedAutoencoder
from convae_lightning.models.base import ConvaeModule, NonFiniteLossError
from convae_lightning.models.classifier import (
    AutoencoderClassifier,
    ConvClassifier,
    ForwardClassifier,
)
from convae_lightning.models.metrics import (
    ClassificationMetrics,
    ReconstructionMetrics,
    reconstruction_measures,
)
from convae_lightning.models.transfer import ENCODER_MODES, EncoderMode

__all__ = [
    "ENCODER_MODES",
    "AutoencoderClassifier",
    "ClassificationMetrics",
    "ConvAutoencoder",
    "ConvClassifier",
    "ConvaeModule",
    "EncoderMode",
    "ForwardClassifier",
    "NonFiniteLossError",
    "ReconstructionMetrics",
    "StackedAutoencoder",
    "reconstruction_measures",
]
