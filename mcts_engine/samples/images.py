"""Images of a sample: opening (bounded, inside the image root), the teacher's frame of one, its encoding (an I/O edge).

:func:`open_image` reads a path or bytes as RGB under the input rules (``bounds``); :func:`encode_image` resizes to
the Qwen frame (:func:`~mcts_engine.frame.frame_for`) and encodes it once (PNG through ``png``, or JPEG) into an
:class:`EncodedImage` every prompt of the sample shares; :func:`load_frame` does both, with an evaluation's
longer-side cap when asked (:func:`~mcts_engine.frame.capped_frame`). Every failure is a one-line ``ValueError``.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from PIL import Image

from ..config import IMAGE_FORMATS, InputConfig
from ..frame import Frame, capped_frame, frame_for
from .bounds import DEFAULT_INPUTS, confine, open_bounded
from .png import encode_png
from .types import ImageSource


def resolve_image_path(src: str, image_root: str | None) -> Path:
    p = Path(src)
    if not p.is_absolute() and image_root:
        p = Path(image_root) / p
    return p


def open_image(src: ImageSource, image_root: str | None = None, inputs: InputConfig | None = None) -> Image.Image:
    """Open an image as RGB. Raises ``ValueError`` with a one-line reason on failure (also for a path
    outside ``image_root`` and an image over ``inputs.max_image_pixels``: ``bounds``)."""
    return open_image_with_format(src, image_root, inputs)[0]


def open_image_with_format(
    src: ImageSource, image_root: str | None = None, inputs: InputConfig | None = None
) -> tuple[Image.Image, str | None]:
    """:func:`open_image`, plus the source's container format as Pillow names it (``"JPEG"``, ``"PNG"``, ...)."""
    inputs = inputs or DEFAULT_INPUTS
    try:
        if isinstance(src, (bytes, bytearray)):
            img = open_bounded(src, inputs.max_image_pixels, "bytes")
        else:
            path = confine(src, image_root, inputs.allow_outside_root)
            if not path.exists():
                raise ValueError(f"image not found: {path}")
            img = open_bounded(path, inputs.max_image_pixels, str(src))
        img.load()
    except ValueError:
        raise
    except Exception as exc:  # PIL raises many types for corrupt data
        where = "image bytes" if isinstance(src, (bytes, bytearray)) else str(src)
        raise ValueError(f"cannot read image {where}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    return img.convert("RGB"), img.format


@dataclass(frozen=True)
class EncodedImage:
    """An image resized to the teacher's frame and encoded once, shared by every prompt of a sample."""

    key: str  # content hash of the encoded bytes
    frame: Frame
    mime: str
    data: bytes

    @cached_property
    def data_url(self) -> str:
        """Base64 data URL, computed once (every request of the sample reuses it)."""
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


def frame_format(fmt: str, source_format: str | None) -> str:
    """The encoding of a frame: ``png`` or ``jpeg`` as asked; ``auto`` = JPEG for a JPEG source (already
    lossy: a lossless copy would only be larger), else lossless PNG."""
    if fmt == "auto":
        return "jpeg" if (source_format or "").upper() in ("JPEG", "MPO") else "png"
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"unknown image format {fmt!r} ({', '.join(IMAGE_FORMATS)})")
    return fmt


def encode_image(
    img: Image.Image, max_pixels: int, min_pixels: int = 56 * 56, fmt: str = "png", quality: int = 90,
    source_format: str | None = None,
) -> tuple[EncodedImage, Image.Image]:
    """Resize to the Qwen frame (multiple of 28, ≤ max_pixels) and encode. Returns the encoding and the resized image.

    ``fmt``: ``png``, ``jpeg`` (at ``quality``) or ``auto`` (see :func:`frame_format`; ``source_format`` is the
    container the image was read from)."""
    fmt = frame_format(fmt, source_format)
    frame = frame_for(img.width, img.height, max_pixels=max_pixels, min_pixels=min_pixels)
    resized = img if (frame.width, frame.height) == img.size else img.resize((frame.width, frame.height), Image.BICUBIC)
    if fmt == "jpeg":
        buf = io.BytesIO()
        resized.save(buf, format="JPEG", quality=quality)
        data, mime = buf.getvalue(), "image/jpeg"
    else:
        data, mime = encode_png(resized), "image/png"
    return EncodedImage(key=hashlib.sha1(data).hexdigest()[:16], frame=frame, mime=mime, data=data), resized


def load_frame(
    src: ImageSource, image_root: str | None, max_pixels: int, min_pixels: int, fmt: str, quality: int = 90,
    inputs: InputConfig | None = None, max_long_side: int = 0,
) -> tuple[EncodedImage, Image.Image]:
    """Read an image and prepare the teacher's frame of it (:func:`encode_image`). ``ValueError`` on bad input.
    ``max_long_side`` > 0: the frame is computed from the source capped to that longer side
    (:func:`~mcts_engine.frame.capped_frame`) and the image resized to it in one step."""
    img, source_format = open_image_with_format(src, image_root, inputs)
    if max_long_side <= 0 or max(img.size) <= max_long_side:
        return encode_image(img, max_pixels=max_pixels, min_pixels=min_pixels, fmt=fmt, quality=quality,
                            source_format=source_format)
    frame = capped_frame(img.width, img.height, max_long_side, max_pixels, min_pixels)
    resized = img.resize((frame.width, frame.height), Image.BICUBIC)
    # already on the 28-pixel grid: encode_image keeps the size; the frame then gets the source's size back
    enc, resized = encode_image(resized, max_pixels=frame.width * frame.height, min_pixels=0, fmt=fmt, quality=quality,
                                source_format=source_format)
    return replace(enc, frame=frame), resized


def image_hash(src: ImageSource, image_root: str | None = None, inputs: InputConfig | None = None) -> str:
    """Content hash of an image's source bytes (used to split train/val without leakage)."""
    if isinstance(src, (bytes, bytearray)):
        data = bytes(src)
    else:
        data = confine(src, image_root, (inputs or DEFAULT_INPUTS).allow_outside_root).read_bytes()
    return hashlib.sha1(data).hexdigest()


def image_size(src: ImageSource, image_root: str | None, inputs: InputConfig | None = None) -> tuple[int, int]:
    """(width, height) from the image header (no full decode). ``ValueError`` with a one-line reason,
    also for a path outside the image root or an image over ``inputs.max_image_pixels``."""
    inputs = inputs or DEFAULT_INPUTS
    try:
        if isinstance(src, (bytes, bytearray)):
            with open_bounded(src, inputs.max_image_pixels, "bytes") as im:
                return im.size
        path = confine(src, image_root, inputs.allow_outside_root)
        if not path.exists():
            raise ValueError(f"image not found: {path}")
        with open_bounded(path, inputs.max_image_pixels, src) as im:
            return im.size
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"cannot read image {src if isinstance(src, str) else 'bytes'}: {type(exc).__name__}") from None


def row_image_size(src: str, root: str, inputs: InputConfig | None, where: str, field: str) -> tuple[int, int]:
    """:func:`image_size` of a row's image; its one-line error names the row and field."""
    try:
        return image_size(src, root, inputs)
    except ValueError as exc:
        raise ValueError(f"{where}: field '{field}': {exc}") from None
