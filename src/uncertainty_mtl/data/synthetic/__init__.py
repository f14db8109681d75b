"""A procedural city of road scenes, written in the Cityscapes layout and encodings.

Geometry is exact by construction. A pinhole stereo camera (focal length ``f`` pixels, baseline
``B`` metres) looks along a straight street at height ``h`` above a flat ground. In camera
coordinates (X right, Y down, Z forward) a pixel ``(u, v)`` sees:

* the ground (road, sidewalk, terrain) where ``v > cy``: ``Z = f·h / (v - cy)``, so its disparity
  ``f·B / Z = B·(v - cy) / h`` is linear in the row;
* facades: vertical planes ``X = const`` along the street, split into buildings, walls, fences and
  vegetation of their own heights; a second row of buildings behind; a frontal facade where the
  street ends;
* objects standing on the ground at depth ``Z`` (cars, trucks, buses, persons, riders on bicycles,
  parked bicycles, poles with signs and traffic lights, trees), drawn as planes facing the camera:
  an object of real height ``H`` spans ``f·H / Z`` rows up from its foot row ``cy + f·h / Z``, and
  its disparity ``f·B / Z`` equals the road's at that row. A depth buffer makes nearer surfaces
  hide farther ones;
* sky elsewhere, and the ego vehicle's bonnet at the bottom (label "ego vehicle", ignored).

Appearance carries cues for every task: class colours and shapes with per-object variation;
textures sampled in world coordinates (asphalt, lane markings, paving, windows), so their scale
follows depth; haze that grows with distance; sensor noise. Each task has its own noise: label
noise along boundaries (the semantic and instance maps together), stereo-like disparity noise
that grows with disparity, mismatches, and holes (``p = 0``) where a stereo matcher fails:
regions occluded in the right view, blobs of weak texture and the sky.

Frames are deterministic: frame ``i`` of city ``c`` of a split is drawn from a generator seeded
by ``(seed, split, c, i)``, so the same seed gives the same bytes on any number of workers. The
train, val and test splits have their own cities, each with its own style.
"""

from uncertainty_mtl.data.synthetic.layout import (
    CITIES,
    SPLIT_SIZES,
    SynthConfig,
    SynthFrame,
    city_style,
)
from uncertainty_mtl.data.synthetic.render import render_frame
from uncertainty_mtl.data.synthetic.writer import generate_city, is_complete, read_config

__all__ = [
    "CITIES",
    "SPLIT_SIZES",
    "SynthConfig",
    "SynthFrame",
    "city_style",
    "generate_city",
    "is_complete",
    "read_config",
    "render_frame",
]
