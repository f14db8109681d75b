"""A run's scene data: the synthetic city generated on first use, and a split's frames with the
configured augmentation."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from uncertainty_mtl.data import transforms as T
from uncertainty_mtl.data.cityscapes import CityscapesScenes
from uncertainty_mtl.errors import DataError

__all__ = [
    "SceneDataSettings",
    "check_scene_root",
    "ensure_scene_data",
    "is_cityscapes_tree",
    "scene_frames",
]


class SceneDataSettings(Protocol):
    """Where a run's frames come from and how they are augmented (the ``data`` section of a
    training config, ``config.DataConfig``)."""

    root: str
    synthetic: bool
    synth_size: list[int]
    synth_split_sizes: dict[str, int]
    synth_seed: int
    size: list[int] | None
    flip: bool
    scale: list[float] | None
    crop: list[int] | None
    cache_dir: str | None


def is_cityscapes_tree(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` holds Cityscapes' image folder (``leftImg8bit/``) and is not a synthetic
    city of ours (no ``synth.json``): data to be read as it is, never generated into."""
    from uncertainty_mtl.data.synthetic.writer import MARKER

    path = Path(root)
    return (path / "leftImg8bit").is_dir() and not (path / MARKER).exists()


def check_scene_root(data: SceneDataSettings) -> None:
    """Refuses, before any work, a root that will not give data: without ``data.synthetic``,
    one that is not a directory holding a Cityscapes tree or a complete synthetic city (a
    mistyped path must not train on anything); with it, one that holds other files.

    Raises:
        DataError: naming the root and what was expected.
    """
    from uncertainty_mtl.data.synthetic import is_complete
    from uncertainty_mtl.data.synthetic.writer import MARKER

    root = Path(data.root)
    if is_complete(root) or is_cityscapes_tree(root):
        return
    if data.synthetic:
        if root.is_dir() and any(root.iterdir()) and not (root / MARKER).exists():
            raise DataError(
                f"data.root {root}: holds files but neither a Cityscapes tree (no leftImg8bit/) "
                "nor a synthetic city (no synth.json); nothing was written. Point data.root at a "
                "Cityscapes-layout root, or at a new or empty directory to generate the city in"
            )
        return
    if not root.exists():
        what = "no such directory"
    elif not root.is_dir():
        what = "not a directory"
    elif (root / MARKER).exists():
        what = "an unfinished synthetic city"
    else:
        what = "not a Cityscapes-layout root (no leftImg8bit/)"
    raise DataError(
        f"data.root {root}: {what}; expected a Cityscapes-layout root (leftImg8bit/, gtFine/, "
        "disparity/); to generate the synthetic city there instead, set data.synthetic=true"
    )


def ensure_scene_data(data: SceneDataSettings, *, progress: bool = True) -> None:
    """Generates the synthetic city at ``data.root`` if ``data.synthetic`` and it is not there
    or not complete (an interrupted generation is finished); call it from one process only.

    A root that holds a Cityscapes tree (real Cityscapes, Tiny Cityscapes, your own files in its
    layout) is read as it is, whatever ``data.synthetic`` says; without ``data.synthetic`` a
    root that is neither is refused (:func:`check_scene_root`)."""
    check_scene_root(data)
    if not data.synthetic:
        return
    from tqdm.auto import tqdm

    from uncertainty_mtl.data.synthetic import SynthConfig, generate_city, is_complete

    if is_complete(data.root) or is_cityscapes_tree(data.root):
        return
    synth = SynthConfig(
        height=data.synth_size[0],
        width=data.synth_size[1],
        seed=data.synth_seed,
        split_sizes=data.synth_split_sizes,
    )
    if progress:
        tqdm.write(f"generating the synthetic city in {data.root} (first use, or unfinished)")
    generate_city(data.root, synth, workers=os.cpu_count() or 1, progress=progress)


def scene_frames(
    data: SceneDataSettings,
    tasks: Sequence[str],
    split: str,
    *,
    train: bool,
    progress: bool = True,
) -> CityscapesScenes:
    """A split's frames; training frames get the configured augmentation, evaluation frames
    keep the files' resolution (the network's input is resized by the evaluation).
    ``progress``: a bar while the split's cache is built."""
    steps: list[Any] = []
    if train:
        if data.size:
            steps.append(T.Resize(data.size))
        if data.scale:
            steps.append(T.RandomScale(data.scale[0], data.scale[1]))
        if data.crop:
            steps.append(T.RandomCrop(data.crop))
        if data.flip:
            steps.append(T.RandomHorizontalFlip())
    return CityscapesScenes(
        data.root,
        split,
        tasks=tasks,
        transform=T.Compose(steps) if steps else None,
        cache_dir=data.cache_dir,
        progress=progress,
    )
