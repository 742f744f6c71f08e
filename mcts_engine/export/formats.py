"""Export a run directory to training files (an I/O edge): parquet (or JSONL) per kind and split.

Layout of ``OUT/`` (``--flavor trl``, the default)::

    sft_train.parquet   sft_val.parquet     TRL SFTTrainer (conversational VLM)
    grpo_train.parquet  grpo_val.parquet    TRL GRPOTrainer, and verl's columns alongside
    dpo_train.parquet   dpo_val.parquet     TRL DPOTrainer (conversational VLM preference)
    prm_train.parquet   prm_val.parquet     stepwise labels (prompt, completions, labels, values, visits)
    export_summary.json                     counts, what was skipped and why, sizes, timing

Multi-turn runs (``config.multiturn.enabled``; ``mode`` auto-detects, ``single`` overrides) write
``sft`` and ``grpo`` only (``trl``; ``llamafactory``: sft): SFT ``messages`` alternate assistant turns
(each step's response with its ``<tool_call>`` verbatim) and observation user turns (text before the
``<image>`` marker, an image part, text after), ``images`` = [sample images…, crop 1, crop 2, …] in the
order of their placeholders; GRPO prompts carry the multi-turn student prompt and a ``multiturn``
column with the environment's settings (``max_turns``, ``crop_offset``, ``crop_size``, ``draw_dot``,
``dot_radius``) so a rollout crops exactly as the search did. Crops are the run's own crop files
(``RUN/images/``), copied byte for byte. verl/EasyR1 multi-turn rollouts need a tool environment these
files cannot carry: those flavors refuse a multi-turn export (use ``--mode single`` for single-turn rows).

Other flavors: ``verl`` (grpo; verl's string prompt with ``<image>`` markers + ``reward.py``), ``easyr1``
(grpo; ``prompt``/``answer``/``images`` + ``reward.py``), ``llamafactory`` (sft + dpo in sharegpt form +
``dataset_info.json``). ``--format jsonl`` writes the same rows as JSON lines with each distinct image
stored once under ``images/<sha1>.<ext>`` and referenced by a relative path.

Choices:

- Images are stored in the teacher's frame (``Tree.frame``), so every coordinate in a row is a pixel of
  the stored image: the run's cached frame images (``Tree.images``, exactly what the teacher saw) when
  present, else the source images resized the teacher's way. ``rescale_to_original`` stores the
  original image and rescales the points.
  Either way ``frame_width/frame_height/orig_width/orig_height`` and ``coord_space`` are in every row.
- Parquet images are ``datasets.Image`` cells (``{"bytes", "path"}``, bytes embedded) under the
  ``datasets`` schema metadata, so ``load_dataset("parquet")`` decodes them and plain pyarrow reads
  bytes. The image column is written as a parquet dictionary (see :class:`ParquetSink`), so a
  sample's image is stored once per row group however many rows repeat it.
- One content schema per file: TRL files always use lists of ``{"type", "text"}`` parts.
- Train/val split by sample, keyed on the content hash of its images; samples sharing any image are
  kept together (union-find), so no image is in both splits. Deterministic given the trees and the seed.
- Nothing crashes on bad input: corrupt tree lines, unknown tasks, missing images and bytes-only images
  without a cached copy are skipped and reported with a reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..config import InputConfig
from ..frame import Frame, frame_for
from ..grounding import IMAGE_MARKER, check_chain, extract_answer
from ..samples import Sample
from ..samples.bounds import DEFAULT_INPUTS, confine, open_bounded
from ..samples.png import encode_png
from ..search.tree import Tree
from ..store import RunStore
from .linearize import Chain, ExportConfig, Linearizer, MultiTurnChain, Pair, PrmRow
from .protocol_rows import (
    changes_observations, env_settings, first_user_text, recut_chains, row_multiturn, row_multiturn_keys, system_message,
)

KINDS: tuple[str, ...] = ("sft", "grpo", "dpo", "prm")
FLAVORS: dict[str, tuple[str, ...]] = {
    "trl": KINDS,
    "verl": ("grpo",),
    "easyr1": ("grpo",),
    "llamafactory": ("sft", "dpo"),
}
# What a multi-turn export writes per flavor (verl and EasyR1: none, see the module docstring).
MT_FLAVORS: dict[str, tuple[str, ...]] = {"trl": ("sft", "grpo"), "llamafactory": ("sft",)}
MODES: tuple[str, ...] = ("auto", "multiturn", "single")
FORMATS: tuple[str, ...] = ("parquet", "jsonl")
SPLITS: tuple[str, ...] = ("train", "val")
DATA_SOURCE_PREFIX = "mcts-engine/"
ABILITY = "grounded_visual_reasoning"

# Teacher frame defaults (config.TeacherConfig) for a run whose config.json lacks them.
_DEFAULT_MAX_PIXELS = 1280 * 28 * 28
_DEFAULT_MIN_PIXELS = 56 * 56


class ExportError(RuntimeError):
    """Export cannot proceed at all (bad arguments, unreadable run). One line."""


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


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
    max_pixels: int = _DEFAULT_MAX_PIXELS,
    min_pixels: int = _DEFAULT_MIN_PIXELS,
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


# --------------------------------------------------------------------------------------------
# Schemas (datasets features) per kind and flavor
# --------------------------------------------------------------------------------------------


def features_for(kind: str, flavor: str, multiturn: bool = False) -> Any:
    """The ``datasets.Features`` of one output file (``multiturn``: the multi-turn sft/grpo layout)."""
    from datasets import Features, List, Value
    from datasets import Image as HFImage

    if multiturn:
        return _mt_features(kind, flavor)

    parts = List({"type": Value("string"), "text": Value("string")})
    msgs = List({"role": Value("string"), "content": parts})
    str_msgs = List({"role": Value("string"), "content": Value("string")})
    images = List(HFImage())
    frame = {
        "frame_width": Value("int32"),
        "frame_height": Value("int32"),
        "orig_width": Value("int32"),
        "orig_height": Value("int32"),
        "coord_space": Value("string"),
        "image_hash": Value("string"),
    }
    ident = {"id": Value("string"), "row_id": Value("string"), "task": Value("string")}
    if kind == "sft":
        chain = {
            "strategy": Value("string"),
            "answer": Value("string"),
            "value": Value("float64"),
            "n_steps": Value("int32"),
            "points": List(List(Value("int32"))),
        }
        if flavor == "llamafactory":
            return Features({"messages": str_msgs, "images": images, **ident, **chain, **frame})
        return Features({"messages": msgs, "images": images, **ident, **chain, **frame})
    if kind == "grpo":
        difficulty = {"root_value": Value("float64"), "solved": Value("bool"), "pass_rate": Value("float64")}
        if flavor == "easyr1":
            return Features(
                {
                    "prompt": Value("string"),
                    "answer": Value("string"),
                    "images": images,
                    "reference": Value("string"),
                    **ident,
                    **difficulty,
                    **frame,
                }
            )
        verl = {
            "data_source": Value("string"),
            "ability": Value("string"),
            "reward_model": {"style": Value("string"), "ground_truth": Value("string")},
            "extra_info": {
                "split": Value("string"),
                "index": Value("int64"),
                "id": Value("string"),
                "task": Value("string"),
                "task_options": Value("string"),
            },
        }
        return Features(
            {
                "prompt": str_msgs if flavor == "verl" else msgs,
                "images": images,
                "answer": Value("string"),
                "ground_truth": Value("string"),
                **ident,
                **difficulty,
                **frame,
                **verl,
            }
        )
    if kind == "dpo":
        pair = {
            "answer": Value("string"),
            "rejected_answer": Value("string"),
            "chosen_value": Value("float64"),
            "rejected_value": Value("float64"),
            "prefix_steps": Value("int32"),
        }
        if flavor == "llamafactory":
            one = {"role": Value("string"), "content": Value("string")}
            return Features({"messages": str_msgs, "chosen": one, "rejected": one, "images": images, **ident, **pair, **frame})
        return Features({"prompt": msgs, "chosen": msgs, "rejected": msgs, "images": images, **ident, **pair, **frame})
    if kind == "prm":
        return Features(
            {
                "prompt": msgs,
                "completions": List(Value("string")),
                "labels": List(Value("bool")),
                "values": List(Value("float64")),
                "visits": List(Value("int32")),
                "answer": Value("string"),
                "correct": Value("bool"),
                "images": images,
                **ident,
                **frame,
            }
        )
    raise ValueError(f"unknown kind {kind!r}")


def _mt_features(kind: str, flavor: str) -> Any:
    """Multi-turn sft/grpo: the single-turn layout plus ``multiturn`` (the environment's settings);
    sft adds ``n_turns`` (assistant turns) and ``crop_boxes`` (xyxy region of each crop, frame px)."""
    from datasets import Features, List, Value

    if kind not in ("sft", "grpo"):
        raise ValueError(f"kind {kind!r} has no multi-turn layout (sft and grpo only)")
    base = dict(features_for(kind, flavor))
    env = {
        "max_turns": Value("int32"),
        "crop_offset": Value("int32"),
        "crop_size": Value("int32"),
        "draw_dot": Value("bool"),
        "dot_radius": Value("int32"),
        **row_multiturn_keys(),
    }
    extra: dict[str, Any] = {"multiturn": env}
    if kind == "sft":
        extra.update(n_turns=Value("int32"), crop_boxes=List(List(Value("int32"))))
    return Features({**base, **extra})


def multiturn_settings(run_config: dict[str, Any]) -> dict[str, Any]:
    """The run's zoom environment as rows carry it: ``config.multiturn`` (defaults from
    ``MultiTurnConfig``) plus ``max_turns`` = ``search.max_depth`` (assistant turns, the last forced to answer)."""
    from dataclasses import asdict

    from ..config import MultiTurnConfig, SearchConfig

    cfg = run_config.get("config", {}) if isinstance(run_config, dict) else {}
    mt = {**asdict(MultiTurnConfig()), **(cfg.get("multiturn") or {})}
    depth = (cfg.get("search") or {}).get("max_depth", SearchConfig().max_depth)
    return {
        "max_turns": int(depth),
        "crop_offset": int(mt["crop_offset"]),
        "crop_size": int(mt["crop_size"]),
        "draw_dot": bool(mt["draw_dot"]),
        "dot_radius": int(mt["dot_radius"]),
        **row_multiturn(mt),  # observation text, crop geometry, final turn (export/protocol_rows.py)
    }


def run_is_multiturn(run_config: dict[str, Any]) -> bool:
    cfg = run_config.get("config", {}) if isinstance(run_config, dict) else {}
    return bool((cfg.get("multiturn") or {}).get("enabled", False))


def resolve_mode(run_config: dict[str, Any], mode: str) -> bool:
    """``--mode`` → multi-turn or not. ``auto``: the run's ``config.multiturn.enabled``; ``single``: the
    single-turn chains (thoughts joined, tool calls dropped) whatever the run; ``multiturn``: insists on a
    multi-turn run. Raises :class:`ExportError`."""
    if mode not in MODES:
        raise ExportError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    run_mt = run_is_multiturn(run_config)
    if mode == "multiturn" and not run_mt:
        raise ExportError("--mode multiturn: this run is not multi-turn (config.multiturn.enabled is false in config.json)")
    return run_mt if mode == "auto" else mode == "multiturn"


def kinds_for(flavor: str, multiturn: bool) -> tuple[str, ...]:
    """What ``--kind all`` means for a flavor in a mode."""
    return MT_FLAVORS.get(flavor, ()) if multiturn else FLAVORS.get(flavor, ())


# --------------------------------------------------------------------------------------------
# Rows (pure given a SampleContext)
# --------------------------------------------------------------------------------------------


@dataclass
class SampleContext:
    """What every row of one sample shares."""

    id: str
    task: str
    system: str | None  # None = no system message (system_prompt: model)
    user_text: str
    images: list[ImageBlob]
    frame: Frame
    coord_space: str  # frame | original
    image_hash: str
    reference: str
    truth: dict[str, Any]
    task_options: dict[str, Any]
    split: str = "train"
    multiturn: dict[str, Any] | None = None  # multi-turn: the environment's settings (see multiturn_settings)

    def frame_cols(self) -> dict[str, Any]:
        return {
            "frame_width": self.frame.width,
            "frame_height": self.frame.height,
            "orig_width": self.frame.orig_width,
            "orig_height": self.frame.orig_height,
            "coord_space": self.coord_space,
            "image_hash": self.image_hash,
        }

    def ident(self, row_id: str) -> dict[str, Any]:
        return {"id": self.id, "row_id": row_id, "task": self.task}

    # message shapes
    def parts_prompt(self) -> list[dict[str, Any]]:
        user = [{"type": "image", "text": None} for _ in self.images] + [{"type": "text", "text": self.user_text}]
        system = [] if self.system is None else [{"role": "system", "content": [{"type": "text", "text": self.system}]}]
        return [*system, {"role": "user", "content": user}]

    def marker_user(self) -> str:
        return "<image>" * len(self.images) + self.user_text

    def str_prompt(self) -> list[dict[str, Any]]:
        system = [] if self.system is None else [{"role": "system", "content": self.system}]
        return [*system, {"role": "user", "content": self.marker_user()}]


def _assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def sft_row(ctx: SampleContext, chain: Chain, k: int, flavor: str) -> dict[str, Any]:
    text = chain.text
    if flavor == "llamafactory":
        messages = ctx.str_prompt() + [{"role": "assistant", "content": text}]
    else:
        messages = ctx.parts_prompt() + [_assistant(text)]
    return {
        "messages": messages,
        "images": list(ctx.images),
        **ctx.ident(f"{ctx.id}/{chain.strategy}/{k}"),
        "strategy": chain.strategy,
        "answer": chain.answer,
        "value": float(chain.value),
        "n_steps": len(chain.points),
        "points": [list(p) for p in chain.points],
        **ctx.frame_cols(),
    }


def observation_parts(text: str) -> list[dict[str, Any]]:
    """An observation's user-turn content: the text before the ``<image>`` marker, an image part, the
    text after (empty pieces dropped; a text without a marker gets its image first, as the teacher saw it)."""
    pieces = text.split(IMAGE_MARKER) if IMAGE_MARKER in text else ["", text]
    parts: list[dict[str, Any]] = []
    for i, piece in enumerate(pieces):
        if i:
            parts.append({"type": "image", "text": None})
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def observation_marker_text(text: str) -> str:
    """The observation as one string with its ``<image>`` marker (sharegpt)."""
    return text if IMAGE_MARKER in text else IMAGE_MARKER + text


def mt_sft_row(ctx: SampleContext, chain: MultiTurnChain, k: int, flavor: str, crops: dict[str, ImageBlob]) -> dict[str, Any]:
    """A multi-turn SFT row: system, user (images + question), then per zoom turn an assistant message
    and an observation user message, then the answer turn. ``images`` = sample images + one crop per
    observation, in placeholder order. ``crops``: crop file (relative to the run dir) → stored image."""
    parts = flavor != "llamafactory"
    messages = ctx.parts_prompt() if parts else ctx.str_prompt()
    images = list(ctx.images)
    boxes = []
    for turn in chain.turns:
        messages.append(_assistant(turn.text) if parts else {"role": "assistant", "content": turn.text})
        obs = turn.observation
        if obs is None:
            continue
        text = str(obs.get("text", ""))
        if parts:
            messages.append({"role": "user", "content": observation_parts(text)})
        else:
            messages.append({"role": "user", "content": observation_marker_text(text)})
        images.append(crops[str(obs["image"]["file"])])
        boxes.append([int(v) for v in obs.get("box") or []])
    return {
        "messages": messages,
        "images": images,
        **ctx.ident(f"{ctx.id}/{chain.strategy}/{k}"),
        "strategy": chain.strategy,
        "answer": chain.answer,
        "value": float(chain.value),
        "n_steps": len(chain.points),
        "points": [list(p) for p in chain.points],
        **ctx.frame_cols(),
        "multiturn": dict(ctx.multiturn or {}),
        "n_turns": len(chain.turns),
        "crop_boxes": boxes,
    }


def grpo_row(ctx: SampleContext, lin: Linearizer, index: int, flavor: str) -> dict[str, Any]:
    d = lin.difficulty()
    truth_json = json.dumps(ctx.truth, ensure_ascii=False, sort_keys=True)
    options_json = json.dumps(ctx.task_options, ensure_ascii=False, sort_keys=True)
    common = {
        **ctx.ident(f"{ctx.id}/grpo"),
        "root_value": float(d.root_value),
        "solved": bool(d.solved),
        "pass_rate": float(d.pass_rate),
        **ctx.frame_cols(),
    }
    if flavor == "easyr1":
        return {
            "prompt": ctx.marker_user() if ctx.system is None else f"{ctx.marker_user()}\n\n{ctx.system}",
            "answer": json.dumps({"task": ctx.task, "task_options": ctx.task_options, "truth": ctx.truth},
                                 ensure_ascii=False, sort_keys=True),
            "images": list(ctx.images),
            "reference": ctx.reference,
            **common,
        }
    row = {
        "prompt": ctx.str_prompt() if flavor == "verl" else ctx.parts_prompt(),
        "images": list(ctx.images),
        "answer": ctx.reference,
        "ground_truth": truth_json,
        **common,
        "data_source": DATA_SOURCE_PREFIX + ctx.task,
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": truth_json},
        "extra_info": {"split": ctx.split, "index": index, "id": ctx.id, "task": ctx.task, "task_options": options_json},
    }
    if ctx.multiturn is not None:
        row["multiturn"] = dict(ctx.multiturn)
    return row


def dpo_row(ctx: SampleContext, pair: Pair, k: int, flavor: str) -> dict[str, Any]:
    extra = {
        **ctx.ident(f"{ctx.id}/dpo/{k}"),
        "answer": pair.chosen.answer,
        "rejected_answer": pair.rejected.answer,
        "chosen_value": float(pair.chosen_q),
        "rejected_value": float(pair.rejected_q),
        "prefix_steps": pair.prefix_steps,
        **ctx.frame_cols(),
    }
    if flavor == "llamafactory":
        return {
            "messages": ctx.str_prompt(),
            "chosen": {"role": "assistant", "content": pair.chosen.text},
            "rejected": {"role": "assistant", "content": pair.rejected.text},
            "images": list(ctx.images),
            **extra,
        }
    return {
        "prompt": ctx.parts_prompt(),
        "chosen": [_assistant(pair.chosen.text)],
        "rejected": [_assistant(pair.rejected.text)],
        "images": list(ctx.images),
        **extra,
    }


def prm_row(ctx: SampleContext, row: PrmRow, k: int) -> dict[str, Any]:
    return {
        "prompt": ctx.parts_prompt(),
        "completions": list(row.steps),
        "labels": list(row.labels),
        "values": [float(v) for v in row.values],
        "visits": list(row.visits),
        "answer": row.answer,
        "correct": row.correct,
        "images": list(ctx.images),
        **ctx.ident(f"{ctx.id}/prm/{k}"),
        **ctx.frame_cols(),
    }


# --------------------------------------------------------------------------------------------
# Sinks
# --------------------------------------------------------------------------------------------


def _text_bytes(value: Any) -> int:
    """UTF-8 bytes of every string in a row (images excluded): the 'text size' of the benchmark."""
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, dict):
        return sum(_text_bytes(v) for v in value.values())
    if isinstance(value, list):
        return sum(_text_bytes(v) for v in value)
    return 0


class ParquetSink:
    """Streams rows into one parquet file.

    The ``images`` column is written as a parquet dictionary: each row group stores every distinct
    image once (a dictionary page) and rows hold indices, so a sample's image costs its bytes once
    however many chains repeat it. Readers see an ordinary ``list<struct<bytes, path>>`` (the arrow
    schema is not stored; the ``datasets`` features go in the file's key-value metadata). A row group
    closes at ``max_rows`` rows or once its distinct images reach ``max_image_bytes``."""

    def __init__(self, path: Path, features: Any, max_rows: int = 2000, max_image_bytes: int = 64 << 20) -> None:
        self.path = path
        self.features = features
        self.schema = features.arrow_schema
        self.max_rows = max_rows
        self.max_image_bytes = max_image_bytes
        self.rows = 0
        self._buf: list[dict[str, Any]] = []
        self._images: list[list[int]] = []  # per row: indices into _uniq
        self._uniq: list[bytes] = []
        self._index: dict[str, int] = {}
        self._uniq_bytes = 0
        self._writer: Any = None

    def add(self, row: dict[str, Any]) -> None:
        idx = []
        for blob in row["images"]:
            i = self._index.get(blob.sha1)
            if i is None:
                i = self._index[blob.sha1] = len(self._uniq)
                self._uniq.append(blob.data)
                self._uniq_bytes += len(blob.data)
            idx.append(i)
        self._images.append(idx)
        self._buf.append({k: v for k, v in row.items() if k != "images"})
        if len(self._buf) >= self.max_rows or self._uniq_bytes >= self.max_image_bytes:
            self._flush()

    def _table(self) -> Any:
        import pyarrow as pa

        rest = pa.schema([f for f in self.schema if f.name != "images"])
        table = pa.Table.from_pylist(self._buf, schema=rest)
        flat = [i for idx in self._images for i in idx]
        offsets = [0]
        for idx in self._images:
            offsets.append(offsets[-1] + len(idx))
        data = pa.DictionaryArray.from_arrays(pa.array(flat, pa.int32()), pa.array(self._uniq, pa.binary()))
        cells = pa.StructArray.from_arrays([data, pa.nulls(len(flat), pa.string())], names=["bytes", "path"])
        images = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), cells)
        cols = {f.name: (images if f.name == "images" else table.column(f.name)) for f in self.schema}
        return pa.table(cols)

    def _flush(self) -> None:
        import pyarrow.parquet as pq

        table = self._table()
        if self._writer is None:
            self._writer = pq.ParquetWriter(
                self.path, table.schema, compression="zstd", use_dictionary=True, store_schema=False,
                dictionary_pagesize_limit=1 << 30, write_statistics=False,
            )
        if self._buf:
            self._writer.write_table(table, row_group_size=len(self._buf) + 1)
        self.rows += len(self._buf)
        self._buf, self._images, self._uniq, self._index, self._uniq_bytes = [], [], [], {}, 0

    def close(self) -> None:
        self._flush()  # also creates an empty file with the schema when no row came
        self._writer.add_key_value_metadata(dict(self.schema.metadata or {}))
        self._writer.close()


class JsonlSink:
    """Rows as JSON lines; images written once to ``images/<sha1>.<ext>`` and referenced by path."""

    def __init__(self, path: Path, image_dir: Path) -> None:
        self.path = path
        self.image_dir = image_dir
        self.rows = 0
        self._fh = path.open("w", encoding="utf-8")

    def add(self, row: dict[str, Any]) -> None:
        paths = []
        for blob in row["images"]:
            name = f"{blob.sha1}.{blob.ext}"
            target = self.image_dir / name
            if not target.exists():
                self.image_dir.mkdir(parents=True, exist_ok=True)
                target.write_bytes(blob.data)
            paths.append(f"{self.image_dir.name}/{name}")
        self._fh.write(json.dumps({**row, "images": paths}, ensure_ascii=False) + "\n")
        self.rows += 1

    def close(self) -> None:
        self._fh.close()


# --------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------


def assign_splits(keys: dict[str, list[str]], val_fraction: float, seed: int) -> dict[str, str]:
    """``sample id -> "train" | "val"``. Samples that share any image key form one group (union-find);
    groups are ordered by ``sha256(seed:key)`` and taken into val until it holds ``round(f·N)`` samples
    (at least one when ``f > 0`` and N ≥ 2; never every sample)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for ks in keys.values():
        for k in ks[1:]:
            a, b = find(ks[0]), find(k)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[str, list[str]] = {}
    for sid, ks in keys.items():
        groups.setdefault(find(ks[0]) if ks else f"id:{sid}", []).append(sid)
    out = {sid: "train" for sid in keys}
    n = len(keys)
    if val_fraction <= 0 or n < 2:
        return out
    target = max(1, round(val_fraction * n))
    order = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    taken = 0
    for g in order:
        if taken >= target:
            break
        if taken + len(groups[g]) >= n:
            continue
        for sid in groups[g]:
            out[sid] = "val"
        taken += len(groups[g])
    return out


# --------------------------------------------------------------------------------------------
# The export
# --------------------------------------------------------------------------------------------


def sample_from_record(rec: dict[str, Any]) -> Sample:
    if not rec or "images" not in rec:
        raise ValueError("tree has no sample record")
    return Sample(
        id=str(rec.get("id", "")),
        images=list(rec["images"]),
        question=str(rec.get("question", "")),
        answer=str(rec.get("answer", "")),
        choices=[str(c) for c in rec.get("choices") or []],
        boxes=list(rec.get("boxes") or []),
        task=str(rec.get("task", "")),
        metadata=dict(rec.get("metadata") or {}),
        image_root=rec.get("image_root"),
    )


@dataclass
class ExportResult:
    out_dir: str
    kinds: list[str]
    flavor: str
    format: str
    mode: str = "single"  # single | multiturn (what was written)
    multiturn: dict[str, Any] | None = None  # multi-turn: the environment's settings the rows carry
    trees: int = 0  # tree records read (valid ones)
    samples_exported: int = 0  # samples with at least one row
    rows: dict[str, int] = field(default_factory=dict)  # file name -> rows
    strategies: dict[str, int] = field(default_factory=dict)  # sft chains per strategy
    skipped_records: list[dict[str, str]] = field(default_factory=list)  # whole samples / lines: {"id", "reason"}
    kind_skips: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> reason -> samples
    path_skips: dict[str, int] = field(default_factory=dict)  # candidate paths not used, by reason
    verdict_changed: int = 0  # leaves whose re-verification disagreed with the stored flag
    split_samples: dict[str, int] = field(default_factory=dict)
    unique_image_bytes: int = 0
    crop_images: int = 0  # multi-turn: crop images placed in rows (with repeats)
    text_bytes: int = 0
    output_bytes: int = 0
    seconds: float = 0.0

    def skip_kind(self, kind: str, reason: str) -> None:
        d = self.kind_skips.setdefault(kind, {})
        d[reason] = d.get(reason, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def resolve_export_config(
    run_config: dict[str, Any],
    *,
    recipe: str | None = None,
    overrides: list[str] | None = None,
    val_fraction: float | None = None,
    seed: int | None = None,
    strategies: str | None = None,
) -> tuple[ExportConfig, dict[str, Any]]:
    """The export knobs and task options, lowest precedence first: ``recipes/<task>.yaml`` ``export:``
    ← the run's resolved config (config.json) ← ``--recipe FILE`` ← ``--set export.KEY=V`` /
    ``--set task_options.KEY=V`` ← explicit flags. Raises ``ConfigError`` naming the key."""
    from ..config import ConfigError, apply_overrides, from_dict, load_recipe, section

    cfg = run_config.get("config", {}) if isinstance(run_config, dict) else {}
    task = str(cfg.get("task") or "sat2")
    base = dict(section(load_recipe(None, task), "export", f"recipe {task}"))
    base.update(section(cfg, "export", "config.json"))
    options = dict(section(cfg, "task_options", "config.json"))
    if recipe:
        rec = load_recipe(recipe, task)
        base.update(section(rec, "export", f"recipe {recipe}"))
        options.update(section(rec, "task_options", f"recipe {recipe}"))
    data = {"export": base, "task_options": options}
    for o in overrides or []:
        if not o.split("=", 1)[0].strip().startswith(("export.", "task_options.")):
            raise ConfigError(f"--set {o!r}: export takes export.KEY=VALUE or task_options.KEY=VALUE")
    data = apply_overrides(data, overrides or [], schema={"export": ExportConfig})
    for key, value in (("val_fraction", val_fraction), ("seed", seed), ("strategies", strategies)):
        if value is not None:
            data["export"][key] = value
    ec = from_dict(ExportConfig, data["export"], "export")
    try:
        ec.validate()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return ec, dict(data["task_options"])


def _run_settings(config: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
    cfg = config.get("config", {}) if isinstance(config, dict) else {}
    teacher = cfg.get("teacher", {}) or {}
    return (
        dict(cfg.get("task_options", {}) or {}),
        int(teacher.get("max_pixels", _DEFAULT_MAX_PIXELS)),
        int(teacher.get("min_pixels", _DEFAULT_MIN_PIXELS)),
    )


def export_run(
    run: str | Path,
    out: str | Path,
    *,
    kinds: list[str],
    cfg: ExportConfig,
    fmt: str = "parquet",
    flavor: str = "trl",
    image_root: str | None = None,
    limit: int | None = None,
    task_options: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    mode: str = "auto",
    allow_outside_root: bool = False,
    protocol: dict[str, Any] | None = None,
) -> ExportResult:
    """Export the trees of run directory ``run`` to ``out``. See the module docstring.

    Files a tree names are read inside the run directory only; source images (a tree without cached
    frames, or ``rescale_to_original``) inside their image root, under the run's input rules
    (``config.inputs``; ``allow_outside_root`` also allows paths outside it).

    Linearization runs in order on the calling thread; image loading/resizing/encoding for the next
    few samples runs on ``workers`` threads (default: CPU count, at most 8); rows are written in
    file order, so the output does not depend on ``workers``. ``protocol``: ``protocol_rows.protocol_settings``
    (system message, first user turn, multi-turn observations and crops in a released model's protocol)."""
    from ..tasks import get_task

    cfg.validate()
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if flavor not in FLAVORS:
        raise ExportError(f"--flavor {flavor!r}: expected one of {', '.join(FLAVORS)}")
    if mode not in MODES:
        raise ExportError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    store = RunStore.open_existing(run)
    run_dir = store.path
    config = store.config()
    mt = resolve_mode(config, mode)
    _check_kinds(kinds, flavor, mt, cfg)
    mt_settings = multiturn_settings(config) if mt else None
    if mt_settings is not None and protocol:
        mt_settings = env_settings(mt_settings, protocol)
    run_options, max_px, min_px = _run_settings(config)
    inputs = run_inputs(config, allow_outside_root)
    options = run_options if task_options is None else task_options
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ExportResult(out_dir=str(out_dir), kinds=list(kinds), flavor=flavor, format=fmt,
                          mode="multiturn" if mt else "single", multiturn=mt_settings)
    t0 = time.perf_counter()

    # Pass 1: image keys of every sample (for a leak-free split).
    keys: dict[str, list[str]] = {}
    unreadable: dict[str, str] = {}
    for tree in _trees(store, result, limit, record=True):
        try:
            keys[tree.sample_id] = image_keys(tree, image_root_for(tree.sample, config, image_root), inputs)
        except ValueError as exc:
            unreadable[tree.sample_id] = str(exc)
    splits = assign_splits(keys, cfg.val_fraction, cfg.seed)
    split_names = SPLITS if cfg.val_fraction > 0 else ("train",)

    # Pass 2: linearize, load images once per sample, write every kind's rows.
    sinks: dict[tuple[str, str], ParquetSink | JsonlSink] = {}
    for kind in kinds:
        for split in split_names:
            name = f"{kind}_{split}.{'parquet' if fmt == 'parquet' else 'jsonl'}"
            if fmt == "parquet":
                sinks[(kind, split)] = ParquetSink(out_dir / name, features_for(kind, flavor, mt))
            else:
                sinks[(kind, split)] = JsonlSink(out_dir / name, out_dir / "images")
    tasks: dict[str, Any] = {}
    seen_images: set[str] = set()
    grpo_index = {s: 0 for s in split_names}
    strategies = cfg.strategy_list()

    def load(tree: Tree, sample: Sample, task: Any, wanted: dict[str, list[Any]]) -> tuple[list[ImageBlob], dict[str, Any], dict[str, ImageBlob]]:
        """Image work for one sample (runs in a worker thread: PIL releases the GIL)."""
        blobs = sample_images(
            tree, image_root_for(tree.sample, config, image_root), run_dir=run_dir,
            rescale_to_original=cfg.rescale_to_original, fmt=cfg.image_format, quality=cfg.jpeg_quality,
            max_pixels=max_px, min_pixels=min_px, inputs=inputs,
        )
        truth = tree.truth
        if cfg.rescale_to_original:
            f = tree.frame
            truth = task.ground_truth(sample, Frame(f.orig_width, f.orig_height, f.orig_width, f.orig_height))
        if mt and changes_observations(protocol) and wanted.get("sft"):  # the protocol's observations: crops cut again
            frame = frame_image(tree, image_root_for(tree.sample, config, image_root), run_dir, inputs)
            wanted["sft"], crops = recut_chains(wanted["sft"], frame, mt_settings or {},
                                                lambda im: encode(im, "jpeg" if cfg.image_format == "jpeg" else "png", cfg.jpeg_quality))
        else:
            crops = crop_images(wanted.get("sft", []), run_dir, cfg.image_format, cfg.jpeg_quality, inputs.max_image_pixels) if mt else {}
        return blobs, truth, crops

    def emit(tree: Tree, lin: Linearizer, sample: Sample, task: Any, wanted: dict[str, list[Any]], fut: Any) -> None:
        sid = tree.sample_id
        split = splits[sid] if splits[sid] in split_names else "train"
        try:
            blobs, truth, crops = fut.result()
            ctx = SampleContext(
                id=sid,
                task=task.name,
                system=system_message(protocol or {}, task, mt),  # system_prompt: task | model | none | @FILE
                user_text=first_user_text(protocol or {}, task, sample),
                images=blobs,
                frame=tree.frame,
                coord_space="original" if cfg.rescale_to_original else "frame",
                image_hash=keys[sid][0] if keys.get(sid) else "",
                reference=_reference(task, sample, tree.truth),
                truth=truth,
                task_options=options,
                split=split,
                multiturn=mt_settings,
            )
        except Exception as exc:  # one bad sample never stops the export
            result.skipped_records.append({"id": sid, "reason": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})
            return
        wrote = False
        for kind, items in wanted.items():
            sink = sinks[(kind, split)]
            for k, item in enumerate(items):
                if kind == "sft" and mt:
                    row = mt_sft_row(ctx, item, k, flavor, crops)
                    result.crop_images += len(item.observations)
                    result.strategies[item.strategy] = result.strategies.get(item.strategy, 0) + 1
                elif kind == "sft":
                    row = sft_row(ctx, item, k, flavor)
                    result.strategies[item.strategy] = result.strategies.get(item.strategy, 0) + 1
                elif kind == "grpo":
                    row = grpo_row(ctx, lin, grpo_index[split], flavor)
                    grpo_index[split] += 1
                elif kind == "dpo":
                    row = dpo_row(ctx, item, k, flavor)
                else:
                    row = prm_row(ctx, item, k)
                result.text_bytes += _text_bytes({k2: v for k2, v in row.items() if k2 != "images"})
                sink.add(row)
                wrote = True
        if wrote:
            result.samples_exported += 1
            result.split_samples[split] = result.split_samples.get(split, 0) + 1
            for b in [*blobs, *crops.values()]:
                if b.sha1 not in seen_images:
                    seen_images.add(b.sha1)
                    result.unique_image_bytes += len(b.data)

    n_workers = max(1, workers if workers else min(8, os.cpu_count() or 1))
    pending: deque[tuple[Any, ...]] = deque()
    done = 0
    try:
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            for tree in _trees(store, None, limit, record=False):
                done += 1
                if progress:
                    progress(done)
                sid = tree.sample_id
                if sid in unreadable:
                    result.skipped_records.append({"id": sid, "reason": unreadable[sid]})
                    continue
                prepared = _sample_rows(tree, kinds, flavor, cfg, strategies, options, tasks, get_task, result, mt)
                if prepared is None or not any(prepared[3].values()):
                    continue
                lin, sample, task, wanted = prepared
                pending.append((tree, lin, sample, task, wanted, pool.submit(load, tree, sample, task, wanted)))
                while len(pending) > 4 * n_workers:  # rows leave in file order
                    emit(*pending.popleft())
            while pending:
                emit(*pending.popleft())
    finally:
        for sink in sinks.values():
            sink.close()
    for (kind, split), sink in sinks.items():
        result.rows[Path(sink.path).name] = sink.rows
    _write_extras(out_dir, flavor, fmt, kinds, split_names, sinks)
    result.seconds = round(time.perf_counter() - t0, 3)
    result.output_bytes = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file() and p.name != "export_summary.json")
    (out_dir / "export_summary.json").write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    return result


def _check_kinds(kinds: list[str], flavor: str, multiturn: bool, cfg: ExportConfig) -> None:
    """Refuse, in one line, what a flavor/mode cannot write."""
    if not multiturn:
        bad = [k for k in kinds if k not in FLAVORS[flavor]]
        if bad:
            raise ExportError(f"--flavor {flavor} writes {', '.join(FLAVORS[flavor])} only, not {bad[0]}")
        return
    if flavor not in MT_FLAVORS:
        raise ExportError(
            f"--flavor {flavor}: a multi-turn run's rows need a tool-calling rollout (the zoom environment) that "
            f"{flavor} files cannot carry; use --flavor trl (the bundled trainer runs the environment) or "
            "--flavor llamafactory (sft), or --mode single for single-turn rows"
        )
    bad = [k for k in kinds if k not in MT_FLAVORS[flavor]]
    if bad:
        raise ExportError(
            f"--kind {bad[0]}: a multi-turn export with --flavor {flavor} writes {', '.join(MT_FLAVORS[flavor])} only "
            f"(--mode single exports this run's {bad[0]} rows from single-turn chains)"
        )
    if cfg.rescale_to_original:
        raise ExportError(
            "export.rescale_to_original: not available for a multi-turn export (the crops were cut in the "
            "teacher's frame, so rows stay in it)"
        )


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


def _trees(store: RunStore, result: ExportResult | None, limit: int | None, record: bool) -> Iterator[Tree]:
    """Valid trees in file order, first occurrence of each sample id; errors recorded once (pass 1)."""
    seen: set[str] = set()
    for tree, err in store.iter_trees():
        if err or tree is None:
            if record and result is not None:
                result.skipped_records.append({"id": "", "reason": err or "unreadable tree"})
            continue
        if tree.sample_id in seen:
            if record and result is not None:
                result.skipped_records.append({"id": tree.sample_id, "reason": "duplicate sample id (first record kept)"})
            continue
        if limit is not None and len(seen) >= limit:
            break
        seen.add(tree.sample_id)
        if record and result is not None:
            result.trees += 1
        yield tree


def _reference(task: Any, sample: Sample, truth: dict[str, Any]) -> str:
    try:
        return str(task.reference(sample))
    except Exception:
        return str(truth.get("answer", sample.answer))


def _sample_rows(
    tree: Tree,
    kinds: list[str],
    flavor: str,
    cfg: ExportConfig,
    strategies: list[str],
    options: dict[str, Any],
    tasks: dict[str, Any],
    get_task: Callable[..., Any],
    result: ExportResult,
    multiturn: bool = False,
) -> tuple[Linearizer, Sample, Any, dict[str, list[Any]]] | None:
    """Linearize one tree: the items per kind (pure work; no image is read here). ``multiturn``: SFT
    items are :class:`MultiTurnChain` (steps need their observation)."""
    sid = tree.sample_id
    name = tree.task or str(tree.sample.get("task", ""))
    try:
        if name not in tasks:
            tasks[name] = get_task(name, options)
        task = tasks[name]
        sample = sample_from_record(tree.sample)
    except (KeyError, ValueError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        result.skipped_records.append({"id": sid, "reason": str(msg)})
        return None

    truth = tree.truth

    def verify(answer: str | None) -> bool:
        return task.verify(answer, truth).correct

    try:
        lin = Linearizer(tree, cfg, verify, task.backtrack_sentence, multiturn=multiturn)
        wanted: dict[str, list[Any]] = {}
        for kind in kinds:
            if kind == "sft":
                items: list[Any] = lin.mt_sft_chains(strategies) if multiturn else lin.sft_chains(strategies)
                if not items:
                    result.skip_kind("sft", "no verified-correct valid path" if not lin.difficulty().solved
                                     else "solved, but no correct path passed the step rules")
            elif kind == "grpo":
                keep, why = lin.keep_for_grpo()
                items = [None] if keep else []
                if why:
                    result.skip_kind("grpo", why)
            elif kind == "dpo":
                items = lin.dpo_pairs()
                if not items:
                    result.skip_kind("dpo", "no sibling pair (correct vs wrong) with the Q margin")
            else:
                items = lin.prm_rows()
                if not items:
                    result.skip_kind("prm", "no visited valid step")
            wanted[kind] = items
    except Exception as exc:  # a verifier that cannot read this tree's ground truth, …
        result.skipped_records.append({"id": sid, "reason": f"cannot linearize: {type(exc).__name__}: {exc}".splitlines()[0]})
        return None
    for reason, n in lin.skips.counts.items():
        result.path_skips[reason] = result.path_skips.get(reason, 0) + n
    result.verdict_changed += lin.verdict_changed
    return lin, sample, task, wanted


# --------------------------------------------------------------------------------------------
# Flavor extras: dataset_info.json (LLaMA-Factory), reward.py (verl, EasyR1)
# --------------------------------------------------------------------------------------------


def _write_extras(out_dir: Path, flavor: str, fmt: str, kinds: list[str], splits: tuple[str, ...], sinks: dict) -> None:
    ext = "parquet" if fmt == "parquet" else "jsonl"
    if flavor == "llamafactory":
        info: dict[str, Any] = {}
        tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                "system_tag": "system"}
        for kind in kinds:
            for split in splits:
                entry: dict[str, Any] = {"file_name": f"{kind}_{split}.{ext}", "formatting": "sharegpt", "tags": tags}
                if kind == "dpo":
                    entry.update(ranking=True, columns={"messages": "messages", "chosen": "chosen",
                                                        "rejected": "rejected", "images": "images"})
                else:
                    entry["columns"] = {"messages": "messages", "images": "images"}
                info[f"mcts_{kind}_{split}"] = entry
        (out_dir / "dataset_info.json").write_text(json.dumps(info, indent=2))
    elif flavor in ("verl", "easyr1"):
        fn = "verl_compute_score" if flavor == "verl" else "easyr1_compute_score"
        (out_dir / "reward.py").write_text(
            f'"""Reward for this export: the task\'s own verifier (mcts_engine must be importable)."""\n'
            f"from mcts_engine.export.formats import {fn} as compute_score  # noqa: F401\n"
        )


# --------------------------------------------------------------------------------------------
# Rewards for external trainers (the same verifier the search used)
# --------------------------------------------------------------------------------------------


def score_response(task_name: str, task_options: dict[str, Any] | None, response: str, truth: dict[str, Any]) -> dict[str, float]:
    """``accuracy``: the task's verifier on the response's final answer; ``format``: the response is
    ``<think> … </think><answer> … </answer>``; ``overall``: accuracy when well formed, else 0."""
    from ..tasks import get_task

    task = get_task(task_name, task_options or {})
    chk = check_chain(response)
    answer = chk.answer if chk.well_formed else extract_answer(response)
    acc = float(task.verify(answer, truth).score)
    fmt = 1.0 if chk.well_formed else 0.0
    return {"overall": acc if chk.well_formed else 0.0, "format": fmt, "accuracy": acc}


def verl_compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None, **_: Any) -> dict[str, float]:
    """verl ``custom_reward_function``: returns ``{"score", "format", "accuracy"}``."""
    info = extra_info or {}
    task = str(info.get("task") or str(data_source).removeprefix(DATA_SOURCE_PREFIX))
    options = json.loads(info["task_options"]) if info.get("task_options") else {}
    s = score_response(task, options, solution_str, json.loads(ground_truth))
    return {"score": s["overall"], "format": s["format"], "accuracy": s["accuracy"]}


def easyr1_compute_score(reward_input: Any, **_: Any) -> Any:
    """EasyR1 reward function (``reward_type`` sequential: one dict; batch: a list of dicts). The
    ``answer`` column holds ``{"task", "task_options", "truth"}`` as JSON (it arrives as ground_truth)."""

    def one(r: dict[str, Any]) -> dict[str, float]:
        gt = json.loads(r["ground_truth"])
        return score_response(gt["task"], gt.get("task_options"), r["response"], gt["truth"])

    if isinstance(reward_input, list):
        return [one(r) for r in reward_input]
    return one(reward_input)


def trl_accuracy_reward(completions: list[Any], ground_truth: list[str], task: list[str], **_: Any) -> list[float]:
    """TRL ``GRPOTrainer`` reward function for the GRPO files (``reward_funcs=trl_accuracy_reward``):
    TRL passes the ``ground_truth`` and ``task`` columns as keyword arguments; conversational
    completions arrive as ``[{"role": "assistant", "content": …}]``."""
    out = []
    for c, gt, name in zip(completions, ground_truth, task):
        text = c[-1]["content"] if isinstance(c, list) else str(c)
        if isinstance(text, list):  # content parts
            text = "".join(p.get("text") or "" for p in text)
        out.append(score_response(name, None, text, json.loads(gt))["overall"])
    return out
