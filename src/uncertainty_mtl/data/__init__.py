"""Data: scene data sets (Cityscapes layout), the small image sets of the two-task study and QM9.

``from uncertainty_mtl.data import CityscapesScenes`` works; it is imported on first use, so that
the two-task study's readers do not load the scene stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uncertainty_mtl.data.cityscapes import CityscapesScenes, SceneDataError

__all__ = ["CityscapesScenes", "SceneDataError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from uncertainty_mtl.data import cityscapes

        return getattr(cityscapes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
