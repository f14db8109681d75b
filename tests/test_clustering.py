"""Instances from centroid votes: every method recovers hand-made instances."""

from __future__ import annotations

import numpy as np
import pytest

from uncertainty_mtl.data.targets import instance_targets
from uncertainty_mtl.inference.clustering import METHODS, ClusterParams, cluster_instances


def scene(h=64, w=128):
    ids = np.full((h, w), 7)
    ids[20:40, 10:40] = 26000  # a car
    ids[20:40, 40:70] = 26001  # another car, touching the first
    ids[10:50, 90:96] = 24000  # a person split in two by a pole (paper Figure 4)
    ids[10:50, 100:106] = 24000
    ids[50:58, 10:20] = 33000  # a bicycle
    semantic = np.select([ids >= 33000, ids >= 26000, ids == 24000], [18, 13, 11], 0)
    return ids, semantic


def recovered(ids, result):
    """{predicted id: set of ground-truth ids it covers}."""
    return {
        int(k): set(ids[result.ids == k].tolist()) for k in np.unique(result.ids[result.ids > 0])
    }


@pytest.mark.parametrize("noise", [0.0, 0.7])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_recovers_the_instances(method, noise):
    ids, semantic = scene()
    offset, mask = instance_targets(ids)
    offset = offset + np.random.default_rng(0).normal(0, noise, offset.shape) * mask
    result = cluster_instances(semantic, offset, method=method)
    groups = recovered(ids, result)
    assert sorted(map(sorted, groups.values())) == [[24000], [26000], [26001], [33000]]
    # Every instance pixel is assigned (exact or mildly noisy votes), and only those.
    assert ((result.ids > 0) == mask).mean() > 0.99
    assert {result.classes[k] for k in groups} == {11, 13, 18}


def test_votes_not_pixels_decide_so_adjacent_instances_stay_apart():
    ids, semantic = scene()
    offset, _ = instance_targets(ids)
    result = cluster_instances(semantic, offset, method="grid")
    left, right = result.ids[30, 39], result.ids[30, 40]  # neighbouring pixels of two cars
    assert left != right and left > 0 and right > 0


def two_cars(gap: float, noise: float, seed: int = 0):
    """Two cars side by side at 64×128 whose votes land ``gap`` px apart (each car's pixels
    vote for their own centre), with Gaussian noise on the votes."""
    ids = np.full((64, 128), 7)
    ids[20:36, 30:50] = 26000
    ids[20:36, 50:70] = 26001
    semantic = np.where(ids >= 26000, 13, 0)
    ys, xs = np.mgrid[0:64, 0:128].astype(np.float64)
    centre_x = np.where(ids == 26000, 50 - gap / 2, 50 + gap / 2)
    offsets = np.stack([centre_x - xs, 28.0 - ys]) * (ids >= 26000)
    rng = np.random.default_rng(seed)
    offsets = offsets + rng.normal(0, noise, offsets.shape) * (ids >= 26000)
    return ids, semantic, offsets


@pytest.mark.parametrize("noise", [0.0, 0.3])
@pytest.mark.parametrize("gap", [3.5, 4.0])
@pytest.mark.parametrize("method", ["grid", "dbscan"])
def test_cars_whose_centres_are_a_few_pixels_apart_stay_apart(method, gap, noise):
    """The grid method of before merged these (its peaks were suppressed over 5×5 px); at
    64×128, ``eps`` is 1.5 px."""
    ids, semantic, offsets = two_cars(gap, noise)
    result = cluster_instances(semantic, offsets, method=method)
    assert sorted(map(sorted, recovered(ids, result).values())) == [[26000], [26001]]


def test_grid_counts_votes_not_cells_towards_a_core_point():
    """``min_samples`` is a number of votes: 12 votes on one point make an instance at
    ``min_samples=10``, 8 votes do not (a cell's votes weigh as many points)."""
    ids = np.zeros((64, 128), dtype=np.int64)
    ids[10, 10:22] = 1  # 12 pixels voting for one point
    ids[40, 10:18] = 2  # 8 pixels voting for another
    semantic = np.where(ids > 0, 13, 0)
    ys, xs = np.mgrid[0:64, 0:128].astype(np.float64)
    target_x = np.where(ids == 1, 16.0, 14.0)
    target_y = np.where(ids == 1, 10.0, 40.0)
    offsets = np.stack([target_x - xs, target_y - ys]) * (ids > 0)
    params = ClusterParams(min_samples=10, min_pixels=1)
    for method in ("grid", "dbscan"):
        result = cluster_instances(semantic, offsets, method=method, params=params)
        assert recovered(ids, result) == {1: {1}}, method


