"""Renderer name -> its motion layout, for the stages that compose renderers with data and training.

A shard records the name of its layout; `data.layout` names the one a training run reads (kdtalker/configs/data/).
"""

from __future__ import annotations

from kdtalker.errors import KDTalkerError
from kdtalker.facevid2vid.layout import FACEVID2VID_LAYOUT
from kdtalker.motion_layout import MotionLayout
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT

LAYOUTS: dict[str, MotionLayout] = {layout.name: layout for layout in (LIVEPORTRAIT_LAYOUT, FACEVID2VID_LAYOUT)}


def layout_named(name: str, what: str) -> MotionLayout:
    """'liveportrait' | 'facevid2vid' -> its MotionLayout; KDTalkerError naming `what` (a key or file) otherwise."""
    try:
        return LAYOUTS[str(name)]
    except KeyError:
        raise KDTalkerError(f"{what}: unknown motion layout {name!r} (one of {', '.join(LAYOUTS)})") from None


def motion_keys(layout: MotionLayout) -> dict[str, tuple[int, ...]]:
    """A layout's per-frame shard arrays and their trailing shapes: each part ((n,), exp (num_kp, 3)) and kp."""
    keys = {name: (layout.num_kp, 3) if name == "exp" else (size,) for name, size in layout.parts}
    keys["kp"] = (layout.num_kp, 3)
    return keys
