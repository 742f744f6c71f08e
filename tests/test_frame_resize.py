"""``grounding.smart_resize`` against the resize rule the model's own processor applies.

The teacher's frame is computed here, then the image is resized to it and sent; the server (vLLM or
transformers) resizes again with Qwen2-VL's ``smart_resize`` from transformers. Point coordinates are
only right if both agree, so the reference is transformers' function itself, compared exactly over a
grid of sizes, aspect ratios and pixel bounds.

One deliberate difference, pinned here so it cannot grow: a side of at most ``factor / 2`` pixels rounds
to 0 in transformers' first step, while ours keeps at least one ``factor`` there (as qwen-vl-utils'
``smart_resize``, the Qwen team's own image preparation, does). Only images with a side <= 14 px are
affected, and for them our frame is still one the server keeps unchanged (checked below).

Found by this comparison: from inputs with an aspect ratio above ~105, rounding the short side down to
one ``factor`` can give a frame with a ratio over 200, which the processor then refuses; ``frame_for``
refuses such images up front with a one-line error.
"""

from __future__ import annotations

import itertools
import random

import pytest

from mcts_engine.frame import frame_for, smart_resize

try:  # transformers 5.x: the PIL backend module (the default one needs torchvision)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize
except ImportError:  # transformers 4.x
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

# (min_pixels, max_pixels): Qwen2-VL's processor defaults (the package's too), a tight budget, the
# Qwen2.5-VL preprocessor_config bounds, a large budget, and a floor above the default.
BOUNDS = [(56 * 56, 1280 * 28 * 28), (4 * 28 * 28, 256 * 28 * 28), (3136, 12845056), (256 * 28 * 28, 16384 * 28 * 28),
          (128 * 28 * 28, 512 * 28 * 28)]
FACTORS = (28, 32)  # Qwen2/2.5-VL (patch 14 x merge 2) and patch-16 models (Qwen3-VL)
SIDES = [1, 2, 7, 13, 14, 15, 16, 17, 27, 28, 29, 31, 32, 33, 41, 42, 43, 55, 56, 57, 83, 84, 85, 100, 111, 224, 333,
         479, 480, 500, 640, 719, 720, 999, 1000, 1079, 1080, 1366, 1920, 2048, 2560, 3000, 3840, 4000, 4096, 5000, 7680]


def _supported(h: int, w: int) -> bool:
    return max(h, w) / min(h, w) <= 200


def _grid() -> list[tuple[int, int]]:
    pairs = [(h, w) for h, w in itertools.product(SIDES, SIDES) if _supported(h, w)]
    rng = random.Random(20240607)
    while len(pairs) < len(SIDES) ** 2 + 3000:  # plus log-uniform random sizes, any aspect up to 200
        h, w = (round(10 ** rng.uniform(0, 4)) or 1 for _ in range(2))
        if _supported(h, w):
            pairs.append((h, w))
    return pairs


GRID = _grid()


def _thin(h: int, w: int, factor: int) -> bool:
    return min(h, w) <= factor // 2  # round(side / factor) == 0 in transformers' first step


