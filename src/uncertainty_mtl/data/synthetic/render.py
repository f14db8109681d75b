"""Drawing one frame: surfaces into a depth-buffered canvas, then sky, haze and noise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from uncertainty_mtl.data.synthetic.layout import (
    INSTANCE_CLASSES,
    Camera,
    CityStyle,
    FacadeRow,
    L,
    SceneObject,
    SynthFrame,
    sample_facades,
    sample_objects,
)
from uncertainty_mtl.data.synthetic.noise import label_noise, stereo_noise, value_noise
from uncertainty_mtl.data.synthetic.shapes import object_shape
from uncertainty_mtl.data.targets import encode_disparity


def facade_texture(
    m: NDArray[np.bool_],
    *,
    along: NDArray[np.float64],
    y_up: NDArray[np.float64],
    labels: NDArray[np.uint8],
    tint: NDArray[np.float64],
    salt: int,
) -> NDArray[np.float64]:
    """Colours of facade pixels ``m``: windows on a 2 m × 3.2 m grid, leaves, fence boards."""
    a, y, k = along[m], y_up[m], labels[m]
    windows = ((a * 0.5) % 1.0 < 0.55) & ((y / 3.2) % 1.0 > 0.35) & (y > 3)
    rgb: NDArray[np.float64] = tint[m] * (1 - 0.45 * windows[:, None])
    rgb += 12 * (value_noise(a * 2, y * 2, salt)[:, None] - 0.5)
    veg = k == L["vegetation"]
    leaves = value_noise(a[veg] * 3, y[veg] * 3, 17)
    rgb[veg] = np.stack([50 + 40 * leaves, 100 + 50 * leaves, 35 + 20 * leaves], 1)
    rgb[k == L["fence"]] = (150, 140, 120)
    return rgb


@dataclass
class View:
    """The camera and the ray through every pixel: direction ``(ray_x, ray_y, 1)``."""

    cam: Camera
    u: NDArray[np.float64]
    v: NDArray[np.float64]
    ray_x: NDArray[np.float64]
    ray_y: NDArray[np.float64]
    shift: float  # the camera's place across the road

    @property
    def size(self) -> tuple[int, int]:
        return self.u.shape[0], self.u.shape[1]


@dataclass
class Street:
    """The street's cross-section and length."""

    road: float
    sidewalk: float
    z_end: float
    facade_x: float


@dataclass
class Canvas:
    """What the frame holds so far: per pixel the nearest depth, its label and colour."""

    depth: NDArray[np.float64]
    labels: NDArray[np.uint8]
    colour: NDArray[np.float64]

    def paint(
        self,
        sel: NDArray[np.bool_],
        z: NDArray[np.float64],
        label: Any,
        texture: Callable[[NDArray[np.bool_]], Any],
    ) -> None:
        """Draws a surface where it is nearer than what is there already; ``texture(pixels)``
        gives the colours of the pixels it wins (textures are computed there only)."""
        closer = sel & (z < self.depth)
        if not closer.any():
            return
        self.depth[closer] = z[closer]
        self.labels[closer] = label[closer] if np.ndim(label) == 2 else label
        self.colour[closer] = texture(closer)


def _asphalt(
    m: NDArray[np.bool_],
    gx: NDArray[np.float64],
    gz: NDArray[np.float64],
    style: CityStyle,
    road: float,
) -> NDArray[np.float64]:
    x, z = gx[m], gz[m]
    grey = (
        style.asphalt
        + 30 * (value_noise(x * 3, z * 3, 11) - 0.5)
        + 12 * (value_noise(x * 0.4, z * 0.4, 12) - 0.5)
    )
    # A dashed centre line and solid edge lines, painted in world coordinates.
    lines = ((np.abs(x) < 0.07) & ((z % 9.0) < 4.5)) | (np.abs(np.abs(x) - (road - 0.25)) < 0.08)
    grey[lines] = 225
    return np.repeat(grey[:, None], 3, axis=1)


