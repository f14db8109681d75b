"""The raw Cityscapes layout, read as is: real Cityscapes, Tiny Cityscapes and the synthetic city.

``root/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png`` and, for the same stem,
``gtFine/.../_gtFine_labelIds.png`` and ``_gtFine_instanceIds.png``,
``disparity/.../_disparity.png`` and ``camera/.../_camera.json``. Only the files the requested
tasks need must exist.

Problems are found when the data set is built: a missing split, an image without one of its
files, files of different sizes, label values that the official table does not know. Each is a
:class:`SceneDataError` naming the file and what was expected.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from uncertainty_mtl._io import write_json
from uncertainty_mtl.data import targets as T
from uncertainty_mtl.data.labels import LICENSE_PLATE_IN_UINT8, known_label_ids
from uncertainty_mtl.data.layout import check_complete, frame_paths, read_json_object
from uncertainty_mtl.errors import DataError
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

#: The decoded arrays each task needs (``image`` is always read).
FIELDS_FOR_TASK = {
    "semantic": ("label_ids",),
    "instance": ("instance_ids",),
    "depth": ("disparity", "label_ids"),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: -1 (license plate) as a 16-bit instanceIds PNG stores it.
_LICENSE_PLATE_IN_UINT16 = 65535

SceneTransform = Callable[[Tensor, dict[str, Tensor]], tuple[Tensor, dict[str, Tensor]]]


class SceneDataError(DataError):
    """A scene data set on disk is not what the Cityscapes layout requires."""


@dataclass(frozen=True)
class SceneFiles:
    """The files of one frame (``None`` for files the tasks do not need)."""

    stem: str
    image: Path
    label_ids: Path | None = None
    instance_ids: Path | None = None
    disparity: Path | None = None
    camera: Path | None = None

    def path(self, field: str) -> Path:
        path = getattr(self, field)
        assert isinstance(path, Path), field
        return path


def read_camera(path: Path) -> dict[str, Any]:
    """A ``camera.json``; unreadable or not a JSON object: :class:`SceneDataError`."""
    try:
        return read_json_object(path, "camera JSON")
    except DataError as err:
        raise SceneDataError(str(err)) from err


def fields_for(tasks: Sequence[str]) -> tuple[str, ...]:
    """The decoded arrays ``tasks`` need, image first."""
    unknown = [t for t in tasks if t not in SCENE_TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {SCENE_TASKS}, got {list(tasks)}")
    fields = ["image"]
    for task in SCENE_TASKS:
        if task in tasks:
            fields += [f for f in FIELDS_FOR_TASK[task] if f not in fields]
    return tuple(fields)


def find_scene_files(
    root: str | os.PathLike[str],
    split: str,
    *,
    fields: Sequence[str] = ("image", "label_ids", "instance_ids", "disparity"),
    camera: bool = False,
) -> list[SceneFiles]:
    """Lists a split's frames and checks that each has the files ``fields`` need.

    ``split`` may name a part of a split: ``"train:holdout"`` is every sixth city of ``train``
    (in name order, starting with the sixth; the last city when there are fewer than six) and
    ``"train:fit"`` the others. Choices (weights, checkpoints) are made on a holdout when the
    reported split is val, as on Cityscapes, whose test labels are not public.

    Raises:
        SceneDataError: missing root or split, an empty split, missing files (the first five
            named, and how many), all naming the paths.
    """
    root = Path(root)
    split, _, part = split.partition(":")
    if part not in ("", "fit", "holdout"):
        raise SceneDataError(f"split part {part!r}: expected 'fit' or 'holdout' (e.g. train:fit)")
    images_dir = root / "leftImg8bit" / split
    if not root.is_dir():
        raise SceneDataError(f"{root}: no such directory (expected a Cityscapes-layout root)")
    check_complete(root)
    if not images_dir.is_dir():
        found = sorted(p.name for p in (root / "leftImg8bit").glob("*") if p.is_dir())
        raise SceneDataError(
            f"{images_dir}: no such directory; splits under {root / 'leftImg8bit'}: {found}"
        )
    images = sorted(images_dir.glob("*/*_leftImg8bit.png"))
    if not images:
        raise SceneDataError(
            f"{images_dir}: no images; expected {{city}}/{{city}}_{{seq}}_{{frame}}_leftImg8bit.png"
        )
    if part:
        cities = sorted({image.parent.name for image in images})
        held = set(cities[5::6] or cities[-1:])
        images = [i for i in images if (i.parent.name in held) == (part == "holdout")]
        if not images:
            raise SceneDataError(f"{images_dir}: no frames in part {part!r} (cities {cities})")
    wanted = [f for f in fields if f != "image"] + (["camera"] if camera else [])
    samples, missing = [], []
    for image in images:
        stem = image.name[: -len("_leftImg8bit.png")]
        paths = frame_paths(root, split, stem, city=image.parent.name)
        for field in wanted:
            if not paths[field].is_file():
                missing.append(str(paths[field]))
        samples.append(SceneFiles(stem, image, **{f: paths[f] for f in wanted}))
    if missing:
        shown = ", ".join(missing[:5])
        more = f", ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise SceneDataError(f"{len(missing)} file(s) missing in {root}: {shown}{more}")
    return samples


@contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """``Image.open(path)``; a file that is not a readable image (missing, truncated, corrupt)
    is a :class:`SceneDataError` naming it."""
    try:
        with Image.open(path) as img:
            yield img
    except SceneDataError:
        raise
    except (OSError, SyntaxError, ValueError, zlib.error, Image.DecompressionBombError) as err:
        detail = " ".join(str(err).split()) or type(err).__name__
        raise SceneDataError(f"{path}: not a readable PNG ({detail})") from err


def _size(path: Path) -> tuple[int, int]:
    with open_image(path) as img:
        return img.size


def _check_sizes(sample: SceneFiles, fields: Sequence[str]) -> tuple[int, int]:
    """``(height, width)`` of the image; every other file of the frame must match it."""
    width, height = _size(sample.image)
    for field in fields:
        if field == "image":
            continue
        size = _size(sample.path(field))
        if size != (width, height):
            raise SceneDataError(
                f"{sample.path(field)}: {size[0]}×{size[1]} pixels, but its image "
                f"{sample.image} is {width}×{height}"
            )
    return height, width


_UNIT_MODES = {"L", "P"}  # 8-bit
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L"}  # 16-bit (or Pillow's 32-bit view of it)


def read_png(path: Path, field: str) -> NDArray[Any]:
    with open_image(path) as img:
        mode = img.mode
        if field == "image":
            if mode not in ("RGB", "RGBA", "L"):
                raise SceneDataError(f"{path}: image mode {mode}, expected an RGB PNG")
            return np.array(img.convert("RGB"))
        if field == "label_ids" and mode not in _UNIT_MODES:
            raise SceneDataError(
                f"{path}: mode {mode}, expected an 8-bit label-id PNG (is it a _color.png?)"
            )
        if field == "instance_ids" and mode not in _WIDE_MODES | _UNIT_MODES:
            raise SceneDataError(f"{path}: mode {mode}, expected a 16-bit grayscale PNG")
        if field == "disparity" and mode not in _WIDE_MODES:
            # 8 bits cannot hold p = 256·d + 1: an 8-bit file is a preview, not the data.
            raise SceneDataError(f"{path}: mode {mode}, expected a 16-bit disparity PNG")
        return np.array(img)


@cache
def _known_uint8() -> NDArray[np.bool_]:
    """Which 8-bit values a labelIds PNG may hold (255 = license plate, -1)."""
    table = np.zeros(256, dtype=bool)
    for i in known_label_ids():
        table[i if i >= 0 else LICENSE_PLATE_IN_UINT8] = True
    return table


def _check_values(path: Path, field: str, array: NDArray[Any]) -> None:
    if field == "label_ids":
        values = np.unique(array)
        bad = values[~_known_uint8()[values]]
    elif field == "instance_ids":
        values = np.unique(array.astype(np.int64))
        plain = values[(values < 1000) & (values != -1)]
        grouped = values[values >= 1000]
        grouped = grouped[grouped != _LICENSE_PLATE_IN_UINT16]
        bad = np.concatenate(
            [
                plain[~np.isin(plain, list(known_label_ids()))],
                grouped[~np.isin(grouped // 1000, list(known_label_ids()))],
            ]
        )
    else:
        return
    if bad.size:
        raise SceneDataError(
            f"{path}: value(s) {bad[:10].tolist()} are not label ids of the official Cityscapes "
            "table" + (" (nor labelId*1000+k)" if field == "instance_ids" else "")
        )


def read_scene_arrays(sample: SceneFiles, fields: Sequence[str]) -> dict[str, NDArray[Any]]:
    """Decodes and checks one frame's files.

    Returns:
        ``image`` uint8 ``[H, W, 3]``, ``label_ids`` uint8 ``[H, W]`` (255 = license plate),
        ``instance_ids`` int32 ``[H, W]`` (-1 = license plate) and ``disparity`` uint16
        ``[H, W]`` (the raw PNG value ``p``), for the fields asked.
    """
    out: dict[str, NDArray[Any]] = {}
    for field in fields:
        path = sample.image if field == "image" else sample.path(field)
        array = read_png(path, field)
        _check_values(path, field, array)
        if field == "instance_ids":
            array = array.astype(np.int32)
            array[array == _LICENSE_PLATE_IN_UINT16] = -1
        elif field == "disparity":
            array = array.astype(np.uint16)
        out[field] = array
    shapes = {f: a.shape[:2] for f, a in out.items()}
    if len(set(shapes.values())) > 1:
        raise SceneDataError(f"files of {sample.image} differ in size: {shapes}")
    return out


# Cached arrays are stored compactly: instance ids as uint16 (-1 -> 65535), like the PNG.
_CACHE_DTYPES = {
    "image": np.uint8,
    "label_ids": np.uint8,
    "instance_ids": np.uint16,
    "disparity": np.uint16,
}
#: 2: source files are fingerprinted by inode and ctime too (a file rewritten with its old size
#: and modification time was taken for the old one).
_CACHE_VERSION = 2


def _fingerprint(samples: Sequence[SceneFiles], fields: Sequence[str]) -> list[list[Any]]:
    """Per source file: its path, size, modification time, inode and status-change time.

    A rewrite in place changes the ctime even when the size and the mtime are set back (setting
    the mtime is itself a change of status), and a file replaced by another (a rename onto it)
    has another inode: either rebuilds the cache. The ctime cannot be set from user space.
    """
    rows = []
    for sample in samples:
        for field in fields:
            path = sample.image if field == "image" else sample.path(field)
            stat = path.stat()
            rows.append([str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns])
    return rows


def _remove_dead_builds(parent: Path, prefix: str) -> None:
    """Removes the temporary build directories (``<prefix><pid>.<random>``) of processes that
    no longer run, e.g. a build killed with ``kill -9``; another process's build goes on."""
    for path in parent.glob(f"{prefix}*"):
        pid = path.name[len(prefix) :].partition(".")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


