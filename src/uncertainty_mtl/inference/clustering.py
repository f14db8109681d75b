"""Instances from centroid votes (paper §4): pixels of instance classes vote at ``pixel + offset``;
the votes of each predicted class are clustered; each pixel takes the cluster of its vote.

Methods (all parameters in pixels of the prediction's resolution):

* ``"optics"``: scikit-learn's OPTICS, the paper's choice, with the DBSCAN-like extraction at
  ``eps`` (its default ξ extraction split and merged instances almost at random in our trials);
  ``min_samples`` votes make a core point.
* ``"dbscan"``: scikit-learn's DBSCAN with the same ``eps`` and ``min_samples``.
* ``"hdbscan"``: scikit-learn's HDBSCAN (``min_cluster_size`` = ``min_samples``).

These three cost more than linearly in the votes (and DBSCAN's memory grows with the votes
within ``eps`` of each other, which at full resolution exhausts 24 GB): more than ``max_votes``
votes of a class are clustered from a random subset, and every other vote joins the cluster of
its nearest clustered vote.
* ``"grid"``: votes are counted on the pixel grid, the counts smoothed by a box of side
  ``2·radius + 1``; local maxima holding at least ``min_samples`` votes are instance centres and
  each vote joins the nearest centre within ``3·radius``. Linear in the number of pixels.

Clusters of fewer than ``min_pixels`` pixels are dropped. Each instance's confidence is the mean
predicted probability of its class over its pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from uncertainty_mtl.data.labels import INSTANCE_TRAIN_IDS, id_to_train_id

__all__ = ["METHODS", "ClusterParams", "InstanceMap", "cluster_instances"]

METHODS = ("grid", "dbscan", "hdbscan", "optics")


@dataclass(frozen=True)
class ClusterParams:
    """Parameters in pixels; ``None`` scales a default with the image width, ``s = W / 128``:
    lengths with ``s``, counts of votes or pixels with the area, ``s²``."""

    eps: float | None = None  # neighbourhood radius of votes (optics, dbscan); grid: radius
    min_samples: int | None = None  # votes that make a core point / a peak; default 4·s²
    min_pixels: int | None = None  # drop smaller instances; default 4·s² (at least 3)
    max_votes: int = 5000  # optics/hdbscan/dbscan: cluster at most this many votes per class

    def resolve(self, width: int) -> tuple[float, int, int]:
        """``(eps, min_samples, min_pixels)`` for an image ``width`` pixels wide."""
        scale = width / 128
        eps = self.eps if self.eps is not None else 1.5 * scale
        area = max(1.0, scale * scale)
        min_samples = self.min_samples if self.min_samples is not None else round(4 * area)
        min_pixels = self.min_pixels if self.min_pixels is not None else max(3, round(4 * area))
        return eps, min_samples, min_pixels


@dataclass
class InstanceMap:
    """Predicted instances of one image.

    Attributes:
        ids: int32 ``[H, W]``; 0 = no instance, ``k >= 1`` = instance ``k``.
        classes: instance -> trainId.
        confidences: instance -> confidence in ``[0, 1]``.
    """

    ids: NDArray[np.int32]
    classes: dict[int, int] = field(default_factory=dict)
    confidences: dict[int, float] = field(default_factory=dict)

    def cityscapes_ids(self) -> NDArray[np.int32]:
        """``labelId * 1000 + k`` for instance pixels, 0 elsewhere (an instanceIds-style map)."""
        label_of_train = {int(t): i for i, t in enumerate(id_to_train_id()) if t < 255 and i < 34}
        out = np.zeros(self.ids.shape, dtype=np.int32)
        for k, train_id in self.classes.items():
            out[self.ids == k] = label_of_train[train_id] * 1000 + k
        return out


def _cluster_points(
    points: NDArray[np.float64],
    method: str,
    eps: float,
    min_samples: int,
    max_votes: int,
    rng: np.random.Generator,
) -> NDArray[np.int64]:
    """Cluster label per point, -1 for noise."""
    from sklearn.cluster import DBSCAN, HDBSCAN, OPTICS

    if len(points) < min_samples:
        return np.full(len(points), -1)
    subset = None
    if len(points) > max_votes:
        subset = rng.choice(len(points), max_votes, replace=False)
    fit = points if subset is None else points[subset]
    if subset is not None:  # a sparser cloud: a core point needs proportionally fewer votes
        min_samples = max(2, round(min_samples * len(subset) / len(points)))
    if method == "dbscan":
        labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(fit)
    elif method == "optics":
        labels = OPTICS(
            min_samples=min_samples, cluster_method="dbscan", eps=eps, max_eps=4 * eps
        ).fit_predict(fit)
    else:
        # One instance of a class is one cluster, which HDBSCAN refuses by default.
        labels = HDBSCAN(
            min_cluster_size=max(2, min_samples), allow_single_cluster=True, copy=True
        ).fit_predict(fit)
    if subset is None:
        return np.asarray(labels, dtype=np.int64)
    from sklearn.neighbors import NearestNeighbors

    clustered = labels >= 0
    out = np.full(len(points), -1, dtype=np.int64)
    if clustered.any():
        nn = NearestNeighbors(n_neighbors=1).fit(fit[clustered])
        distance, index = nn.kneighbors(points)
        near = distance[:, 0] <= 2 * eps
        out[near] = labels[clustered][index[near, 0]]
    return out


def _grid_cluster(
    points: NDArray[np.float64], shape: tuple[int, int], radius: float, min_samples: int
) -> NDArray[np.int64]:
    """Peaks of the smoothed vote counts on the pixel grid; each vote to its nearest peak."""
    h, w = shape
    r = max(1, round(radius))
    col = np.clip(np.rint(points[:, 0]), 0, w - 1).astype(np.int64)
    row = np.clip(np.rint(points[:, 1]), 0, h - 1).astype(np.int64)
    # Only the window holding this class's votes (plus the pooling margin) is counted.
    top, left = max(0, int(row.min()) - r), max(0, int(col.min()) - r)
    bottom, right = min(h, int(row.max()) + r + 1), min(w, int(col.max()) + r + 1)
    bh, bw = bottom - top, right - left
    flat = (row - top) * bw + (col - left)
    counts = torch.from_numpy(np.bincount(flat, minlength=bh * bw).reshape(1, 1, bh, bw))
    k = 2 * r + 1
    # Box sums and maxima over k×k windows, separably (rows, then columns): O(HW·k), not O(HW·k²).
    density = F.avg_pool2d(counts.double(), (1, k), stride=1, padding=(0, r)) * k
    density = F.avg_pool2d(density, (k, 1), stride=1, padding=(r, 0)) * k
    # Break ties (plateaus) by position, by less than one vote, so that each window holds at
    # most one maximum.
    tie = torch.arange(bh * bw, dtype=torch.float64).view(1, 1, bh, bw) / (4 * bh * bw)
    density = density.round() + tie
    window_max = F.max_pool2d(density, (1, k), stride=1, padding=(0, r))
    window_max = F.max_pool2d(window_max, (k, 1), stride=1, padding=(r, 0))
    peaks = (density == window_max) & (density >= min_samples)
    py, px = np.nonzero(peaks[0, 0].numpy())
    if len(py) == 0:
        return np.full(len(points), -1)
    py, px = py + top, px + left
    from sklearn.neighbors import NearestNeighbors

    centres = np.stack([px, py], axis=1).astype(np.float64)
    distance, nearest = NearestNeighbors(n_neighbors=1).fit(centres).kneighbors(points)
    return np.where(distance[:, 0] <= 3 * radius, nearest[:, 0], -1)


def _numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def cluster_instances(
    semantic: NDArray[np.integer] | torch.Tensor,
    offsets: NDArray[np.floating] | torch.Tensor,
    *,
    probabilities: NDArray[np.floating] | torch.Tensor | None = None,
    method: str = "grid",
    params: ClusterParams = ClusterParams(),
    instance_classes: Sequence[int] = INSTANCE_TRAIN_IDS,
    seed: int = 0,
) -> InstanceMap:
    """Instance masks of one image from its predicted semantics and offsets.

    Args:
        semantic: predicted trainIds ``[H, W]``.
        offsets: predicted ``[2, H, W]`` offsets (x, y) to the instance centroid, in pixels.
        probabilities: ``[19, H, W]`` class probabilities, for the confidences (1.0 without).
        method: one of :data:`METHODS`.
        params: clustering parameters.
        instance_classes: trainIds whose pixels vote.
        seed: for the vote subsets of ``optics``/``hdbscan``.

    Returns:
        The :class:`InstanceMap`; instances are numbered from 1 in class order.
    """
    if method not in METHODS:
        raise ValueError(f"unknown clustering method {method!r}; expected one of {list(METHODS)}")
    semantic_np = np.asarray(_numpy(semantic))
    offsets_np = np.asarray(_numpy(offsets), dtype=np.float64)
    probs = None if probabilities is None else np.asarray(_numpy(probabilities))
    h, w = semantic_np.shape
    if offsets_np.shape != (2, h, w):
        raise ValueError(f"offsets must be [2, {h}, {w}] like semantic, got {offsets_np.shape}")
    eps, min_samples, min_pixels = params.resolve(w)
    rng = np.random.default_rng(seed)
    result = InstanceMap(ids=np.zeros((h, w), dtype=np.int32))
    next_id = 1
    for train_id in instance_classes:
        ys, xs = np.nonzero(semantic_np == train_id)
        if len(ys) == 0:
            continue
        votes = np.stack([xs + offsets_np[0, ys, xs], ys + offsets_np[1, ys, xs]], axis=1)
        if method == "grid":
            labels = _grid_cluster(votes, (h, w), eps, min_samples)
        else:
            labels = _cluster_points(votes, method, eps, min_samples, params.max_votes, rng)
        for label in np.unique(labels[labels >= 0]):
            member = labels == label
            if member.sum() < min_pixels:
                continue
            result.ids[ys[member], xs[member]] = next_id
            result.classes[next_id] = int(train_id)
            result.confidences[next_id] = (
                float(probs[train_id, ys[member], xs[member]].mean()) if probs is not None else 1.0
            )
            next_id += 1
    return result
