"""The two-task network of the reproduction report (Key 2019, its Figure 1), sized to the input.

A convolutional encoder produces a 64-value code (16 channels × 2 × 2); a classification head (two
fully connected layers) and a reconstruction decoder (transposed convolutions) read it.

Layers for 28×28 (Fashion-MNIST), as in the report: conv3×3/32, conv3×3/32, max-pool, conv2×2/32,
conv2×2/16, max-pool, conv2×2/16 stride 2 pad 1, max-pool -> 16×2×2; four stride-2 transposed
convolutions up to 32×32, centre-cropped to 28×28. For 8×8 (digits): conv3×3/32, conv3×3/32,
max-pool, conv2×2/32, conv2×2/16 -> 16×2×2; two transposed convolutions up to 8×8.

Departures from the report's figure: the code (the encoder's last convolution) is linear, because
with a ReLU there the decoder of whole seeds died on digits (reconstruction stuck at the error of a
constant image); the hidden transposed convolutions have 16 channels (the figure lists 2); the
output is a sigmoid, because our images lie in [0, 1] (the report's tanh suited its mean-0, std-1
targets). Inputs are standardised inside the model with the training split's mean and standard
deviation; the reconstruction target is the image in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["TASKS", "ConvAutoencoderClassifier"]

TASKS = ("classification", "reconstruction")


def _conv(
    c_in: int, c_out: int, kernel: int, *, stride: int = 1, padding: int = 0, relu: bool = True
) -> nn.Module:
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding)
    return nn.Sequential(conv, nn.ReLU(inplace=True)) if relu else conv


def _encoder(image_size: int, in_channels: int) -> nn.Sequential:
    stem = [
        _conv(in_channels, 32, 3, padding=1),
        _conv(32, 32, 3, padding=1),
        nn.MaxPool2d(2),
        _conv(32, 32, 2),
    ]
    if image_size == 28:  # 28 -> 14 -> 13 -> 12 -> 6 -> 4 -> 2
        return nn.Sequential(
            *stem,
            _conv(32, 16, 2),
            nn.MaxPool2d(2),
            _conv(16, 16, 2, stride=2, padding=1, relu=False),
            nn.MaxPool2d(2),
        )
    if image_size == 8:  # 8 -> 4 -> 3 -> 2
        return nn.Sequential(*stem, _conv(32, 16, 2, relu=False))
    raise ValueError(f"image_size must be 28 (Fashion-MNIST) or 8 (digits), got {image_size}")


class ConvAutoencoderClassifier(nn.Module):
    """Encoder shared by a classifier and an image decoder.

    Args:
        image_size: side of the square input, 28 or 8.
        tasks: the heads to build, a subset of ``("classification", "reconstruction")``.
        num_classes: classes of the classifier.
        in_channels: image channels.
        mean: training-split pixel mean, for standardising the input.
        std: training-split pixel standard deviation.
    """

    def __init__(
        self,
        image_size: int,
        *,
        tasks: Sequence[str] = TASKS,
        num_classes: int = 10,
        in_channels: int = 1,
        mean: float = 0.0,
        std: float = 1.0,
    ) -> None:
        super().__init__()
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {list(tasks)}")
        if not std > 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.tasks = tuple(t for t in TASKS if t in tasks)
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.mean: Tensor
        self.std: Tensor
        self.encoder = _encoder(image_size, in_channels)
        code = 16 * 2 * 2
        self.heads = nn.ModuleDict()
        if "classification" in self.tasks:
            self.heads["classification"] = nn.Sequential(
                nn.Flatten(),
                nn.Linear(code, 128),
                nn.ReLU(inplace=True),
                nn.Linear(128, num_classes),
            )
        if "reconstruction" in self.tasks:
            ups = 4 if image_size == 28 else 2
            layers: list[nn.Module] = []
            for i in range(ups):
                last = i == ups - 1
                layers.append(nn.ConvTranspose2d(16, in_channels if last else 16, 2, stride=2))
                layers.append(nn.Sigmoid() if last else nn.ReLU(inplace=True))
            self.heads["reconstruction"] = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Args:
            images: ``[B, C, S, S]`` in ``[0, 1]``.

        Returns:
            ``{"classification": [B, num_classes] logits, "reconstruction": [B, C, S, S]}``,
            with only the heads that were built.
        """
        return self.outputs(self.features(images))

    def features(self, images: Tensor) -> Tensor:
        """The shared code every head reads, ``[B, 16, 2, 2]``."""
        return self.encoder((images - self.mean) / self.std)  # type: ignore[no-any-return]

    def outputs(self, code: Tensor) -> dict[str, Tensor]:
        """Each head's output from the shared ``code``."""
        out: dict[str, Tensor] = {}
        for task, head in self.heads.items():
            y = head(code)
            if task == "reconstruction" and y.shape[-1] != self.image_size:
                crop = (y.shape[-1] - self.image_size) // 2
                y = y[..., crop : crop + self.image_size, crop : crop + self.image_size]
            out[task] = y
        return out

    def last_shared_layer(self) -> nn.Module:
        """The encoder's last convolution, which makes the code (GradNorm balances the task
        gradients there)."""
        return [m for m in self.encoder.modules() if isinstance(m, nn.Conv2d)][-1]

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters every head depends on: the encoder's."""
        return list(self.encoder.parameters())
