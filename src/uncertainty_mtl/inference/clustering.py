"""Instances from centroid votes (paper §4): pixels of instance classes vote at ``pixel + offset``;
the votes of each predicted class are clustered; each pixel takes the cluster of its vote.

Methods (all parameters in pixels of the prediction's resolution):

* ``"grid"`` (default): DBSCAN on a grid. The votes are binned into square cells of side
  ``eps/4``; each occupied cell becomes one point at the mean of its votes, weighted by their
  number, and scikit-learn's DBSCAN clusters these points (``eps``, ``min_samples`` counted in
  votes through the weights); a vote takes its cell's cluster. The number of occupied cells is at
  most the number of votes and at most ``16·H·W/eps²`` (independent of the resolution, since
  ``eps`` scales with the width), and a cell's diagonal is 0.35·``eps``, so the clusters are
  DBSCAN's up to where a vote lies within its cell.
* ``"dbscan"``: scikit-learn's DBSCAN on the votes themselves, with ``eps`` and ``min_samples``.
* ``"optics"``: scikit-learn's OPTICS with its own reachability extraction, ξ: ``min_samples``
  votes per core point, reachability computed up to ``4·eps``, clusters delimited by a
  steepness ``xi = 0.3`` and holding at least ``min_cluster_size = 4·min_samples`` votes. These
  two were chosen on the synthetic city's validation split at 128×256 (``bench_clustering.py
  --xi-sweep 20``: ξ in 0.02–0.5 × 1, 2, 4, 8·``min_samples``, by the project's selection
  criterion over noisy and trained votes; see BENCHMARKS.md); smaller ones split an instance's
  vote cloud into many. On exact votes (all on one point) the reachability is 0 and ξ cannot
  delimit anything: OPTICS needs noisy votes. This is the paper's choice.
* ``"hdbscan"``: scikit-learn's HDBSCAN (``min_cluster_size`` = ``min_samples``).

The last three cost more than linearly in the votes (and DBSCAN's memory grows with the votes
within ``eps`` of each other, which at full resolution exhausts 24 GB): more than ``max_votes``
votes of a class are clustered from a random subset, and every other vote joins the cluster of
its nearest clustered vote.

Clusters of fewer than ``min_pixels`` pixels are dropped. Each instance's confidence is the mean
predicted probability of its class over its pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from uncertainty_mtl.data.labels import INSTANCE_TRAIN_IDS, id_to_train_id

__all__ = ["METHODS", "ClusterParams", "InstanceMap", "cluster_instances"]

METHODS = ("grid", "dbscan", "hdbscan", "optics")


@dataclass(frozen=True)
class ClusterParams:
    """Parameters in pixels; ``None`` scales a default with the image width, ``s = W / 128``:
    lengths with ``s``, counts of votes or pixels with the area, ``s²``."""

    eps: float | None = None  # neighbourhood radius of votes (grid, dbscan, optics' 4·eps)
    min_samples: int | None = None  # votes that make a core point; default 4·s²
    min_pixels: int | None = None  # drop smaller instances; default 4·s² (at least 3)
    max_votes: int = 5000  # optics/hdbscan/dbscan: cluster at most this many votes per class
    xi: float = 0.3  # optics: the ξ of its cluster extraction (chosen on the val split)
    min_cluster_size: int | None = None  # optics: votes in a cluster; default 4·min_samples

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
    params: ClusterParams,
    rng: np.random.Generator,
) -> NDArray[np.int64]:
    """Cluster label per point, -1 for noise (``eps``, ``min_samples``: resolved ``params``)."""
    from sklearn.cluster import DBSCAN, HDBSCAN, OPTICS

    if len(points) < min_samples:
        return np.full(len(points), -1)
    subset = None
    if len(points) > params.max_votes:
        subset = rng.choice(len(points), params.max_votes, replace=False)
    fit = points if subset is None else points[subset]
    min_cluster_size = params.min_cluster_size or 4 * min_samples
    if subset is not None:  # a sparser cloud: a core point needs proportionally fewer votes,
        # but never fewer than 4 (or the given number), and a cluster never fewer than 4 core
        # points' worth: the distance to the 1st or 2nd neighbour is too noisy a density for
        # OPTICS's reachability, whose ξ extraction then splits an instance into many
        share = len(subset) / len(points)
        min_samples = max(min(4, min_samples), round(min_samples * share))
        min_cluster_size = max(4 * min_samples, round(min_cluster_size * share))
    if method == "optics" and len(fit) < min_cluster_size:
        return np.full(len(points), -1)  # too few votes for one cluster
    if method == "dbscan":
        labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(fit)
    elif method == "optics":
        # Votes on one point (exact offsets) have a reachability of 0, which ξ divides by.
        with np.errstate(divide="ignore", invalid="ignore"):
            labels = OPTICS(
                min_samples=min_samples,
                cluster_method="xi",
                xi=params.xi,
                min_cluster_size=min_cluster_size,
                max_eps=4 * eps,
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


#: Cells per ``eps`` of the grid method: a vote is less than a cell's diagonal, ``eps·√2/4``
#: (0.35·eps), from the mean that stands for it.
_CELLS_PER_EPS = 4


def _grid_cluster(points: NDArray[np.float64], eps: float, min_samples: int) -> NDArray[np.int64]:
    """DBSCAN of the occupied cells of a grid of side ``eps/4``, each at the mean of its votes
    and weighted by their number; each vote takes its cell's label."""
    from sklearn.cluster import DBSCAN

    cell = eps / _CELLS_PER_EPS
    index = np.floor(points / cell).astype(np.int64)
    index -= index.min(axis=0)
    codes = index[:, 1] * (int(index[:, 0].max()) + 1) + index[:, 0]
    _, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    means = np.stack(
        [np.bincount(inverse, weights=points[:, k]) / counts for k in range(2)], axis=1
    )
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(means, sample_weight=counts)
    return np.asarray(labels, dtype=np.int64)[inverse]


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
            labels = _grid_cluster(votes, eps, min_samples)
        else:
            labels = _cluster_points(votes, method, eps, min_samples, params, rng)
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
