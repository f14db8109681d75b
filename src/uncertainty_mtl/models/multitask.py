"""The paper's scene network: a shared DeepLabV3 encoder and one decoder per trained task."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from uncertainty_mtl.models.aspp import build_aspp
from uncertainty_mtl.models.decoders import TaskDecoder
from uncertainty_mtl.models.encoder import build_encoder
from uncertainty_mtl.tasks.registry import SCENE_TASKS, TASKS

__all__ = ["SCENE_OUTPUT_CHANNELS", "MultiTaskNet"]

#: Output channels per task: 19 class scores, (dx, dy) to the instance centroid, inverse depth.
SCENE_OUTPUT_CHANNELS = {t: int(TASKS[t].head_channels or 0) for t in SCENE_TASKS}


class MultiTaskNet(nn.Module):
    """Semantic segmentation, instance offsets and inverse depth from one RGB image.

    A dilated encoder (output stride 8) and ASPP are shared; each task has its own decoder
    (built only for the tasks trained), whose output is upsampled bilinearly to the input size.

    Args:
        tasks: a subset of ``("semantic", "instance", "depth")``.
        backbone: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"`` (the paper's) or
            ``"small"`` (a small CPU encoder, not the paper's).
        pretrained: ImageNet weights for a ResNet, through torchvision's weights API.
        aspp_rates: dilation rates of ASPP's 3×3 branches.
        aspp_channels: channels of each ASPP branch and of its projection.
        decoder_channels: hidden channels of each decoder.
        aspp_dropout: dropout after ASPP's projection (torchvision's default is 0.5; ours 0).
        small_width: first-stage width of the small encoder.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        backbone: str = "resnet101",
        pretrained: bool = False,
        aspp_rates: Sequence[int] = (12, 24, 36),
        aspp_channels: int = 256,
        decoder_channels: int = 256,
        aspp_dropout: float = 0.0,
        small_width: int = 32,
    ) -> None:
        super().__init__()
        unknown = [t for t in tasks if t not in SCENE_OUTPUT_CHANNELS]
        if unknown or not tasks:
            raise ValueError(
                f"tasks must be a non-empty subset of {list(SCENE_OUTPUT_CHANNELS)}, got "
                f"{list(tasks)}"
            )
        self.tasks = tuple(t for t in SCENE_OUTPUT_CHANNELS if t in tasks)
        self.encoder = build_encoder(backbone, pretrained=pretrained, width=small_width)
        encoder_channels = int(self.encoder.out_channels)  # type: ignore[arg-type]
        self.aspp = build_aspp(
            encoder_channels, rates=aspp_rates, channels=aspp_channels, dropout=aspp_dropout
        )
        self.decoders = nn.ModuleDict(
            {
                t: TaskDecoder(aspp_channels, SCENE_OUTPUT_CHANNELS[t], hidden=decoder_channels)
                for t in self.tasks
            }
        )

    def last_shared_layer(self) -> nn.Module:
        """The last layer with parameters that every task's decoder depends on: the ASPP's
        1×1 projection (GradNorm balances the task gradients there)."""
        return self.aspp.project[0]  # type: ignore[no-any-return]

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Args:
            images: ``[B, 3, H, W]``, ImageNet-normalised.

        Returns:
            ``{"semantic": [B, 19, H, W] logits, "instance": [B, 2, H, W] offsets (x, y) in
            pixels, "depth": [B, 1, H, W] inverse depth in pixels}``, for the trained tasks.
        """
        return self.heads(self.features(images), images.shape[-2:])

    def features(self, images: Tensor) -> Tensor:
        """The shared representation every decoder reads: the ASPP's output."""
        return self.aspp(self.encoder(images))  # type: ignore[no-any-return]

    def heads(self, features: Tensor, size: Sequence[int]) -> dict[str, Tensor]:
        """Each task's output from the shared ``features``, at ``size``."""
        return {
            task: F.interpolate(
                decoder(features), size=tuple(size), mode="bilinear", align_corners=False
            )
            for task, decoder in self.decoders.items()
        }

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters every task depends on (encoder and ASPP)."""
        return [*self.encoder.parameters(), *self.aspp.parameters()]
