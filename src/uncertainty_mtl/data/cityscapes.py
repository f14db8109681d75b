"""The Cityscapes-layout data set: frames of a split as ``(image, targets)`` tensors.

Its files are found and decoded by :mod:`uncertainty_mtl.data.scene_files` (every problem a
:class:`SceneDataError` naming the file, found when the data set is built) and, with a
``cache_dir``, kept decoded by :mod:`uncertainty_mtl.data.cache`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from uncertainty_mtl.data import targets as T
from uncertainty_mtl.data.cache import ArrayCache
from uncertainty_mtl.data.layout import frame_paths
from uncertainty_mtl.data.scene_files import (
    FIELDS_FOR_TASK,
    SceneDataError,
    SceneFiles,
    check_sizes,
    fields_for,
    find_scene_files,
    open_image,
    read_camera,
    read_png,
    read_scene_arrays,
)
from uncertainty_mtl.tasks.registry import SCENE_TASKS

__all__ = [
    "FIELDS_FOR_TASK",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SCENE_TASKS",
    "CityscapesScenes",
    "SceneDataError",
    "SceneFiles",
    "find_scene_files",
    "open_image",
    "read_camera",
    "read_png",
    "read_scene_arrays",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SceneTransform = Callable[[Tensor, dict[str, Tensor]], tuple[Tensor, dict[str, Tensor]]]


class CityscapesScenes(Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """Frames of a Cityscapes-layout split as ``(image, targets)``.

    Args:
        root: the directory holding ``leftImg8bit/``, ``gtFine/``, ``disparity/``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        tasks: a subset of ``("semantic", "instance", "depth")``; only their files are read.
        transform: a joint transform ``(image, targets) -> (image, targets)`` applied to the
            image in ``[0, 1]`` before ImageNet normalisation (see ``data.transforms``).
        cache_dir: if given, decoded frames are kept there as memory-mapped arrays (rebuilt when
            the source files change); building the cache also checks every label value.
        check_values: without a cache, decode every label file once now, so that unknown label
            values are found at build time rather than mid-training.
        progress: show a progress bar while the cache is built or the files are checked.

    Returns, per item:
        ``image`` float32 ``[3, H, W]`` (ImageNet-normalised) and ``targets`` with, per task,
        ``semantic`` int64 ``[H, W]`` (trainIds, 255 = ignore); ``instance_offset`` float32
        ``[2, H, W]`` (x, y to the centroid, pixels) and ``instance_mask`` bool ``[H, W]``;
        ``inverse_depth`` float32 ``[H, W]`` (disparity in pixels at this resolution, sky 0) and
        ``depth_mask`` bool ``[H, W]``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        *,
        tasks: Sequence[str] = SCENE_TASKS,
        transform: SceneTransform | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        check_values: bool = True,
        progress: bool = True,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.tasks = tuple(t for t in SCENE_TASKS if t in tasks)
        self.fields = fields_for(tasks)
        self.transform = transform
        self.samples = find_scene_files(self.root, split, fields=self.fields)
        self._cache: ArrayCache | None = None
        if cache_dir is not None:
            # Every field the split has, whatever the tasks: data sets of other tasks share the
            # cache instead of rebuilding it under each other's feet.
            cached = self._available_fields()
            samples = find_scene_files(self.root, split, fields=cached)
            # One cache per split or part ("train:fit" -> "train.fit", a portable name).
            self._cache = ArrayCache(
                Path(cache_dir) / split.replace(":", "."), samples, cached, progress=progress
            )
        else:
            for sample in tqdm(
                self.samples,
                desc=f"checking {split}",
                unit="frame",
                leave=False,
                disable=not progress or len(self.samples) < 200,
            ):
                check_sizes(sample, self.fields)
                if check_values:
                    read_scene_arrays(sample, self.fields)
        self._mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    @property
    def _directory(self) -> str:
        """The split's directory name (``train`` for the part ``train:fit``)."""
        return self.split.partition(":")[0]

    def _available_fields(self) -> tuple[str, ...]:
        """The decoded arrays every frame of the split has files for (at least ``fields``)."""
        fields = ["image"]
        for field in ("label_ids", "instance_ids", "disparity"):
            if field in self.fields or all(
                frame_paths(self.root, self._directory, s.stem, city=s.image.parent.name)[
                    field
                ].is_file()
                for s in self.samples
            ):
                fields.append(field)
        return tuple(fields)

    def __len__(self) -> int:
        return len(self.samples)

    def arrays(self, index: int) -> dict[str, NDArray[Any]]:
        """The decoded files of frame ``index`` (see :func:`read_scene_arrays`)."""
        if self._cache is not None:
            return self._cache[index]
        return read_scene_arrays(self.samples[index], self.fields)

    def targets(self, arrays: dict[str, NDArray[Any]]) -> dict[str, Tensor]:
        """The targets of the dataset's tasks from decoded arrays, at their resolution."""
        out: dict[str, Tensor] = {}
        if "semantic" in self.tasks:
            out["semantic"] = torch.from_numpy(T.semantic_target(arrays["label_ids"])).long()
        if "instance" in self.tasks:
            offset, mask = T.instance_targets(arrays["instance_ids"])
            out["instance_offset"] = torch.from_numpy(offset)
            out["instance_mask"] = torch.from_numpy(mask)
        if "depth" in self.tasks:
            depth, valid = T.inverse_depth_targets(arrays["disparity"], arrays["label_ids"])
            out["inverse_depth"] = torch.from_numpy(depth)
            out["depth_mask"] = torch.from_numpy(valid)
        return out

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        arrays = self.arrays(index)
        image = torch.from_numpy(np.ascontiguousarray(arrays["image"])).permute(2, 0, 1)
        image = image.float().div_(255.0)
        targets = self.targets(arrays)
        if self.transform is not None:
            image, targets = self.transform(image, targets)
        return (image - self._mean) / self._std, targets

    def camera(self, index: int) -> dict[str, Any]:
        """The frame's ``camera.json`` (intrinsics ``fx, fy, u0, v0``, ``baseline``, ...)."""
        sample = self.samples[index]
        path = frame_paths(self.root, self._directory, sample.stem, city=sample.image.parent.name)
        return read_camera(path["camera"])
