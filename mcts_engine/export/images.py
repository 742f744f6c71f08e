"""Images of an export (an I/O edge): where a sample's images are read from (the run's frame cache, or
the sources under the image root and the run's input rules), how they are fitted to the teacher's
frame and encoded (:class:`ImageBlob`), and the multi-turn crops. Every read is confined (run
directory or image root) and size-bounded; failures are one-line ``ValueError``.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ..config import InputConfig
from ..frame import frame_for
from ..samples.bounds import DEFAULT_INPUTS, confine, open_bounded
from ..samples.png import encode_png
from ..search.tree import Tree
from .items import MultiTurnChain

# Teacher frame defaults (config.TeacherConfig) for a run whose config.json lacks them.
DEFAULT_MAX_PIXELS = 1280 * 28 * 28
DEFAULT_MIN_PIXELS = 56 * 56


@dataclass(frozen=True)
class ImageBlob:
    """One stored image: its encoded bytes, content hash, size and file extension."""

    data: bytes
    sha1: str
    width: int
    height: int
    ext: str  # png | jpg

    def cell(self) -> dict[str, Any]:
        return {"bytes": self.data, "path": None}


def blob_of(data: bytes, width: int, height: int, ext: str) -> ImageBlob:
    return ImageBlob(data, hashlib.sha1(data).hexdigest(), width, height, ext)


def image_root_for(record: dict[str, Any], run_config: dict[str, Any], override: str | None = None) -> str | None:
    """Where relative image paths resolve: ``--image-root`` > the sample record's ``image_root`` >
    the run's ``image_root`` > the directory of the run's ``data`` file (or the data directory)."""
    if override:
        return override
    if record.get("image_root"):
        return str(record["image_root"])
    cfg = run_config.get("config", run_config) if isinstance(run_config, dict) else {}
    if cfg.get("image_root"):
        return str(cfg["image_root"])
    data = cfg.get("data")
    if data:
        p = Path(str(data))
        return str(p if p.is_dir() else p.parent)
    return None


def run_inputs(run_config: dict[str, Any], allow_outside_root: bool = False) -> InputConfig:
    """The input rules a run was generated under (``config.inputs``; defaults for older runs), with
    ``allow_outside_root`` also turned on by the caller's own flag."""
    from ..config import ConfigError, from_dict

    cfg = run_config.get("config", run_config) if isinstance(run_config, dict) else {}
    try:
        inputs = from_dict(InputConfig, cfg.get("inputs") if isinstance(cfg.get("inputs"), dict) else None, "config.inputs")
    except ConfigError:
        inputs = InputConfig()
    if allow_outside_root:
        inputs.allow_outside_root = True
    return inputs


def run_file(run_dir: Path, name: str) -> Path:
    """A file a tree record names (``images/<key>.png``): inside the run directory, or ``ValueError``."""
    return confine(name, run_dir, what="run directory")


def read_source(src: str, image_root: str | None, inputs: InputConfig | None = None) -> bytes:
    """The source bytes of one recorded sample image (a path). Raises ``ValueError`` (one line), also for
    a path that resolves outside the image root (the rule generate applied; ``inputs.allow_outside_root``)."""
    if src.startswith("bytes:"):
        raise ValueError(
            f"image came as embedded bytes (bytes:{src[6:18]}…) and this tree has no copy in the run's "
            "image cache (RUN/images/); re-run generate with this version, or use path-based samples"
        )
    inputs = inputs or DEFAULT_INPUTS
    path = confine(src, image_root if image_root is not None else ".", inputs.allow_outside_root)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"image not found: {path}") from None
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc.strerror}") from None


def cached_images(tree: Tree, run_dir: Path) -> list[tuple[bytes, dict[str, Any]]]:
    """The frame-sized images the teacher saw, from the run's image cache (``Tree.images``:
    ``{"key", "file" (relative to the run dir), "width", "height", "mime"}``). Raises ``ValueError``."""
    out = []
    for rec in tree.images:
        path = run_file(run_dir, str(rec.get("file", "")))
        try:
            out.append((path.read_bytes(), rec))
        except OSError:
            raise ValueError(f"cached image missing: {path}") from None
    return out


def image_keys(tree: Tree, image_root: str | None, inputs: InputConfig | None = None) -> list[str]:
    """Split keys of a sample's images: content hashes. The cached frame image's key when the run has
    the cache (same source → same key within a run; no file is read), else the sha1 of the source
    bytes (``samples.image_hash`` semantics; a ``bytes:<sha1>`` record already carries it)."""
    if tree.images and all(rec.get("key") for rec in tree.images):
        return [str(rec["key"]) for rec in tree.images]
    keys = []
    for src in tree.sample.get("images") or []:
        src = str(src)
        keys.append(src[len("bytes:") :] if src.startswith("bytes:") else hashlib.sha1(read_source(src, image_root, inputs)).hexdigest())
    return keys


def _open(data: bytes, where: str, max_pixels: int = DEFAULT_INPUTS.max_image_pixels) -> Image.Image:
    try:
        img = open_bounded(data, max_pixels, where)
        img.load()
        return img
    except ValueError:
        raise
    except Exception as exc:  # PIL raises many types for corrupt data
        raise ValueError(f"cannot decode image {where}: {type(exc).__name__}") from None


def encode(img: Image.Image, fmt: str, quality: int) -> ImageBlob:
    if fmt == "jpeg":
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        return blob_of(buf.getvalue(), img.width, img.height, "jpg")
    return blob_of(encode_png(img), img.width, img.height, "png")