def _paving(
    m: NDArray[np.bool_], gx: NDArray[np.float64], gz: NDArray[np.float64], style: CityStyle
) -> NDArray[np.float64]:
    x, z = gx[m], gz[m]
    joints = ((np.abs(x * 2) % 1.0 < 0.06) | (z * 2 % 1.0 < 0.06)).astype(float)
    return style.paving[None] * (1 - 0.25 * joints[:, None]) + 15 * (
        value_noise(x * 5, z * 5, 13)[:, None] - 0.5
    )


def _grass(
    m: NDArray[np.bool_], gx: NDArray[np.float64], gz: NDArray[np.float64]
) -> NDArray[np.float64]:
    x, z = gx[m], gz[m]
    return np.stack(
        [
            70 + 30 * value_noise(x * 4, z * 4, 14),
            120 + 40 * value_noise(x * 4, z * 4, 15),
            np.full(x.shape, 50.0),
        ],
        1,
    )


def draw_ground(canvas: Canvas, view: View, street: Street, style: CityStyle) -> None:
    """Road, sidewalk and terrain, by lateral position on the ground plane."""
    with np.errstate(divide="ignore"):
        z_ground = np.where(view.ray_y > 1e-9, view.cam.height / view.ray_y, np.inf)
    ground = np.isfinite(z_ground) & (z_ground < street.z_end + 60)
    gz = np.where(ground, z_ground, 0.0)
    gx = view.ray_x * gz + view.shift  # lateral position, relative to the road's centre
    road, walk = street.road, street.sidewalk
    is_road = ground & (np.abs(gx) < road) & (gz < street.z_end)
    is_walk = ground & ~is_road & (np.abs(gx) < road + walk) & (gz < street.z_end)
    is_terrain = ground & ~is_road & ~is_walk
    canvas.paint(
        is_road, z_ground, L["road"], partial(_asphalt, gx=gx, gz=gz, style=style, road=road)
    )
    canvas.paint(is_walk, z_ground, L["sidewalk"], partial(_paving, gx=gx, gz=gz, style=style))
    canvas.paint(is_terrain, z_ground, L["terrain"], partial(_grass, gx=gx, gz=gz))