class _ArrayCache:
    """Decoded frames of one split as memory-mapped ``.npy`` files, one per field.

    ``index.json`` records each source file's size, modification time, inode and ctime
    (:func:`_fingerprint`); when any differs, the cache is rebuilt. So is a cache whose arrays
    do not open with the shape and type the index promises (a truncated or damaged ``.npy``). A
    build writes into a temporary directory that is renamed into place, so an interrupted build
    leaves no half-written cache behind.
    """

    def __init__(
        self,
        directory: Path,
        samples: Sequence[SceneFiles],
        fields: Sequence[str],
        *,
        progress: bool = True,
    ) -> None:
        self.directory = directory
        self.fields = tuple(fields)
        expected = {
            "version": _CACHE_VERSION,
            "fields": list(self.fields),
            "files": _fingerprint(samples, self.fields),
        }
        if not self._matches(expected):
            self._build(samples, expected, progress=progress)
        self._arrays: dict[str, NDArray[Any]] | None = None

    def _matches(self, expected: dict[str, Any]) -> bool:
        """Whether the cache on disk was built from these files and its arrays are whole."""
        try:
            with open(self.directory / "index.json", encoding="utf-8") as f:
                index = json.load(f)
        except (OSError, json.JSONDecodeError):
            return False
        if not isinstance(index, dict) or any(index.get(k) != v for k, v in expected.items()):
            return False
        shape = index.get("shape")
        if not (isinstance(shape, list) and len(shape) == 2):
            return False
        frames = len(expected["files"]) // max(1, len(self.fields))
        return all(
            self._array_is_whole(field, (frames, *shape) + ((3,) if field == "image" else ()))
            for field in self.fields
        )

    def _array_is_whole(self, field: str, shape: tuple[int, ...]) -> bool:
        """Whether ``<field>.npy`` opens (header and data) with ``shape`` and its cache type."""
        try:
            array = np.load(self.directory / f"{field}.npy", mmap_mode="r")
        except (OSError, ValueError, EOFError):  # missing, truncated, or not an .npy file
            return False
        return bool(array.shape == shape and array.dtype == _CACHE_DTYPES[field])

    def _build(
        self, samples: Sequence[SceneFiles], expected: dict[str, Any], *, progress: bool
    ) -> None:
        shapes = {_check_sizes(s, self.fields) for s in samples}
        if len(shapes) > 1:
            raise SceneDataError(
                f"the cache needs one image size per split; found {sorted(shapes)} "
                "(build the data set with cache_dir=None)"
            )
        (height, width) = shapes.pop()
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{self.directory.name}."
        _remove_dead_builds(self.directory.parent, prefix)
        tmp = Path(tempfile.mkdtemp(dir=self.directory.parent, prefix=f"{prefix}{os.getpid()}."))
        try:
            arrays = {}
            for field in self.fields:
                shape = (len(samples), height, width) + ((3,) if field == "image" else ())
                arrays[field] = np.lib.format.open_memmap(
                    tmp / f"{field}.npy", mode="w+", dtype=_CACHE_DTYPES[field], shape=shape
                )
            for i, sample in enumerate(
                tqdm(
                    samples,
                    desc=f"caching {self.directory.name}",
                    unit="frame",
                    leave=False,
                    disable=not progress,
                )
            ):
                for field, array in read_scene_arrays(sample, self.fields).items():
                    if field == "instance_ids":
                        array = np.where(array < 0, _LICENSE_PLATE_IN_UINT16, array)
                    arrays[field][i] = array
            for array in arrays.values():
                array.flush()
            del arrays
            write_json(tmp / "index.json", expected | {"shape": [height, width]})
            if self.directory.exists():
                shutil.rmtree(self.directory, ignore_errors=True)
            try:
                os.replace(tmp, self.directory)
            except OSError:
                # Another process (e.g. another DDP rank) finished the same build first.
                if not self._matches(expected):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def __getitem__(self, index: int) -> dict[str, NDArray[Any]]:
        if self._arrays is None:  # opened lazily, so that each worker process maps its own
            self._arrays = {f: self._open(f) for f in self.fields}
        out = {f: np.array(a[index]) for f, a in self._arrays.items()}
        if "instance_ids" in out:
            ids = out["instance_ids"].astype(np.int32)
            ids[ids == _LICENSE_PLATE_IN_UINT16] = -1
            out["instance_ids"] = ids
        return out

    def _open(self, field: str) -> NDArray[Any]:
        path = self.directory / f"{field}.npy"
        try:
            array: NDArray[Any] = np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as err:
            # Checked when the data set was built: it was damaged since, under a running job.
            raise SceneDataError(
                f"{path}: the cache was damaged after it was checked ({err}); run again to "
                "rebuild it"
            ) from err
        return array

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}


class CityscapesScenes(Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """Frames of a Cityscapes-layout split as ``(image, targets)`` (SPEC §2).

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
        self._cache: _ArrayCache | None = None
        if cache_dir is not None:
            # Every field the split has, whatever the tasks: data sets of other tasks share the
            # cache instead of rebuilding it under each other's feet.
            cached = self._available_fields()
            samples = find_scene_files(self.root, split, fields=cached)
            # One cache per split or part ("train:fit" -> "train.fit", a portable name).
            self._cache = _ArrayCache(
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
                _check_sizes(sample, self.fields)
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
