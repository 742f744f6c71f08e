"""The fast PNG writer: lossless, valid PNG (Pillow decodes and CRC-checks it), any RGB size."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image

from mcts_engine.samples import encode_image
from mcts_engine.samples.png import encode_png, encode_png_rgb


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = random.Random(seed)
    return Image.frombytes("RGB", (w, h), bytes(rng.randrange(256) for _ in range(w * h * 3)))


def _decode(data: bytes) -> Image.Image:
    Image.open(io.BytesIO(data)).verify()  # chunk CRCs and structure
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (7, 1), (3, 5), (64, 33), (257, 19)])
def test_round_trip_is_exact_for_noise(size):
    img = _noise(*size, seed=size[0] * 1000 + size[1])
    out = _decode(encode_png_rgb(img))
    assert out.mode == "RGB" and out.size == img.size
    assert out.tobytes() == img.tobytes()


def test_round_trip_of_wrapping_differences():
    # rows alternating 0 and 255 make every "Up" difference wrap around (0 - 255, 255 - 0)
    w, h = 16, 6
    rows = [bytes([0 if y % 2 else 255] * (w * 3)) for y in range(h)]
    img = Image.frombytes("RGB", (w, h), b"".join(rows))
    assert _decode(encode_png_rgb(img)).tobytes() == img.tobytes()


def test_layout_is_plain_truecolour_with_up_filter():
    img = Image.new("RGB", (5, 4), (10, 20, 30))
    data = encode_png_rgb(img)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, tag = struct.unpack(">I4s", data[8:16])
    assert (length, tag) == (13, b"IHDR")
    assert struct.unpack(">IIBBBBB", data[16:29]) == (5, 4, 8, 2, 0, 0, 0)
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41 : 41 + idat_len])
    stride = 5 * 3 + 1
    assert [raw[i * stride] for i in range(4)] == [2, 2, 2, 2]
    assert raw[1:stride] == bytes([10, 20, 30] * 5)  # first row: "Up" over zeros = the pixels
    assert set(raw[stride + 1 : 2 * stride]) == {0}  # a repeated row filters to zeros
    assert data.endswith(b"IEND\xaeB`\x82")


def test_rgb_only_and_other_modes_through_pillow():
    with pytest.raises(ValueError, match="RGB"):
        encode_png_rgb(Image.new("L", (4, 4)))
    for mode in ("L", "RGBA", "P"):
        img = Image.new(mode, (6, 3))
        out = _decode(encode_png(img))
        assert out.mode == mode and out.tobytes() == img.tobytes()
    rgb = _noise(9, 4)
    assert encode_png(rgb) == encode_png_rgb(rgb)


def test_teacher_frame_png_is_the_resized_pixels():
    src = _noise(100, 61, seed=3)
    enc, resized = encode_image(src, max_pixels=56 * 56, min_pixels=28 * 28, fmt="png")
    assert (enc.frame.width, enc.frame.height) == resized.size
    assert enc.mime == "image/png"
    assert _decode(enc.data).tobytes() == resized.tobytes()
