"""Writing a city: the frame plan of every split, frames written in parallel and atomically,
the city's own config kept beside it."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from uncertainty_mtl._io import claim_directory, remove_temporaries, write_json
from uncertainty_mtl._procs import die_with_parent
from uncertainty_mtl.data.layout import frame_paths, read_marker, write_frame
from uncertainty_mtl.data.synthetic.layout import CITIES, SPLIT_INDEX, SynthConfig, city_style
from uncertainty_mtl.data.synthetic.render import render_frame
from uncertainty_mtl.errors import DataError

_FORMAT_VERSION = 1
MARKER = "synth.json"


def _frame_plan(config: SynthConfig) -> list[tuple[str, int, int, str]]:
    """(split, city index, frame index within the city, stem) of every frame."""
    plan = []
    for split, size in config.split_sizes.items():
        cities = CITIES[split]
        for i in range(size):
            city = i % len(cities)
            seq = i // len(cities)
            plan.append((split, city, seq, f"{cities[city]}_{seq:06d}_000019"))
    return plan


def _write_one(config: SynthConfig, root: str, job: tuple[str, int, int, str]) -> bool:
    split, city, seq, stem = job
    paths = frame_paths(root, split, stem)
    if all(p.is_file() for p in paths.values()):
        return False
    style = city_style(config.seed, split, city)
    rng = np.random.default_rng([config.seed, SPLIT_INDEX[split], city, seq])
    frame = render_frame(style, rng, config.height, config.width, noise=config.noise)
    write_frame(
        root,
        split,
        stem,
        image=frame.image,
        label_ids=frame.label_ids,
        instance_ids=frame.instance_ids,
        disparity=frame.disparity_png,
        camera=frame.camera.as_json(),
    )
    return True


def _write_many(config: SynthConfig, root: str, jobs: list[tuple[str, int, int, str]]) -> int:
    return sum(_write_one(config, root, job) for job in jobs)


def generate_city(
    dst: str | os.PathLike[str],
    config: SynthConfig | None = None,
    *,
    workers: int = 1,
    progress: bool = True,
) -> int:
    """Writes the synthetic city into ``dst``; frames already there are kept.

    ``synth.json`` records the settings and, rewritten after the last frame, that the city is
    complete: an interrupted city is finished by calling this again, and used only then.

    Returns:
        The number of frames written (0 when everything was there already).

    Raises:
        DataError: ``dst`` holds a city generated with another configuration.
        RunDirectoryError: ``dst`` holds files that are not a city of ours.
    """
    config = config or SynthConfig()
    root = Path(dst)
    settings = {"version": _FORMAT_VERSION, **asdict(config)}
    settings["split_sizes"] = dict(config.split_sizes)
    if (root / MARKER).is_file():
        previous = read_marker(root, MARKER)
        done = previous.pop("complete", None)
        if previous != settings:
            raise DataError(
                f"{root} holds a synthetic city made with {previous}, not {settings}; "
                "use another directory"
            )
        if done:
            return 0
    claim_directory(root, MARKER, "synthetic city")
    write_json(root / MARKER, {**settings, "complete": False})
    remove_temporaries([root], recursive=True)
    plan = _frame_plan(config)
    chunks = [plan[i : i + 25] for i in range(0, len(plan), 25)]
    bar = tqdm(total=len(plan), desc="synthetic city", unit="frame", disable=not progress)
    written = 0
    if workers <= 1:
        for chunk in chunks:
            written += _write_many(config, str(root), chunk)
            bar.update(len(chunk))
    else:
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=get_context("spawn"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        ) as pool:
            futures = {pool.submit(_write_many, config, str(root), c): len(c) for c in chunks}
            for future in futures:
                written += future.result()
                bar.update(futures[future])
    bar.close()
    write_json(root / MARKER, {**settings, "complete": True})  # last: the city is usable now
    return written


def is_complete(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` holds a finished synthetic city."""
    return (Path(root) / MARKER).is_file() and read_marker(root, MARKER).get("complete") is True


def read_config(root: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``synth.json`` of a generated city."""
    return read_marker(root, MARKER)
