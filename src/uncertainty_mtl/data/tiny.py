"""Tiny Cityscapes: a copy of a Cityscapes-layout tree downsampled by an integer factor.

Per file: images area-resampled (the mean of each ``factor × factor`` block); label and
instance ids by nearest neighbour (the pixel under each block's centre, as PIL's ``NEAREST``);
disparity by nearest neighbour, decoded, divided by the factor and re-encoded (a disparity is a
horizontal distance in pixels, so it shrinks with the image: 1024×2048 -> 128×256 is a factor of
8, neither the paper's "four" nor the reproduction report's "multiply"); camera ``fx``, ``fy``,
``u0``, ``v0`` divided by the factor, the baseline and extrinsics unchanged.

Each output file is written atomically and skipped when it exists, so an interrupted conversion
is resumed by running it again. ``umtl_tiny.json`` at the destination records the factor and,
written last, that the conversion is complete (a data set is used only then); a destination made
with another factor, or holding files that are not a conversion, is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from uncertainty_mtl._io import claim_directory, remove_temporaries, write_json, write_text
from uncertainty_mtl._procs import die_with_parent
from uncertainty_mtl.data.cityscapes import (
    FIELDS_FOR_TASK,
    SCENE_TASKS,
    CityscapesScenes,
    SceneDataError,
    open_image,
    read_camera,
    read_png,
)
from uncertainty_mtl.data.layout import FRAME_FILES, frame_paths, read_marker, write_png
from uncertainty_mtl.data.targets import decode_disparity, encode_disparity
from uncertainty_mtl.errors import ConfigError

__all__ = ["TinyReport", "convert_tiny", "downsample_frame"]

_MARKER = "umtl_tiny.json"


@dataclass
class TinyReport:
    """What a conversion did."""

    frames: int = 0
    written: int = 0
    skipped: int = 0
    splits: tuple[str, ...] = ()


def _block_centre(array: np.ndarray, factor: int) -> np.ndarray:
    return np.ascontiguousarray(array[factor // 2 :: factor, factor // 2 :: factor])


def downsample_frame(
    sources: dict[str, Path], targets: dict[str, Path], factor: int
) -> tuple[int, int]:
    """Writes the downsampled files of one frame that do not exist yet.

    Returns:
        ``(written, skipped)`` file counts.
    """
    written = skipped = 0
    for field, source in sources.items():
        target = targets[field]
        if target.exists():
            skipped += 1
            continue
        if field == "camera":
            camera = read_camera(source)
            intrinsic = camera.get("intrinsic")
            if not isinstance(intrinsic, dict) or not {"fx", "fy", "u0", "v0"} <= set(intrinsic):
                raise SceneDataError(f"{source}: expected intrinsic fx, fy, u0, v0")
            for key in ("fx", "fy", "u0", "v0"):
                intrinsic[key] = intrinsic[key] / factor
            write_text(target, json.dumps(camera, indent=2) + "\n")
            written += 1
            continue
        with open_image(source) as img:
            width, height = img.size
            if width % factor or height % factor:
                raise SceneDataError(
                    f"{source}: {width}×{height} pixels is not divisible by the factor {factor}"
                )
            if field == "image":
                out = np.asarray(img.convert("RGB").reduce(factor))
        if field != "image":
            out = _block_centre(read_png(source, field), factor)
        if field == "label_ids":
            out = out.astype(np.uint8)
        elif field == "instance_ids":
            out = out.astype(np.uint16)
        elif field == "disparity":
            disparity, valid = decode_disparity(out)
            out = encode_disparity(disparity / factor, valid)
        write_png(target, out)
        written += 1
    return written, skipped


@dataclass(frozen=True)
class _Frame:
    split: str
    sources: dict[str, Path]
    targets: dict[str, Path]


def _frames(src: Path, dst: Path, splits: Sequence[str]) -> list[_Frame]:
    frames = []
    for split in splits:
        for image in sorted((src / "leftImg8bit" / split).glob("*/*_leftImg8bit.png")):
            stem = image.name[: -len(FRAME_FILES["image"][1])]
            sources = frame_paths(src, split, stem, city=image.parent.name)
            targets = frame_paths(dst, split, stem, city=image.parent.name)
            present = {f: p for f, p in sources.items() if p.is_file()}
            frames.append(_Frame(split, present, {f: targets[f] for f in present}))
    return frames


def _run(job: tuple[dict[str, Path], dict[str, Path], int]) -> tuple[int, int]:
    return downsample_frame(*job)


def convert_tiny(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    factor: int = 8,
    workers: int = 1,
    splits: Sequence[str] | None = None,
    progress: bool = True,
) -> TinyReport:
    """Writes Tiny Cityscapes into ``dst`` and validates what it wrote.

    Args:
        src: a Cityscapes-layout root (e.g. the unpacked official download).
        dst: where to write; may hold a partial earlier conversion with the same factor.
        factor: integer downsampling factor (8: 1024×2048 -> 128×256).
        workers: parallel processes.
        splits: the splits to convert (default: every directory under ``leftImg8bit``).

    Raises:
        SceneDataError: ``src`` is not a Cityscapes layout, ``dst`` was made with another
            factor, a file's size is not divisible by the factor, or an output fails validation.
    """
    src, dst = Path(src), Path(dst)
    if factor < 1:
        raise ConfigError(f"--factor must be >= 1, got {factor}")
    if not (src / "leftImg8bit").is_dir():
        raise SceneDataError(f"{src}: no leftImg8bit/ directory; expected a Cityscapes-layout root")
    if src.resolve() == dst.resolve():
        raise SceneDataError("the destination must differ from the source")
    if splits is None:
        splits = sorted(p.name for p in (src / "leftImg8bit").iterdir() if p.is_dir())
    marker = dst / _MARKER
    if marker.is_file():
        previous = read_marker(dst, _MARKER)
        if previous.get("factor") != factor:
            raise SceneDataError(
                f"{dst} holds a conversion with factor {previous.get('factor')}, not {factor}; "
                "use another destination"
            )
    frames = _frames(src, dst, splits)
    if not frames:
        raise SceneDataError(f"{src}: no images in splits {list(splits)}")
    claim_directory(dst, _MARKER, "Tiny Cityscapes conversion")
    settings = {"factor": factor, "source": str(src.resolve())}
    write_json(marker, {**settings, "complete": False})
    remove_temporaries([dst], recursive=True)
    report = TinyReport(frames=len(frames), splits=tuple(splits))
    work = [(frame.sources, frame.targets, factor) for frame in frames]
    bar = tqdm(total=len(work), desc=f"tiny ×1/{factor}", unit="frame", disable=not progress)
    if workers <= 1:
        results: Any = map(_run, work)
    else:
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=get_context("spawn"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )
        results = pool.map(_run, work, chunksize=16)
    try:
        for written, skipped in results:
            report.written += written
            report.skipped += skipped
            bar.update()
    finally:
        bar.close()
        if workers > 1:
            pool.shutdown(cancel_futures=True)
    # Every file is written: complete, and read back as a loader will (which needs it so).
    write_json(marker, {**settings, "complete": True})
    try:
        _validate(dst, splits, factor, frames)
    except BaseException:
        write_json(marker, {**settings, "complete": False})
        raise
    return report


def _validate(dst: Path, splits: Sequence[str], factor: int, frames: list[_Frame]) -> None:
    """Reads back what was written: sizes are the source's divided by the factor, and the data
    set loads with every label value known (see :class:`CityscapesScenes`)."""
    for frame in frames:
        with open_image(frame.sources["image"]) as a, open_image(frame.targets["image"]) as b:
            if (a.size[0] // factor, a.size[1] // factor) != b.size:
                raise SceneDataError(
                    f"{frame.targets['image']}: {b.size[0]}×{b.size[1]} pixels, expected its "
                    f"source's {a.size[0]}×{a.size[1]} divided by {factor}"
                )
    for split in splits:
        in_split = [set(f.sources) for f in frames if f.split == split]
        if not in_split:
            continue
        common = set.intersection(*in_split)
        tasks = [t for t in SCENE_TASKS if set(FIELDS_FOR_TASK[t]) <= common]
        if tasks:
            CityscapesScenes(dst, split, tasks=tasks, check_values=True)
