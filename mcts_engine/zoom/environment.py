"""The multi-turn zoom environment: one function turns a tool call into the crop the model sees next.

Search, export, training rollouts, eval and the demo all call :func:`observe`, so crop settings can
never drift between stages. Geometry (all in the frame the model saw):

- the region is a square of side ``2 * crop_offset`` centred on the point, shifted (not shrunk) to
  stay inside the frame; only a frame smaller than the square clips it to the frame
  (``crop_border: clip`` instead cuts the square at the frame's edge, so an edge region is smaller);
- the region is resized so its longer side is ``crop_size`` pixels, both sides rounded to multiples
  of 28 (the vision encoder's patch grid), so a 364-pixel region becomes a 672-pixel zoom
  (``crop_shape: square``: resized to ``crop_size`` x ``crop_size`` whatever its shape, same rounding);
- with ``draw_dot`` the point is marked with a dot on the crop: after resizing, radius in crop px
  (``dot_space: crop``), or on the region before resizing, radius in region px (``dot_space: region``).

The observation turn is ``multiturn.observation_text`` with ``{x}``/``{y}`` replaced by the point; ``<image>``
marks where the crop goes. The settings come from ``MultiTurnConfig`` (a protocol preset sets them; see
docs/protocols.md); an ``@FILE`` template is read by ``protocol.observation_template``.

A tool call is strict JSON: ``{"name": "search_coordinate", "arguments": {"coordinate": [x, y]}}``
with integer x, y inside the frame; anything else is a failed step with a one-line reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw

from ..config import DEFAULT_OBSERVATION_TEXT, MultiTurnConfig
from ..frame import Frame
from ..grounding import TOOL_CLOSE, TOOL_OPEN, ParsedStep, Point
from ..protocol import observation_template

TOOL_NAME = "search_coordinate"
OBSERVATION_OPEN, OBSERVATION_CLOSE = "<observation>", "</observation>"
MULTITURN_STOPS: tuple[str, ...] = (TOOL_CLOSE, "</answer>")


def format_tool_call(point: Point) -> str:
    return f'{TOOL_OPEN}\n{{"name": "{TOOL_NAME}", "arguments": {{"coordinate": [{point[0]}, {point[1]}]}}}}\n{TOOL_CLOSE}'


def observation_text(point: Point, template: str = DEFAULT_OBSERVATION_TEXT) -> str:
    """The user turn that carries a crop: ``template`` with ``{x}``/``{y}`` replaced by the point (no other
    brace is interpreted); ``<image>`` marks where the crop image goes (a template without it gets the image
    first)."""
    return template.replace("{x}", str(point[0])).replace("{y}", str(point[1]))


def check_tool_step(step: ParsedStep, frame: Frame) -> tuple[Point | None, str | None]:
    """The point a multi-turn step asks to zoom on, or why the step failed."""
    if step.tool_error:
        return None, f"bad_tool_call: {step.tool_error}"
    if step.tool_call is None:
        return None, "no_tool_call"
    if step.tool_call.name != TOOL_NAME:
        return None, f"bad_tool_call: unknown tool {step.tool_call.name!r}"
    if step.tool_call.point is None:
        return None, "bad_tool_call: no coordinate"
    if not frame.contains(step.tool_call.point):
        return None, "out_of_frame"
    return step.tool_call.point, None


def _round28(v: float) -> int:
    return max(28, int(round(v / 28)) * 28)


def crop_box(point: Point, width: int, height: int, offset: int, border: str = "shift") -> tuple[int, int, int, int]:
    """The xyxy region (x2/y2 exclusive) around ``point``: side 2*offset, shifted to fit the frame
    (``border="shift"``) or cut at the frame's edge (``"clip"``; never empty)."""

    def span(c: int, size: int) -> tuple[int, int]:
        if border == "clip":
            lo, hi = max(0, c - offset), min(size, c + offset)
            return lo, max(hi, lo + 1)
        side = min(2 * offset, size)
        lo = min(max(0, c - offset), size - side)
        return lo, lo + side

    x1, x2 = span(point[0], width)
    y1, y2 = span(point[1], height)
    return x1, y1, x2, y2


def output_size(region_w: int, region_h: int, cfg: MultiTurnConfig) -> tuple[int, int]:
    """The crop's size for a ``region_w`` x ``region_h`` region: longer side ``crop_size`` (``aspect``) or
    ``crop_size`` square (``square``), each side rounded to a multiple of 28."""
    if cfg.crop_shape == "square":
        return _round28(cfg.crop_size), _round28(cfg.crop_size)
    scale = cfg.crop_size / max(region_w, region_h)
    return _round28(region_w * scale), _round28(region_h * scale)


def crop_output_size(width: int, height: int, cfg: MultiTurnConfig) -> tuple[int, int]:
    """The size of the crops of a ``width`` x ``height`` frame that are not cut by its edge (all crops with
    ``crop_border: shift``; the largest with ``clip``): what a processor must fit without resizing."""
    x1, y1, x2, y2 = crop_box((width // 2, height // 2), width, height, cfg.crop_offset, "shift")
    return output_size(x2 - x1, y2 - y1, cfg)


def _dot(draw: ImageDraw.ImageDraw, x: float, y: float, cfg: MultiTurnConfig) -> None:
    r = cfg.dot_radius
    outline = cfg.dot_outline or None
    draw.ellipse((x - r, y - r, x + r, y + r), fill=cfg.dot_color, outline=outline,
                 width=max(1, cfg.dot_outline_width) if outline else 0)


def zoom(image: Image.Image, point: Point, cfg: MultiTurnConfig) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Crop ``image`` (the frame the model saw) around ``point`` and resize per ``cfg``."""
    box = crop_box(point, image.width, image.height, cfg.crop_offset, cfg.crop_border)
    region = image.crop(box)
    if cfg.draw_dot and cfg.dot_space == "region":
        _dot(ImageDraw.Draw(region), point[0] - box[0], point[1] - box[1], cfg)
    size = output_size(region.width, region.height, cfg)
    crop = region.resize(size, Image.BICUBIC)
    if cfg.draw_dot and cfg.dot_space != "region":
        px = (point[0] - box[0]) * size[0] / region.width
        py = (point[1] - box[1]) * size[1] / region.height
        _dot(ImageDraw.Draw(crop), px, py, cfg)
    return crop, box


@dataclass(frozen=True)
class ZoomResult:
    point: Point
    box: tuple[int, int, int, int]
    crop: Image.Image
    text: str


def observe(image: Image.Image, step: ParsedStep, frame: Frame, cfg: MultiTurnConfig) -> tuple[ZoomResult | None, str | None]:
    """Run the environment for one step: ``(result, None)`` or ``(None, reason)`` for a failed step."""
    point, err = check_tool_step(step, frame)
    if err:
        return None, err
    assert point is not None
    crop, box = zoom(image, point, cfg)
    return ZoomResult(point=point, box=box, crop=crop, text=observation_text(point, observation_template(cfg))), None