def test_grid_equals_dbscan_on_separated_vote_clouds():
    """Clusters farther apart than a few ``eps``: grid and DBSCAN find the same partition
    (the grid moves a vote by less than a cell's diagonal, 0.35·``eps``)."""
    rng = np.random.default_rng(3)
    ids = np.zeros((64, 128), dtype=np.int64)
    ids[8:56, 8:120] = rng.integers(1, 7, (48, 112))
    semantic = np.where(ids > 0, 13, 0)
    centres = {k: (15 + 18 * k, 10 + 8 * (k % 3)) for k in range(1, 7)}
    ys, xs = np.mgrid[0:64, 0:128].astype(np.float64)
    cx = np.vectorize(lambda k: centres[k][0] if k else 0.0)(ids)
    cy = np.vectorize(lambda k: centres[k][1] if k else 0.0)(ids)
    offsets = (np.stack([cx - xs, cy - ys]) + rng.normal(0, 0.6, (2, 64, 128))) * (ids > 0)
    grid = cluster_instances(semantic, offsets, method="grid").ids
    dbscan = cluster_instances(semantic, offsets, method="dbscan").ids
    pairs = set(zip(grid.ravel().tolist(), dbscan.ravel().tolist(), strict=True))
    assert len(pairs) == len(set(grid.ravel().tolist())) == len(set(dbscan.ravel().tolist()))
    assert len(pairs) == 7  # six instances and the background


def test_optics_is_optics_with_its_xi_extraction(monkeypatch):
    """``optics`` runs scikit-learn's OPTICS with the ξ extraction at ``ClusterParams.xi``,
    not the DBSCAN extraction (which would be DBSCAN)."""
    import sklearn.cluster

    seen = []
    real = sklearn.cluster.OPTICS

    def recording(**kwargs):
        seen.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(sklearn.cluster, "OPTICS", recording)
    ids, semantic = scene()
    offset, mask = instance_targets(ids)
    offset = offset + np.random.default_rng(0).normal(0, 0.7, offset.shape) * mask
    cluster_instances(semantic, offset, method="optics", params=ClusterParams(xi=0.2))
    assert seen and all(k["cluster_method"] == "xi" and k["xi"] == 0.2 for k in seen)


def test_small_clusters_are_dropped_and_confidence_is_the_mean_probability():
    ids, semantic = scene()
    offset, _ = instance_targets(ids)
    probabilities = np.full((19, *ids.shape), 0.01)
    probabilities[13] = 0.6
    probabilities[11] = 0.8
    probabilities[18] = 0.5
    result = cluster_instances(
        semantic,
        offset,
        probabilities=probabilities,
        method="grid",
        params=ClusterParams(min_pixels=100),
    )
    assert sorted(result.classes.values()) == [11, 13, 13]  # the 80-pixel bicycle is gone
    for k, train_id in result.classes.items():
        assert result.confidences[k] == pytest.approx(float(probabilities[train_id, 0, 0]))


def test_cityscapes_ids_use_label_ids():
    ids, semantic = scene()
    offset, _ = instance_targets(ids)
    result = cluster_instances(semantic, offset, method="grid")
    encoded = result.cityscapes_ids()
    assert set(np.unique(encoded[encoded > 0]) // 1000) == {24, 26, 33}
    assert (encoded[ids == 7] == 0).all()


def test_optics_on_a_subset_of_votes_still_recovers_the_instances():
    ids, semantic = scene()
    offset, mask = instance_targets(ids)
    offset = offset + np.random.default_rng(1).normal(0, 0.5, offset.shape) * mask
    result = cluster_instances(
        semantic, offset, method="optics", params=ClusterParams(max_votes=300)
    )
    assert sorted(map(sorted, recovered(ids, result).values())) == [
        [24000],
        [26000],
        [26001],
        [33000],
    ]


def test_errors():
    _, semantic = scene()
    with pytest.raises(ValueError, match="unknown clustering method 'kmeans'"):
        cluster_instances(semantic, np.zeros((2, 64, 128)), method="kmeans")
    with pytest.raises(ValueError, match=r"offsets must be \[2, 64, 128\]"):
        cluster_instances(semantic, np.zeros((2, 32, 64)))


def test_the_cli_offers_every_method():
    from uncertainty_mtl.cli import CLUSTER_METHODS

    assert tuple(CLUSTER_METHODS) == METHODS
