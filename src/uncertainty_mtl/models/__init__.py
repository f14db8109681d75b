"""Networks: the paper's multi-task scene network, the two-task auto-encoder and QM9's MLP."""

from uncertainty_mtl.models.autoencoder import ConvAutoencoderClassifier
from uncertainty_mtl.models.descriptor_mlp import DescriptorMLP
from uncertainty_mtl.models.encoder import BACKBONES
from uncertainty_mtl.models.multitask import SCENE_OUTPUT_CHANNELS, MultiTaskNet

__all__ = [
    "BACKBONES",
    "SCENE_OUTPUT_CHANNELS",
    "ConvAutoencoderClassifier",
    "DescriptorMLP",
    "MultiTaskNet",
]
