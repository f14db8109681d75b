"""Networks: the paper's multi-task scene network and the two-task auto-encoder."""

from uncertainty_mtl.models.autoencoder import ConvAutoencoderClassifier
from uncertainty_mtl.models.encoder import BACKBONES
from uncertainty_mtl.models.multitask import SCENE_OUTPUT_CHANNELS, MultiTaskNet

__all__ = ["BACKBONES", "SCENE_OUTPUT_CHANNELS", "ConvAutoencoderClassifier", "MultiTaskNet"]
