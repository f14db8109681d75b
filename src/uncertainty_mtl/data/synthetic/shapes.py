"""What each kind of object looks like: its silhouette, its parts' labels and colours, on a
grid of metric coordinates of its plane."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from uncertainty_mtl.data.synthetic.layout import L, SceneObject
from uncertainty_mtl.data.synthetic.noise import value_noise


def ellipse(x: Any, y: Any, cx: float, cy: float, rx: float, ry: float) -> Any:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1


def object_shape(
    obj: SceneObject, x: NDArray[np.float64], y: NDArray[np.float64]
) -> tuple[NDArray[np.bool_], NDArray[np.uint8], NDArray[np.float64]]:
    """The object's pixels, their label ids and colours, on a grid of metric coordinates."""
    w, h = obj.width, obj.height
    labels = np.full(x.shape, L[obj.kind] if obj.kind in L else L["vegetation"], dtype=np.uint8)
    colour = np.broadcast_to(obj.colour, (*x.shape, 3)).copy()
    if obj.kind in ("car", "truck", "bus"):
        body_top = {"car": 0.58, "truck": 0.95, "bus": 0.95}[obj.kind] * h
        wheel_r = 0.33 if obj.kind == "car" else 0.5
        body = (np.abs(x) < w / 2) & (y > 0.18) & (y < body_top)
        taper = 0.18 * w * (y - body_top) / max(h - body_top, 1e-6)
        cabin = (np.abs(x) < w / 2 - 0.08 - taper) & (y >= body_top) & (y < h)
        wheels = ellipse(np.abs(x), y, w / 2 - 0.45, wheel_r, 0.24, wheel_r)
        mask = body | cabin | wheels
        window = (np.abs(x) < w / 2 - 0.2 - taper) & (y > body_top + 0.06) & (y < h - 0.06)
        if obj.kind != "car":
            window = (np.abs(x) < w / 2 - 0.15) & (y > 0.55 * h) & (y < 0.85 * h)
        colour[window] = (40, 50, 65)
        colour[wheels & ~body] = (20, 20, 20)
        lights = (np.abs(np.abs(x) - (w / 2 - 0.2)) < 0.12) & (np.abs(y - 0.75 * body_top) < 0.07)
        colour[lights & body] = (200, 30, 30)
        plate = (np.abs(x) < 0.26) & (np.abs(y - 0.45 * body_top) < 0.06)
        colour[plate & body] = (235, 235, 225)
    elif obj.kind in ("person", "rider"):
        base = 0.55 if obj.kind == "rider" else 0.0
        hh = h - base
        head = ellipse(x, y, 0.0, h - 0.11, 0.1, 0.12)
        torso = (np.abs(x) < 0.19) & (y > base + 0.47 * hh) & (y < h - 0.2)
        arms = (np.abs(x) > 0.16) & (np.abs(x) < 0.25) & (y > base + 0.5 * hh) & (y < h - 0.25)
        legs = (np.abs(np.abs(x) - 0.09) < 0.07) & (y > base) & (y <= base + 0.47 * hh)
        mask = head | torso | arms | legs
        colour[legs] = obj.extra["legs"]
        colour[head] = obj.extra["skin"]
    elif obj.kind == "bicycle":
        r = 0.34 * h / 1.05
        dist = [np.hypot(x - cx, y - r) for cx in (-0.55 * w / 1.75, 0.55 * w / 1.75)]
        wheels = (np.abs(dist[0] - r) < 0.045) | (np.abs(dist[1] - r) < 0.045)
        bar = (np.abs(y - (0.35 * x + r + 0.25)) < 0.04) & (np.abs(x) < 0.45)
        tube = (np.abs(x - 0.05) < 0.04) & (y > r) & (y < h * 0.85)
        bars = (np.abs(y - 0.95 * h) < 0.05) & (np.abs(x - 0.45) < 0.22)
        mask = wheels | bar | tube | bars
        colour[wheels] = (25, 25, 25)
    elif obj.kind == "pole":
        mask = (np.abs(x) < w / 2) & (y < h)
        sign, side = obj.extra["sign"], obj.extra["side"]
        if sign is not None:
            sx, sy = side * 0.35, h - 0.5
            if sign == "light":
                box = (np.abs(x - sx) < 0.17) & (np.abs(y - sy) < 0.45)
                labels[box] = L["traffic light"]
                colour[box] = (35, 35, 35)
                for k, lamp in enumerate(((220, 30, 30), (230, 180, 20), (30, 200, 60))):
                    colour[box & ellipse(x, y, sx, sy + 0.28 - 0.28 * k, 0.1, 0.1)] = lamp
            else:
                dx, dy = np.abs(x - sx), y - sy
                if obj.extra["shape"] == "circle":
                    box = dx**2 + dy**2 < 0.4**2
                elif obj.extra["shape"] == "square":
                    box = (dx < 0.38) & (np.abs(dy) < 0.38)
                else:
                    box = (dy > -0.36) & (dy < 0.4 - 1.7 * dx)
                labels[box] = L["traffic sign"]
                colour[box] = obj.extra["sign_colour"]
                colour[box & (dx**2 + dy**2 < 0.15**2)] = (235, 235, 235)
            mask = mask | box
    else:  # tree: trunk and a ragged crown, all "vegetation" as in Cityscapes
        trunk_h = obj.extra["trunk"]
        trunk = (np.abs(x) < 0.15) & (y < trunk_h + 0.5)
        angle = np.arctan2(y - (trunk_h + (h - trunk_h) / 2), x)
        ragged = 0.8 + 0.35 * value_noise(angle * 3.0 + 10, np.zeros_like(angle), obj.extra["salt"])
        crown = ellipse(
            x / ragged,
            (y - trunk_h) / ragged - (h - trunk_h) / 2 * (1 / ragged - 1),
            0.0,
            (h - trunk_h) / 2,
            w / 2,
            (h - trunk_h) / 2,
        )
        mask = trunk | crown
        leaves = value_noise(x * 6, y * 6, obj.extra["salt"]) - 0.5
        colour = colour + leaves[..., None] * np.array([40, 60, 30])
        colour[trunk & ~crown] = (90, 65, 45)
    return mask, labels, colour