def _fit(data: bytes, where: str, target: tuple[int, int], fmt: str, quality: int,
         max_pixels: int = DEFAULT_INPUTS.max_image_pixels) -> ImageBlob:
    """``data`` as a stored image of size ``target``: copied byte for byte when it already has that
    size and is an RGB PNG/JPEG in the wanted format (only the header is read), else decoded, resized
    (bicubic, as the teacher's encoder) and encoded (``auto``: JPEG stays JPEG, anything else PNG)."""
    try:
        img = open_bounded(data, max_pixels, where)
    except ValueError:
        raise
    except Exception:  # PIL raises many types for corrupt data
        raise ValueError(f"cannot decode image {where}") from None
    src_fmt = "jpeg" if img.format == "JPEG" else ("png" if img.format == "PNG" else None)
    want = (src_fmt or "png") if fmt == "auto" else fmt
    if target == img.size and img.mode == "RGB" and src_fmt == want:
        return blob_of(data, img.width, img.height, "jpg" if want == "jpeg" else "png")
    rgb = _open(data, where, max_pixels).convert("RGB")
    if target != rgb.size:
        rgb = rgb.resize(target, Image.BICUBIC)
    return encode(rgb, want, quality)


def sample_images(
    tree: Tree,
    image_root: str | None,
    *,
    run_dir: Path | None = None,
    rescale_to_original: bool = False,
    fmt: str = "auto",
    quality: int = 95,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    inputs: InputConfig | None = None,
) -> list[ImageBlob]:
    """The images of a sample as stored in rows. Raises ``ValueError`` with a one-line reason.

    In the teacher's frame (default): the run's cached frame images when the tree has them (exactly
    the pixels the teacher saw), else the source images resized — the first to ``tree.frame``, further
    ones to their own Qwen frame under the run's ``max_pixels``. With ``rescale_to_original``: the
    source images at their own size (a ``bytes:`` source is not in the run, so such a sample fails).
    Files are read only inside the run directory (cache) or, for sources, inside the image root
    (``inputs``: the run's input rules, :func:`run_inputs`); decoded sizes are bounded the same way."""
    inputs = inputs or DEFAULT_INPUTS
    frame = tree.frame
    if tree.images and not rescale_to_original and run_dir is not None:
        out = []
        for i, (data, rec) in enumerate(cached_images(tree, run_dir)):
            size = (int(rec.get("width", 0)), int(rec.get("height", 0)))
            if i == 0 and size != (frame.width, frame.height):
                raise ValueError(f"cached image {rec.get('file')} is {size[0]}x{size[1]}, the tree's frame {frame.width}x{frame.height}")
            out.append(_fit(data, str(rec.get("file")), size, fmt, quality, inputs.max_image_pixels))
        return out
    srcs = tree.sample.get("images") or []
    if not srcs:
        raise ValueError("sample record has no images")
    out = []
    for i, src in enumerate(srcs):
        src = str(src)
        data = read_source(src, image_root, inputs)
        try:
            w, h = open_bounded(data, inputs.max_image_pixels, src).size
        except ValueError:
            raise
        except Exception:  # PIL raises many types for corrupt data
            raise ValueError(f"cannot decode image {src}") from None
        if i == 0:
            if (w, h) != (frame.orig_width, frame.orig_height):
                raise ValueError(
                    f"image {src} is {w}x{h} but the tree's frame was computed from "
                    f"{frame.orig_width}x{frame.orig_height} (the file changed since the run)"
                )
            target = (frame.width, frame.height)
        else:
            f = frame_for(w, h, max_pixels=max_pixels, min_pixels=min_pixels)
            target = (f.width, f.height)
        out.append(_fit(data, src, (w, h) if rescale_to_original else target, fmt, quality, inputs.max_image_pixels))
    return out


def frame_image(tree: Tree, image_root: str | None, run_dir: Path, inputs: InputConfig | None = None) -> Image.Image:
    """The sample's first image in the teacher's frame, as a PIL image (for the report)."""
    inputs = inputs or DEFAULT_INPUTS
    if tree.images:
        data, rec = cached_images(tree, run_dir)[0]
        img = _open(data, str(rec.get("file")), inputs.max_image_pixels).convert("RGB")
    else:
        src = str((tree.sample.get("images") or [""])[0])
        img = _open(read_source(src, image_root, inputs), src, inputs.max_image_pixels).convert("RGB")
    size = (tree.frame.width, tree.frame.height)
    return img if img.size == size else img.resize(size, Image.BICUBIC)


def crop_images(chains: list[MultiTurnChain], run_dir: Path, fmt: str, quality: int,
                max_pixels: int = DEFAULT_INPUTS.max_image_pixels) -> dict[str, ImageBlob]:
    """The crops the chains show, from the run's image directory (``observation.image.file``, relative
    to the run dir): copied byte for byte unless ``image_format`` asks for another encoding. Raises
    ``ValueError`` (one line) for a missing or unreadable crop."""
    out: dict[str, ImageBlob] = {}
    for chain in chains:
        for obs in chain.observations:
            rec = obs["image"]
            name = str(rec["file"])
            if name in out:
                continue
            path = run_file(run_dir, name)
            try:
                data = path.read_bytes()
            except OSError:
                raise ValueError(f"crop image missing: {path}") from None
            try:
                size = open_bounded(data, max_pixels, name).size
            except ValueError:
                raise
            except Exception:  # PIL raises many types for corrupt data
                raise ValueError(f"cannot decode crop image {path}") from None
            out[name] = _fit(data, name, size, fmt, quality, max_pixels)
    return out