def test_grid_covers_every_branch_of_the_rule() -> None:
    """The comparison below is only worth something if the grid reaches the rounding, the shrink and
    the enlarge branches, with both orientations, for every bound pair."""
    for (min_p, max_p), f in itertools.product(BOUNDS, FACTORS):
        kinds = set()
        for h, w in GRID:
            hb, wb = round(h / f) * f, round(w / f) * f
            kinds.add("shrink" if hb * wb > max_p else "enlarge" if hb * wb < min_p else "round")
        assert kinds == {"shrink", "enlarge", "round"}, (min_p, max_p, f)
    assert any(h > 3 * w for h, w in GRID) and any(w > 3 * h for h, w in GRID)
    assert any(max(h, w) / min(h, w) > 150 for h, w in GRID)


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("min_pixels, max_pixels", BOUNDS)
def test_equal_to_transformers_qwen2_vl_rule(min_pixels: int, max_pixels: int, factor: int) -> None:
    compared = 0
    for h, w in GRID:
        if _thin(h, w, factor):
            continue
        ours = smart_resize(h, w, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
        ref = hf_smart_resize(h, w, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
        assert ours == ref, (h, w, min_pixels, max_pixels, factor)
        compared += 1
    assert compared > 3000


def test_defaults_equal_transformers_defaults() -> None:
    for h, w in GRID:
        if not _thin(h, w, 28):
            assert smart_resize(h, w) == hf_smart_resize(h, w, min_pixels=56 * 56, max_pixels=1280 * 28 * 28), (h, w)


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("min_pixels, max_pixels", BOUNDS)
def test_the_server_keeps_our_frame(min_pixels: int, max_pixels: int, factor: int) -> None:
    """Every frame we send (thin images included) is a fixed point of transformers' rule: the image at that
    size is not resized again, so points in our frame are points in the model's. A frame the processor
    would refuse (aspect ratio over 200 after rounding) is refused by ``frame_for`` before anything is sent."""
    kept = refused = 0
    for h, w in GRID:
        fh, fw = smart_resize(h, w, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
        try:
            again = hf_smart_resize(fh, fw, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
        except ValueError:
            with pytest.raises(ValueError, match=rf"image {w}x{h} would become a {fw}x{fh} frame, an aspect ratio over 200"):
                frame_for(w, h, max_pixels=max_pixels, min_pixels=min_pixels, factor=factor)
            refused += 1
            continue
        assert again == (fh, fw), (h, w, (fh, fw), again)
        f = frame_for(w, h, max_pixels=max_pixels, min_pixels=min_pixels, factor=factor)
        assert (f.height, f.width, f.orig_height, f.orig_width) == (fh, fw, h, w)
        kept += 1
    assert kept > 3000


def test_a_frame_pushed_past_aspect_200_is_refused_in_one_line() -> None:
    # 41x7680 (ratio 187, accepted by the rule) shrinks to 28 rows and 7672 columns: ratio 274.
    assert smart_resize(41, 7680) == hf_smart_resize(41, 7680, min_pixels=56 * 56, max_pixels=1280 * 28 * 28) == (28, 7672)
    with pytest.raises(ValueError, match="aspect ratio must be smaller than 200"):
        hf_smart_resize(28, 7672, min_pixels=56 * 56, max_pixels=1280 * 28 * 28)
    with pytest.raises(ValueError) as ei:
        frame_for(7680, 41, max_pixels=1280 * 28 * 28)
    assert str(ei.value) == ("image 7680x41 would become a 7672x28 frame, an aspect ratio over 200 that the model's "
                             "processor refuses")


@pytest.mark.parametrize(
    "h, w, ours, theirs",
    # 1x100 keeps a 28-pixel row (28*112 = 3136 reaches min_pixels) where transformers' 0-high first guess
    # sends it through the enlarge branch; 10x400 likewise.
    [(1, 100, (28, 112), (28, 560)), (10, 400, (28, 392), (28, 364)), (14, 200, (28, 196), (28, 224))],
)
def test_the_thin_image_difference_is_the_documented_one(h, w, ours, theirs) -> None:
    assert smart_resize(h, w) == ours
    assert hf_smart_resize(h, w, min_pixels=56 * 56, max_pixels=1280 * 28 * 28) == theirs


def test_thin_images_differ_only_through_the_first_rounding() -> None:
    """In the thin band, a result that differs from transformers' is exactly the one-factor floor at work:
    the first guess (at least one factor per side) already lies within the pixel bounds."""
    for (min_p, max_p), f in itertools.product(BOUNDS, FACTORS):
        for h, w in GRID:
            ours = smart_resize(h, w, factor=f, min_pixels=min_p, max_pixels=max_p)
            ref = hf_smart_resize(h, w, factor=f, min_pixels=min_p, max_pixels=max_p)
            if ours != ref:
                assert _thin(h, w, f), (h, w, min_p, max_p, f)
                first = (max(f, round(h / f) * f), max(f, round(w / f) * f))
                assert ours == first and min_p <= first[0] * first[1] <= max_p, (h, w, min_p, max_p, f)


@pytest.mark.parametrize("h, w", [(1, 201), (201, 1), (3, 1000), (10, 2001)])
def test_both_refuse_aspect_ratios_over_200(h: int, w: int) -> None:
    with pytest.raises(ValueError):
        smart_resize(h, w)
    with pytest.raises(ValueError):
        hf_smart_resize(h, w)