def _facade_hit(
    view: View, plane_x: float, side: int
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(side * view.ray_x > 1e-9, plane_x / view.ray_x, np.inf)
    return z, np.isfinite(z) & (z > 0)


def draw_facades(
    canvas: Canvas, view: View, street: Street, segments: dict[int, FacadeRow]
) -> None:
    """Facades along each side: the front row by segment, a row of buildings behind it."""
    for side in (-1, 1):
        row = segments[side]
        for plane_x, back in (
            (side * street.facade_x - view.shift, False),
            (side * (street.facade_x + 14) - view.shift, True),
        ):
            z, hit = _facade_hit(view, plane_x, side)
            hit &= z < street.z_end
            z = np.where(hit, z, np.inf)
            along = np.where(hit, z, 0.0)
            y_up = view.cam.height - view.ray_y * along
            seg = np.clip(
                np.searchsorted(row.bounds, along, side="right") - 1, 0, len(row.labels) - 1
            )
            if back:
                kind_label = np.full(view.size, L["building"], dtype=np.uint8)
            else:
                kind_label = row.labels[seg]
            top = 30.0 if back else row.heights[seg]
            inside = hit & (y_up >= 0) & (y_up < top)
            # Fences are see-through between their boards.
            inside &= (kind_label != L["fence"]) | ((along * 4) % 1.0 < 0.5)
            tint = row.tints[seg] * (0.7 if back else 1.0)
            texture = partial(
                facade_texture,
                along=along,
                y_up=y_up,
                labels=kind_label,
                tint=tint,
                salt=16 + side,
            )
            canvas.paint(inside, z, kind_label, texture)


def _end_texture(
    m: NDArray[np.bool_],
    x_end: NDArray[np.float64],
    y_end: NDArray[np.float64],
    style: CityStyle,
) -> NDArray[np.float64]:
    windows = ((x_end[m] * 0.5) % 1.0 < 0.5) & ((y_end[m] / 3.2) % 1.0 > 0.4)
    rgb: NDArray[np.float64] = style.facade_palette[0] * 0.8 * (1 - 0.3 * windows)[:, None]
    return rgb


def draw_end_facade(
    canvas: Canvas, view: View, street: Street, style: CityStyle, height: float
) -> None:
    """The frontal facade of ``height`` metres where the street ends."""
    y_end = view.cam.height - view.ray_y * street.z_end
    x_end = view.ray_x * street.z_end + view.shift
    end = (y_end >= 0) & (y_end < height) & (np.abs(x_end) < street.facade_x + 14)
    texture = partial(_end_texture, x_end=x_end, y_end=y_end, style=style)
    canvas.paint(end, np.full(view.size, float(street.z_end)), L["building"], texture)


def draw_objects(canvas: Canvas, view: View, objects: list[SceneObject]) -> NDArray[np.int32]:
    """Objects, each a plane facing the camera, into the depth buffer; returns the instance
    ids (``labelId*1000 + k`` on instances, the label id elsewhere)."""
    cam, f = view.cam, view.cam.f
    H, W = view.size
    counters = dict.fromkeys(INSTANCE_CLASSES, 0)
    instance_ids = canvas.labels.astype(np.int32)
    for obj in objects:
        if obj.kind in INSTANCE_CLASSES:
            obj.instance = L[obj.kind] * 1000 + counters[obj.kind]
            counters[obj.kind] += 1
        xc = obj.x - view.shift
        half = obj.width / 2 + (0.6 if obj.kind == "pole" else 0.0)
        left = int(np.floor(cam.cx + f * (xc - half) / obj.z))
        right = int(np.ceil(cam.cx + f * (xc + half) / obj.z)) + 1
        top = int(np.floor(cam.cy + f * (cam.height - obj.height - 0.1) / obj.z))
        bottom = int(np.ceil(cam.cy + f * cam.height / obj.z)) + 1
        top, bottom, left, right = max(top, 0), min(bottom, H), max(left, 0), min(right, W)
        obj.bbox = (top, bottom, left, right)
        if top >= bottom or left >= right:
            obj.mask = np.zeros((0, 0), dtype=bool)
            continue
        # Metric coordinates of the pixel centres on the object's plane.
        mx = (view.u[top:bottom, left:right] - cam.cx) * obj.z / f - xc
        my = cam.height - (view.v[top:bottom, left:right] - cam.cy) * obj.z / f
        mask, obj_labels, obj_rgb = object_shape(obj, mx, my)
        mask &= my >= 0
        obj.mask = mask
        window = (slice(top, bottom), slice(left, right))
        visible = mask & (obj.z < canvas.depth[window])
        canvas.depth[window][visible] = obj.z
        canvas.labels[window][visible] = obj_labels[visible]
        shade = 0.85 + 0.15 * np.clip(my / max(obj.height, 1e-6), 0, 1)
        canvas.colour[window][visible] = (obj_rgb * shade[..., None])[visible]
        ids = np.where(obj.instance > 0, obj.instance, obj_labels.astype(np.int32))
        instance_ids[window][visible] = ids[visible]
    background = ~np.isin(canvas.labels, [L[k] for k in INSTANCE_CLASSES])
    instance_ids[background] = canvas.labels[background]
    return instance_ids


def draw_sky_haze_bonnet(
    canvas: Canvas, view: View, style: CityStyle, instance_ids: NDArray[np.int32]
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Sky, haze that grows with depth, the ego vehicle's bonnet; returns the sky and bonnet
    masks."""
    cam, u, v = view.cam, view.u, view.v
    H, W = view.size
    depth, labels = canvas.depth, canvas.labels
    sky = ~np.isfinite(depth)
    gradient = np.clip((cam.cy - v[sky]) / max(cam.cy, 1.0), 0, 1)[:, None]
    haze_rgb = np.array([205.0, 210.0, 215.0])
    clouds = value_noise(u[sky] / 40, v[sky] / 15, 18)[:, None]
    canvas.colour[sky] = haze_rgb * (1 - gradient) + style.sky_tint * gradient + 25 * (clouds - 0.5)
    haze = 1 - np.exp(-np.where(sky, 0.0, depth) / style.haze_distance)
    canvas.colour = canvas.colour * (1 - haze[..., None]) + haze_rgb * haze[..., None]
    bonnet_rows = 0.07 * H
    bonnet = v > H - 1 - bonnet_rows * (1 - 0.6 * ((u - cam.cx) / (W / 2)) ** 2)
    labels[bonnet] = L["ego vehicle"]
    instance_ids[bonnet] = L["ego vehicle"]
    canvas.colour[bonnet] = (
        np.array([35.0, 35, 40]) + 40 * np.clip((H - 1 - v[bonnet]) / bonnet_rows, 0, 1)[:, None]
    )
    depth[bonnet] = np.inf
    return sky, bonnet


def render_frame(
    style: CityStyle, rng: np.random.Generator, height: int, width: int, *, noise: bool = True
) -> SynthFrame:
    """Draws one frame of a city."""
    H, W = height, width
    f = 1.105 * W  # Cityscapes: fx = 2262 at a width of 2048
    cam = Camera(
        f=f,
        cx=(W - 1) / 2 + rng.normal(0, 0.01 * W),
        cy=H * rng.uniform(0.43, 0.48),
        baseline=0.22,
        height=rng.uniform(1.15, 1.3),
    )
    road = rng.uniform(*style.road_half_width)
    sidewalk = rng.uniform(*style.sidewalk_width)
    shift = rng.uniform(-0.45, 0.45) * road
    z_end = rng.uniform(60, 160)
    v = np.arange(H, dtype=np.float64)[:, None] + np.zeros((1, W))
    u = np.zeros((H, 1)) + np.arange(W, dtype=np.float64)[None, :]
    view = View(cam, u, v, (u - cam.cx) / f, (v - cam.cy) / f, shift)
    canvas = Canvas(
        np.full((H, W), np.inf), np.full((H, W), L["sky"], dtype=np.uint8), np.zeros((H, W, 3))
    )
    street = Street(road, sidewalk, z_end, road + sidewalk + rng.uniform(0.0, 1.5))
    segments = {side: sample_facades(rng, style, z_end) for side in (-1, 1)}

    draw_ground(canvas, view, street, style)
    draw_facades(canvas, view, street, segments)
    draw_end_facade(canvas, view, street, style, rng.uniform(12, 30))
    objects = sample_objects(rng, style, road, sidewalk, z_end)
    instance_ids = draw_objects(canvas, view, objects)
    sky, bonnet = draw_sky_haze_bonnet(canvas, view, style, instance_ids)

    depth, labels, colour = canvas.depth, canvas.labels, canvas.colour
    finite = np.isfinite(depth)
    disparity = np.where(finite, f * cam.baseline / np.where(finite, depth, 1.0), 0.0)
    valid = ~sky & ~bonnet
    clean = disparity.copy()
    if noise:
        labels, instance_ids = label_noise(rng, labels, instance_ids)
        disparity, valid = stereo_noise(rng, disparity, valid, u)
        colour = colour + rng.normal(0, 3.0, colour.shape)
    image = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    return SynthFrame(
        image=image,
        label_ids=labels,
        instance_ids=instance_ids,
        disparity_png=encode_disparity(disparity, valid),
        camera=cam,
        objects=objects,
        clean_disparity=clean,
    )
