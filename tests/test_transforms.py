"""Joint transforms keep every instance pixel voting for its centroid, and depth consistent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uncertainty_mtl.data import transforms as TF
from uncertainty_mtl.data.cityscapes import IMAGENET_MEAN
from uncertainty_mtl.data.targets import instance_targets


def scene(h=24, w=36):
    """Two cars and a person (in two parts), road below, with per-pixel disparity."""
    ids = np.full((h, w), 7, dtype=np.int64)
    ids[:6] = 23
    ids[8:14, 3:12] = 26000
    ids[10:20, 15:30] = 26001
    ids[5:9, 31:34] = 24000
    ids[15:18, 31:34] = 24000
    offset, mask = instance_targets(ids)
    semantic = np.where(ids >= 26000, 13, np.where(ids == 24000, 11, 0))
    rows = np.arange(h, dtype=np.float32)[:, None].repeat(w, 1)
    depth = rows * 0.25 + np.arange(w, dtype=np.float32)[None] * 0.01
    targets = {
        "semantic": torch.from_numpy(semantic).long(),
        "instance_offset": torch.from_numpy(offset),
        "instance_mask": torch.from_numpy(mask),
        "inverse_depth": torch.from_numpy(depth),
        "depth_mask": torch.ones(h, w, dtype=torch.bool),
    }
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
    return image, targets, ids


def centroids(ids):
    out = {}
    for i in np.unique(ids[ids >= 1000]):
        ys, xs = np.nonzero(ids == i)
        out[int(i)] = (xs.mean(), ys.mean())
    return out


def votes(targets):
    """(x, y) that each instance pixel votes for."""
    offset, mask = targets["instance_offset"], targets["instance_mask"]
    h, w = mask.shape
    xs = torch.arange(w).view(1, w).expand(h, w)
    ys = torch.arange(h).view(h, 1).expand(h, w)
    return (xs + offset[0])[mask], (ys + offset[1])[mask]


def test_flip_negates_x_offsets_and_votes_hit_the_mirrored_centroid():
    image, targets, ids = scene()
    w = ids.shape[1]
    flipped_image, flipped = TF.horizontal_flip(image, targets)
    torch.testing.assert_close(flipped_image, image.flip(-1))
    torch.testing.assert_close(
        flipped["instance_offset"][0], -targets["instance_offset"][0].flip(-1)
    )
    vx, vy = votes(flipped)
    flipped_ids = ids[:, ::-1]
    expected = centroids(ids)
    per_pixel = flipped_ids[flipped["instance_mask"].numpy()]
    np.testing.assert_allclose(vx.numpy(), [w - 1 - expected[i][0] for i in per_pixel], atol=1e-5)
    np.testing.assert_allclose(vy.numpy(), [expected[i][1] for i in per_pixel], atol=1e-5)
    torch.testing.assert_close(flipped["inverse_depth"], targets["inverse_depth"].flip(-1))


@pytest.mark.parametrize("size", [(48, 72), (12, 18), (30, 27), (17, 50)])
def test_resize_keeps_votes_on_the_scaled_centroid_and_scales_disparity(size):
    image, targets, ids = scene()
    h, w = ids.shape
    ky, kx = size[0] / h, size[1] / w
    out_image, out = TF.resize(image, targets, size)
    assert out_image.shape == (3, *size)
    for key, value in out.items():
        assert value.shape[-2:] == size, key
        assert value.dtype == targets[key].dtype, key
    # Nearest, centre-aligned: each output pixel copies the source pixel under its centre.
    rows = np.minimum(((np.arange(size[0]) + 0.5) / ky).astype(int), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) / kx).astype(int), w - 1)
    source_ids = ids[rows][:, cols]
    np.testing.assert_array_equal(out["instance_mask"].numpy(), source_ids >= 1000)
    expected = centroids(ids)
    vx, vy = votes(out)
    per_pixel = source_ids[out["instance_mask"].numpy()]
    np.testing.assert_allclose(
        vx.numpy(), [(expected[i][0] + 0.5) * kx - 0.5 for i in per_pixel], atol=1e-4
    )
    np.testing.assert_allclose(
        vy.numpy(), [(expected[i][1] + 0.5) * ky - 0.5 for i in per_pixel], atol=1e-4
    )
    source_depth = targets["inverse_depth"].numpy()[rows][:, cols]
    np.testing.assert_allclose(out["inverse_depth"].numpy(), source_depth * kx, rtol=1e-6)
    assert set(out["semantic"].unique().tolist()) <= {0, 11, 13}


def test_crop_with_padding():
    image, targets, ids = scene()
    out_image, out = TF.crop(image, targets, top=-2, left=30, height=10, width=10)
    assert out_image.shape == (3, 10, 10)
    # Rows -2, -1 and columns 36..39 lie outside: padded.
    assert (out["semantic"][:2] == 255).all() and (out["semantic"][:, 6:] == 255).all()
    assert not out["instance_mask"][:2].any() and not out["depth_mask"][:, 6:].any()
    assert (out["inverse_depth"][:, 6:] == 0).all()
    torch.testing.assert_close(out_image[:, 0, 0], torch.tensor(IMAGENET_MEAN))
    torch.testing.assert_close(out_image[:, 2:, :6], image[:, :8, 30:36])
    torch.testing.assert_close(
        out["instance_offset"][:, 2:, :6], targets["instance_offset"][:, :8, 30:36]
    )
    vx, vy = votes(out)
    expected = centroids(ids)[24000]
    np.testing.assert_allclose(vx.numpy(), expected[0] - 30, atol=1e-5)
    np.testing.assert_allclose(vy.numpy(), expected[1] + 2, atol=1e-5)


def test_random_pipeline_keeps_every_vote_on_its_instance_centroid():
    """Scale, crop and flip in sequence: every instance pixel still votes for the centroid of the
    instance it shows, transformed like its pixels: all of an instance's pixels vote for one
    point, and for an instance the crop left whole, that point is the mean of its pixels (to the
    nearest-neighbour sampling's 1 px)."""
    torch.manual_seed(1)
    pipeline = TF.Compose(
        [TF.RandomScale(0.7, 2.0), TF.RandomCrop((20, 20)), TF.RandomHorizontalFlip(0.5)]
    )
    image, targets, ids = scene()
    checked, whole = 0, 0
    for _ in range(20):
        # The instance ids go through the same geometry as a semantic-like map (nearest only).
        labelled = dict(targets, semantic=torch.from_numpy(ids))
        _, out = pipeline(image, labelled)
        mask = out["instance_mask"]
        vx, vy = votes(out)
        instance = out["semantic"][mask]
        h, w = mask.shape
        ys, xs = torch.nonzero(mask, as_tuple=True)
        for i in instance.unique().tolist():
            chosen = instance == i
            checked += 1
            assert float(vx[chosen].max() - vx[chosen].min()) < 1e-3
            assert float(vy[chosen].max() - vy[chosen].min()) < 1e-3
            x, y = xs[chosen].float(), ys[chosen].float()
            if x.min() > 0 and y.min() > 0 and x.max() < w - 1 and y.max() < h - 1:
                whole += 1  # not cut by the crop: its centroid is its pixels' mean
                assert abs(float(vx[chosen][0] - x.mean())) < 1.0, i
                assert abs(float(vy[chosen][0] - y.mean())) < 1.0, i
    # Not vacuous: instances were seen, and some whole.
    assert checked >= 20 and whole >= 5, (checked, whole)


def test_random_scale_rejects_bad_range():
    with pytest.raises(ValueError, match="min_scale"):
        TF.RandomScale(2.0, 1.0)
