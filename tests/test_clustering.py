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
