"""Network outputs brought to another size, and instances clustered from them.

A network trained at one resolution predicts at that resolution; its outputs are brought to the
size of the ground truth or of the user's image the way the official benchmark upsamples
predictions: labels (and instance ids) by nearest neighbour, offsets and disparity bilinearly and
multiplied by the scale (offsets by ``kx``, ``ky``; disparity, a horizontal distance, by ``kx``).
Instances are clustered at the network's resolution, where the votes were made.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from uncertainty_mtl.inference.clustering import ClusterParams, InstanceMap, cluster_instances

__all__ = ["instances_from_outputs", "upsample_outputs"]


def upsample_outputs(outputs: dict[str, Tensor], size: Sequence[int]) -> dict[str, Tensor]:
    """Network outputs ``[B, C, h, w]`` brought to ``size = (H, W)``.

    Returns:
        ``semantic`` trainIds ``[B, H, W]`` (argmax, then nearest), ``instance`` ``[B, 2, H, W]``
        offsets and ``depth`` ``[B, 1, H, W]`` inverse depth, for the tasks present.
    """
    any_output = next(iter(outputs.values()))
    h, w = any_output.shape[-2:]
    height, width = int(size[0]), int(size[1])
    same = (h, w) == (height, width)
    out: dict[str, Tensor] = {}
    if "semantic" in outputs:
        labels = outputs["semantic"].argmax(dim=1, keepdim=True).float()
        if not same:
            labels = F.interpolate(labels, size=(height, width), mode="nearest-exact")
        out["semantic"] = labels[:, 0].long()
    ky, kx = height / h, width / w
    for task in ("instance", "depth"):
        if task not in outputs:
            continue
        value = outputs[task].float()
        if not same:
            value = F.interpolate(value, size=(height, width), mode="bilinear", align_corners=False)
            scale = torch.tensor([kx, ky] if task == "instance" else [kx], device=value.device)
            value = value * scale.view(1, -1, 1, 1)
        out[task] = value
    return out


def instances_from_outputs(
    outputs: dict[str, Tensor],
    size: Sequence[int],
    *,
    method: str = "grid",
    params: ClusterParams | None = None,
) -> list[InstanceMap]:
    """Instances per image of a batch: clustered at the network's resolution, ids brought to
    ``size`` by nearest neighbour."""
    probabilities = F.softmax(outputs["semantic"].float(), dim=1)
    labels = probabilities.argmax(dim=1)
    maps = []
    for b in range(labels.shape[0]):
        result = cluster_instances(
            labels[b],
            outputs["instance"][b],
            probabilities=probabilities[b],
            method=method,
            params=params or ClusterParams(),
        )
        if tuple(result.ids.shape) != (int(size[0]), int(size[1])):
            ids = torch.from_numpy(result.ids).float()[None, None]
            ids = F.interpolate(ids, size=(int(size[0]), int(size[1])), mode="nearest-exact")
            result.ids = ids[0, 0].numpy().astype(np.int32)
        maps.append(result)
    return maps
