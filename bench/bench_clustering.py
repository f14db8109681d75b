"""Instance clustering: AP and time per image of each method. Prints JSON; run on demand.

    python bench/bench_clustering.py [--root data/bench-128x256] [--frames 100]
        [--full-frames 3] [--run runs/cpu-three-task] [--xi-sweep 20]

Votes of three kinds, each scored with the official AP against the frames' ``instanceIds.png``:

* ``clean``: ground-truth semantics and offsets (every vote on its instance's centroid);
* ``noisy``: the same offsets plus Gaussian noise of σ = 1 px at 128×256 (scaled with the width);
* ``trained``: a trained run's predictions (``--run``; its network sees the image at its own
  size, the outputs are brought to the frame's size as in ``umtl evaluate``).

At 128×256 the frames are the first ``--frames`` of the **validation** split under ``--root``
(make it with ``umtl data synth data/bench-128x256 --split-sizes val=100 --size 128x256``): the
default method and OPTICS's ξ are chosen on this split, never on test. At 1024×2048,
``--full-frames`` validation frames of the same city are rendered here. ``--xi-sweep N`` scores
OPTICS's ξ and ``min_cluster_size`` candidates on the first N frames (each cloud's
reachability is fitted once).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from sklearn.cluster import OPTICS as _SKLEARN_OPTICS
from sklearn.cluster import cluster_optics_xi

from uncertainty_mtl.data.labels import id_to_train_id
from uncertainty_mtl.data.layout import write_frame
from uncertainty_mtl.data.synthetic import city_style, render_frame
from uncertainty_mtl.data.synthetic.layout import CITIES, SPLIT_INDEX
from uncertainty_mtl.data.targets import instance_targets
from uncertainty_mtl.inference.clustering import METHODS, ClusterParams, cluster_instances
from uncertainty_mtl.inference.instance_ap import instance_ap

XI_CANDIDATES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
SIZE_FACTORS = (1, 2, 4, 8)


class Frame:
    """One frame: its ground-truth file, image, semantics (trainIds) and offsets."""

    def __init__(self, gt_path: Path, image: np.ndarray, label_ids: np.ndarray) -> None:
        self.gt_path = gt_path
        self.image = image
        self.semantic = id_to_train_id()[label_ids]
        with Image.open(gt_path) as f:
            instance_ids = np.asarray(f, dtype=np.int32)
        self.offsets, self.mask = instance_targets(instance_ids)


def frames_from_root(root: Path, count: int) -> list[Frame]:
    gts = sorted((root / "gtFine" / "val").glob("*/*_gtFine_instanceIds.png"))[:count]
    if not gts:
        raise SystemExit(
            f"{root}: no validation frames; make them with `umtl data synth {root} "
            "--split-sizes val=100 --size 128x256`"
        )
    frames = []
    for gt in gts:
        stem = gt.name.removesuffix("_gtFine_instanceIds.png")
        image = root / "leftImg8bit" / "val" / gt.parent.name / f"{stem}_leftImg8bit.png"
        with Image.open(gt.with_name(f"{stem}_gtFine_labelIds.png")) as f:
            labels = np.asarray(f)
        with Image.open(image) as f:
            frames.append(Frame(gt, np.asarray(f.convert("RGB")), labels))
    return frames


def rendered_frames(count: int, height: int, width: int, directory: Path) -> list[Frame]:
    """Validation frames of the synthetic city (seed 0) rendered at ``height × width``."""
    frames, cities = [], CITIES["val"]
    for i in range(count):
        city, seq = i % len(cities), i // len(cities)
        rng = np.random.default_rng([0, SPLIT_INDEX["val"], city, seq])
        frame = render_frame(city_style(0, "val", city), rng, height, width)
        stem = f"{cities[city]}_{seq:06d}_000019"
        paths = write_frame(
            directory, "val", stem, image=frame.image, instance_ids=frame.instance_ids
        )
        frames.append(Frame(paths["instance_ids"], frame.image, frame.label_ids))
    return frames


def votes(frames: Sequence[Frame], kind: str, predictor: Any) -> list[tuple[Any, ...]]:
    """Per frame ``(gt_path, semantic, offsets, probabilities)`` of one kind of votes."""
    rng = np.random.default_rng(0)
    out = []
    for frame in frames:
        if kind == "trained":
            p = predictor.predict(frame.image)
            out.append((frame.gt_path, p.semantic, p.offsets, None))
            continue
        offsets = frame.offsets
        if kind == "noisy":
            sigma = frame.semantic.shape[1] / 256
            offsets = offsets + rng.normal(0, sigma, offsets.shape) * frame.mask
        out.append((frame.gt_path, frame.semantic, offsets, None))
    return out


def score(
    cases: Sequence[tuple[Any, ...]], method: str, params: ClusterParams | None = None
) -> dict[str, Any]:
    params = params or ClusterParams()
    cluster_instances(*cases[0][1:3], method=method, params=params)  # warm-up (imports)
    seconds, maps = [], []
    for gt, semantic, offsets, probs in cases:
        start = time.perf_counter()
        maps.append(
            cluster_instances(semantic, offsets, probabilities=probs, method=method, params=params)
        )
        seconds.append(time.perf_counter() - start)
        maps[-1] = (gt, maps[-1])
    ap = instance_ap(maps)
    return {
        "ap": round(ap["instance_ap"], 2),
        "ap50": round(ap["instance_ap50"], 2),
        "ms_per_image": round(1000 * statistics.median(seconds), 2),
        "instances_per_image": round(statistics.mean(len(m.classes) for _, m in maps), 1),
    }


def table(frames: Sequence[Frame], predictor: Any, methods: Sequence[str]) -> dict[str, Any]:
    size = list(frames[0].semantic.shape)
    out: dict[str, Any] = {
        "size": size,
        "frames": len(frames),
        "votes_per_image": int(statistics.median(int(f.mask.sum()) for f in frames)),
    }
    for kind in ("clean", "noisy", "trained"):
        if kind == "trained" and predictor is None:
            continue
        cases = votes(frames, kind, predictor)
        out[kind] = {m: score(cases, m) for m in methods}
        if {"grid", "optics"} <= set(methods):
            ratio = out[kind]["optics"]["ms_per_image"] / out[kind]["grid"]["ms_per_image"]
            out[kind]["optics_over_grid"] = round(ratio, 1)
    return out


class _FittedOptics:
    """Stands in for scikit-learn's OPTICS in the ξ sweep: a vote cloud's reachability is
    fitted once and every ξ extracts its clusters from it (``cluster_optics_xi``)."""

    fits: ClassVar[dict[tuple[bytes, int, float], Any]] = {}

    def __init__(self, *, min_samples: int, min_cluster_size: int, xi: float, **kw: Any) -> None:
        self.min_samples, self.min_cluster_size, self.xi = min_samples, min_cluster_size, xi
        self.max_eps = kw["max_eps"]

    def fit_predict(self, points: np.ndarray) -> np.ndarray:
        key = (points.tobytes(), self.min_samples, self.max_eps)
        if key not in self.fits:
            self.fits[key] = _SKLEARN_OPTICS(
                min_samples=self.min_samples, max_eps=self.max_eps
            ).fit(points)
        fit = self.fits[key]
        labels, _ = cluster_optics_xi(
            reachability=fit.reachability_,
            predecessor=fit.predecessor_,
            ordering=fit.ordering_,
            min_samples=self.min_samples,
            min_cluster_size=self.min_cluster_size,
            xi=self.xi,
        )
        return labels


def xi_sweep(frames: Sequence[Frame], predictor: Any) -> dict[str, Any]:
    """OPTICS's AP for each ξ and ``min_cluster_size`` (a multiple of ``min_samples``)."""
    from unittest import mock

    width = frames[0].semantic.shape[1]
    min_samples = ClusterParams().resolve(width)[1]
    out: dict[str, Any] = {"frames": len(frames), "min_samples": min_samples}
    with mock.patch("sklearn.cluster.OPTICS", _FittedOptics):
        for kind in ("clean", "noisy", "trained"):
            if kind == "trained" and predictor is None:
                continue
            cases = votes(frames, kind, predictor)
            out[kind] = {
                f"xi={xi},min_cluster_size={factor}x": score(
                    cases, "optics", ClusterParams(xi=xi, min_cluster_size=factor * min_samples)
                )["ap"]
                for xi in XI_CANDIDATES
                for factor in SIZE_FACTORS
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="data/bench-128x256")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--full-frames", type=int, default=3)
    parser.add_argument("--run", default="runs/cpu-three-task", help="'' for no trained votes")
    parser.add_argument("--xi-sweep", type=int, default=0, metavar="N")
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    methods = args.methods.split(",")
    predictor = None
    if args.run:
        from uncertainty_mtl.engine.finished import predictor as load_predictor

        predictor = load_predictor(args.run, cluster_method="grid")
    out: dict[str, Any] = {"benchmark": "instance_clustering", "run": args.run or None}
    frames = frames_from_root(Path(args.root), args.frames)
    if args.xi_sweep:
        out["optics_xi_sweep"] = xi_sweep(frames[: args.xi_sweep], predictor)
    out["results"] = [table(frames, predictor, methods)]
    if args.full_frames:
        with tempfile.TemporaryDirectory(prefix="umtl-bench-") as tmp:
            full = rendered_frames(args.full_frames, 1024, 2048, Path(tmp))
            out["results"].append(table(full, predictor, methods))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
