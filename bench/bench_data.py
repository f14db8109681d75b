"""Scene-data throughput: the synthetic city's generator and the loader. Prints JSON.

    python bench/bench_data.py [--frames 200] [--workers 2]

* generator: frames/s at 256×512 and 128×256 with ``--workers`` processes, PNG writing and the
  workers' start-up included (so short runs understate the rate of a full data set);
* loader at 128×256: samples/s of ``CityscapesScenes`` from the PNG files and from the cache,
  in one process and through a ``DataLoader`` with ``--workers`` workers (batch 8);
* class pixel frequencies of the generated val split beside Cityscapes' (Key 2019, Table 4).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from uncertainty_mtl.data.cityscapes import CityscapesScenes
from uncertainty_mtl.data.labels import TRAIN_ID_NAMES
from uncertainty_mtl.data.synthetic import SynthConfig, generate_city

#: Share of labelled pixels per class on Tiny Cityscapes val (Key 2019, Table 4), percent.
CITYSCAPES_FREQUENCY = dict(
    zip(
        TRAIN_ID_NAMES,
        (
            37.7,
            5.4,
            21.9,
            0.7,
            0.8,
            1.5,
            0.2,
            0.7,
            17.3,
            0.8,
            3.3,
            1.3,
            0.2,
            6.5,
            0.3,
            0.4,
            0.1,
            0.1,
            0.7,
        ),
        strict=True,
    )
)


def generator_rate(root: Path, height: int, width: int, frames: int, workers: int) -> float:
    config = SynthConfig(height=height, width=width, split_sizes={"train": frames})
    start = time.perf_counter()
    generate_city(root, config, workers=workers, progress=False)
    return frames / (time.perf_counter() - start)


def loader_rates(root: Path, cache: Path, workers: int) -> dict[str, float]:
    rates = {}
    for name, kwargs in (("png", {}), ("cache", {"cache_dir": cache})):
        data = CityscapesScenes(root, "train", check_values=False, **kwargs)  # type: ignore[arg-type]
        data[0]
        start = time.perf_counter()
        for i in range(len(data)):
            data[i]
        rates[f"{name}_one_process"] = len(data) / (time.perf_counter() - start)
        loader = DataLoader(
            data, batch_size=8, num_workers=workers, shuffle=True, persistent_workers=False
        )
        start = time.perf_counter()
        n = sum(len(images) for images, _ in loader)
        rates[f"{name}_dataloader_{workers}_workers"] = n / (time.perf_counter() - start)
    return rates


def class_frequencies(root: Path) -> dict[str, dict[str, float]]:
    data = CityscapesScenes(root, "val", tasks=["semantic"], check_values=False)
    counts = np.zeros(256)
    for i in range(len(data)):
        counts += np.bincount(data[i][1]["semantic"].numpy().ravel(), minlength=256)
    labelled = counts[:19].sum()
    return {
        name: {
            "synthetic": round(100 * counts[i] / labelled, 2),
            "cityscapes": CITYSCAPES_FREQUENCY[name],
        }
        for i, name in enumerate(TRAIN_ID_NAMES)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        rates = {
            f"{h}x{w}": generator_rate(tmp_path / f"gen{h}", h, w, args.frames, args.workers)
            for h, w in ((256, 512), (128, 256))
        }
        loader = loader_rates(tmp_path / "gen128", tmp_path / "cache", args.workers)
        freq_root = tmp_path / "freq"
        generate_city(
            freq_root,
            SynthConfig(height=128, width=256, split_sizes={"val": 300}),
            workers=args.workers,
            progress=False,
        )
        frequencies = class_frequencies(freq_root)
    print(
        json.dumps(
            {
                "benchmark": "scene_data",
                "workers": args.workers,
                "generator_frames_per_s": rates,
                "extrapolated_3975_frames_256x512_s": 3975 / rates["256x512"],
                "loader_samples_per_s_128x256": loader,
                "class_frequency_percent": frequencies,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
