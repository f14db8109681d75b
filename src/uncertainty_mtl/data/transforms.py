"""Joint transforms of ``(image, targets)`` for the scene tasks.

They act on the image in ``[0, 1]`` (``[3, H, W]`` float) and the target dict of
:class:`~uncertainty_mtl.data.cityscapes.CityscapesScenes`, before ImageNet normalisation, and
keep the targets' geometry exact:

* labels, masks, disparity and instance votes are resampled by nearest neighbour (pixel centres
  aligned), never blended;
* a horizontal flip negates the x offsets;
* resizing by ``kx`` (columns) and ``ky`` (rows) moves each instance's centroid to
  ``(c + 0.5)·k - 0.5``, so offsets are recomputed as ``centroid' - pixel'`` (every pixel still
  votes for its instance's centroid); disparity, a horizontal distance, is multiplied by ``kx``;
* crops shift pixels and centroids alike (offsets unchanged); padding takes the ignore label,
  invalid masks, zero offsets and disparity, and the ImageNet mean colour for the image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as F

from uncertainty_mtl.data.cityscapes import IMAGENET_MEAN
from uncertainty_mtl.data.labels import IGNORE_INDEX

__all__ = [
    "Compose",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomScale",
    "Resize",
    "crop",
    "horizontal_flip",
    "resize",
]

Targets = dict[str, Tensor]
_PAD = {
    "semantic": IGNORE_INDEX,
    "instance_mask": False,
    "instance_offset": 0.0,
    "inverse_depth": 0.0,
    "depth_mask": False,
}


def _size(image: Tensor) -> tuple[int, int]:
    return int(image.shape[-2]), int(image.shape[-1])


def horizontal_flip(image: Tensor, targets: Targets) -> tuple[Tensor, Targets]:
    """Mirrors the image and targets left-right; x offsets change sign."""
    out = {k: v.flip(-1) for k, v in targets.items()}
    if "instance_offset" in out:
        out["instance_offset"] = out["instance_offset"] * torch.tensor([-1.0, 1.0]).view(2, 1, 1)
    return F.horizontal_flip(image), out


def _nearest_index(size_in: int, size_out: int) -> Tensor:
    """Source index of each output pixel, pixel centres aligned (``nearest-exact``)."""
    scale = size_in / size_out
    idx = torch.floor((torch.arange(size_out, dtype=torch.float64) + 0.5) * scale).long()
    return idx.clamp_(0, size_in - 1)


def resize(image: Tensor, targets: Targets, size: Sequence[int]) -> tuple[Tensor, Targets]:
    """Resizes to ``size = (height, width)``: image bilinear (antialiased), targets nearest."""
    (h_in, w_in), (h_out, w_out) = _size(image), (int(size[0]), int(size[1]))
    if (h_in, w_in) == (h_out, w_out):
        return image, dict(targets)
    ky, kx = h_out / h_in, w_out / w_in
    rows, cols = _nearest_index(h_in, h_out), _nearest_index(w_in, w_out)

    def sample(t: Tensor) -> Tensor:
        return t[..., rows[:, None], cols[None, :]]

    out = {k: sample(v) for k, v in targets.items() if k != "instance_offset"}
    if "instance_offset" in targets:
        offset = targets["instance_offset"]
        y_in = torch.arange(h_in, dtype=offset.dtype).view(h_in, 1)
        x_in = torch.arange(w_in, dtype=offset.dtype).view(1, w_in)
        vote_x = sample(offset[0] + x_in)
        vote_y = sample(offset[1] + y_in)
        y_out = torch.arange(h_out, dtype=offset.dtype).view(h_out, 1)
        x_out = torch.arange(w_out, dtype=offset.dtype).view(1, w_out)
        new = torch.stack([(vote_x + 0.5) * kx - 0.5 - x_out, (vote_y + 0.5) * ky - 0.5 - y_out])
        # Offsets come with their mask (the data set yields both for the instance task).
        out["instance_offset"] = torch.where(out["instance_mask"], new, torch.zeros_like(new))
    if "inverse_depth" in out:
        out["inverse_depth"] = out["inverse_depth"] * kx
    resized = F.resize(
        image, [h_out, w_out], interpolation=F.InterpolationMode.BILINEAR, antialias=True
    )
    return resized, out


def crop(
    image: Tensor, targets: Targets, top: int, left: int, height: int, width: int
) -> tuple[Tensor, Targets]:
    """Crops the window ``[top, top + height) × [left, left + width)``, padding where it leaves
    the image (see the module's docstring for the padding values)."""
    h, w = _size(image)
    pad_top, pad_left = max(0, -top), max(0, -left)
    pad_bottom, pad_right = max(0, top + height - h), max(0, left + width - w)
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(h, top + height), min(w, left + width)

    def window(t: Tensor, fill: float) -> Tensor:
        inner = t[..., y0:y1, x0:x1]
        if not (pad_top or pad_left or pad_bottom or pad_right):
            return inner
        out = torch.full((*t.shape[:-2], height, width), fill, dtype=t.dtype)
        out[..., pad_top : pad_top + (y1 - y0), pad_left : pad_left + (x1 - x0)] = inner
        return out

    cropped = {k: window(v, _PAD[k]) for k, v in targets.items()}
    image_out = window(image, 0.0)
    if pad_top or pad_left or pad_bottom or pad_right:
        inside = torch.zeros(height, width, dtype=torch.bool)
        inside[pad_top : pad_top + (y1 - y0), pad_left : pad_left + (x1 - x0)] = True
        mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype).view(3, 1, 1)
        image_out = torch.where(inside, image_out, mean)
    return image_out, cropped


class Compose:
    """Applies joint transforms in order."""

    def __init__(self, transforms: Sequence[object]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Tensor, targets: Targets) -> tuple[Tensor, Targets]:
        for transform in self.transforms:
            image, targets = transform(image, targets)  # type: ignore[operator]
        return image, targets


class RandomHorizontalFlip:
    """Flips with probability ``p`` (the paper's only augmentation on Tiny Cityscapes)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: Tensor, targets: Targets) -> tuple[Tensor, Targets]:
        if float(torch.rand(())) < self.p:
            return horizontal_flip(image, targets)
        return image, targets


class Resize:
    """Resizes to a fixed ``(height, width)``."""

    def __init__(self, size: Sequence[int]) -> None:
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, image: Tensor, targets: Targets) -> tuple[Tensor, Targets]:
        return resize(image, targets, self.size)


class RandomScale:
    """Resizes by a factor drawn uniformly from ``[min_scale, max_scale]`` (paper: 0.7–2.0)."""

    def __init__(self, min_scale: float, max_scale: float) -> None:
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale = min_scale, max_scale

    def __call__(self, image: Tensor, targets: Targets) -> tuple[Tensor, Targets]:
        scale = self.min_scale + (self.max_scale - self.min_scale) * float(torch.rand(()))
        h, w = _size(image)
        return resize(image, targets, (max(1, round(h * scale)), max(1, round(w * scale))))


class RandomCrop:
    """A random ``(height, width)`` window, padded when the image is smaller (paper: 512×512)."""

    def __init__(self, size: Sequence[int]) -> None:
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, image: Tensor, targets: Targets) -> tuple[Tensor, Targets]:
        (h, w), (ch, cw) = _size(image), self.size
        top = int(torch.randint(0, max(h - ch, 0) + 1, ()))
        left = int(torch.randint(0, max(w - cw, 0) + 1, ()))
        return crop(image, targets, top, left, ch, cw)
