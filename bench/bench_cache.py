"""What the array cache's check of its source files costs. Prints JSON.

    python bench/bench_cache.py [--frames 3000] [--size 64x128]

A split of ``--frames`` frames (a generated synthetic city of 100 frames, its files copied under
new names up to ``--frames``: a stat or a read costs the same on a copy), then, each the median
of five:

* ``fingerprint_s``: the cache's fingerprint of every source file (size, mtime, inode, ctime:
  one ``stat`` a file) and ``fingerprint_size_mtime_s``, the same with the two fields it had
  before (the cost is the ``stat``, not the fields);
* ``digest_s``: a BLAKE2b digest of every source file's bytes, the alternative that also
  survives a copy, with its throughput (``digest_mb_per_s``) and what it would cost on full-size
  Cityscapes train (2,975 frames, about 2.6 MB of image, labels, instances and disparity each);
* ``open_warm_cache_s``: ``CityscapesScenes(..., cache_dir=...)`` on a built cache (finding
  the files, the fingerprint, the index and opening each array to check it is whole), against
  ``build_cache_s``, the first build.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from uncertainty_mtl.data.cache import fingerprint
from uncertainty_mtl.data.cityscapes import CityscapesScenes, find_scene_files
from uncertainty_mtl.data.layout import FRAME_FILES
from uncertainty_mtl.data.synthetic import SynthConfig, generate_city

FIELDS = ("image", "label_ids", "instance_ids", "disparity")
#: Bytes per frame of full-size Cityscapes for the four files (leftImg8bit ≈ 2.2 MB, disparity
#: ≈ 0.3 MB, labelIds and instanceIds ≈ 0.05 MB each), and its train split's frames.
CITYSCAPES_BYTES_PER_FRAME = 2.6e6
CITYSCAPES_TRAIN_FRAMES = 2975
SEED_FRAMES = 100


def median_time(fn: Callable[[], object], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_split(root: Path, frames: int, height: int, width: int) -> None:
    """``frames`` frames in ``root``'s train split: 100 generated, the rest copies of them."""
    config = SynthConfig(height=height, width=width, split_sizes={"train": SEED_FRAMES})
    generate_city(root, config, progress=False)
    seeds = find_scene_files(root, "train", fields=FIELDS)
    for i in range(frames - len(seeds)):
        source = seeds[i % len(seeds)]
        stem = f"copy{i // 500:02d}_{i:06d}_000019"
        city = stem.split("_")[0]
        for field, (top, suffix) in FRAME_FILES.items():
            if field not in FIELDS:
                continue
            target = root / top / "train" / city / f"{stem}{suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source.image if field == "image" else source.path(field), target)


def digest(paths: list[Path]) -> int:
    size = 0
    for path in paths:
        data = path.read_bytes()
        hashlib.blake2b(data, digest_size=16).hexdigest()
        size += len(data)
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--size", default="64x128")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "city", Path(tmp) / "cache"
        make_split(root, args.frames, height, width)
        samples = find_scene_files(root, "train", fields=FIELDS)
        paths = [s.image if f == "image" else s.path(f) for s in samples for f in FIELDS]

        def size_mtime() -> list[list[object]]:
            stats = [(p, p.stat()) for p in paths]
            return [[str(p), st.st_size, st.st_mtime_ns] for p, st in stats]

        start = time.perf_counter()
        CityscapesScenes(root, "train", cache_dir=cache, progress=False)
        build = time.perf_counter() - start
        total_bytes = digest(paths)
        digest_s = median_time(lambda: digest(paths))
        rate = total_bytes / digest_s
        result = {
            "frames": len(samples),
            "files": len(paths),
            "size": [height, width],
            "fingerprint_s": median_time(lambda: fingerprint(samples, FIELDS)),
            "fingerprint_size_mtime_s": median_time(size_mtime),
            "digest_s": digest_s,
            "digest_mb_per_s": rate / 1e6,
            "source_mb": total_bytes / 1e6,
            "digest_cityscapes_train_s_estimate": (
                CITYSCAPES_TRAIN_FRAMES * CITYSCAPES_BYTES_PER_FRAME / rate
            ),
            "open_warm_cache_s": median_time(
                lambda: CityscapesScenes(root, "train", cache_dir=cache, progress=False)
            ),
            "build_cache_s": build,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
