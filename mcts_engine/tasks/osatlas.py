"""OS-ATLAS grounding data (the web-grounding training set; ScreenSpot is its benchmark).

Same contract as ``screenspot`` (answer = one point in the frame; verifier = point in the target box);
OS-ATLAS boxes are normalized to [0, 1] and converted to original pixels at load from each image's size.
"""

from __future__ import annotations

from ..evaluation.scoring import EvalSpec
from . import register
from .screenspot import PointTask


@register
class OSAtlas(PointTask):
    name = "osatlas"
    eval_spec = EvalSpec(groups=("platform",))
