"""Networks: the two-task auto-encoder of the image study."""

from uncertainty_mtl.models.autoencoder import ConvAutoencoderClassifier

__all__ = ["ConvAutoencoderClassifier"]
