"""Samples: what one item to search on is, and how files become items (an I/O edge).

What this package knows:

- the sample type (``types``): :class:`Sample` — one question about one or more images, boxes in ORIGINAL
  pixels — and the two failures, :class:`SampleError` (one row, recorded, the run goes on) and
  :class:`SampleLoadError` (the input cannot be read at all);
- the input rules (``bounds``): image paths confined to their root, bounded image pixels, text and line sizes;
- images (``images``, ``png``): opening them as RGB, the teacher's frame of one and its encoding once per sample;
  ``frames``: the :class:`FrameCache` shared between samples and the downscale warning (:class:`DownscaleWatch`);
- generic readers: plain and ViGoRL JSONL rows (``jsonl``), SAT-style parquet / ``save_to_disk`` tables
  (``parquet``), ViGoRL's released per-benchmark files (``vigorl``), options written in a question (``options``),
  box conventions (``boxes``) and multi-image items composed side by side (``composite``);
- :func:`load_samples` (``load``), the one entry point: benchmark layouts first, then the generic readers.

What it does not know: any benchmark's own file layout or any task's prompts and verifier — those live in the task
modules (``mcts_engine.tasks``), each of which provides the hook that recognises and reads its benchmark.
:func:`load_samples` asks the task registry for them when called; nothing here imports ``tasks`` at import time.
Frame geometry (Qwen's resize rule, the longer-side cap) is ``mcts_engine.frame``'s.
"""

from __future__ import annotations

from .boxes import box_center, point_text, to_xyxy
from .composite import compose_sample, compose_side_by_side
from .frames import DownscaleWatch, FrameCache, downscale_factor, watch_downscale
from .images import (
    EncodedImage,
    encode_image,
    frame_format,
    image_hash,
    image_size,
    load_frame,
    open_image,
    open_image_with_format,
    resolve_image_path,
)
from .jsonl import iter_json_rows, load_jsonl
from .load import load_samples, unique_samples, vetted
from .options import question_stem, split_options
from .parquet import load_table
from .png import encode_png
from .types import ImageSource, Sample, SampleError, SampleLoadError
from .vigorl import load_vigorl

__all__ = [
    "Sample", "SampleError", "SampleLoadError", "ImageSource",
    "load_samples", "vetted", "unique_samples", "load_jsonl", "iter_json_rows", "load_table", "load_vigorl",
    "EncodedImage", "open_image", "open_image_with_format", "resolve_image_path", "image_size", "image_hash",
    "frame_format", "encode_image", "load_frame", "encode_png",
    "FrameCache", "DownscaleWatch", "downscale_factor", "watch_downscale",
    "to_xyxy", "box_center", "point_text", "compose_side_by_side", "compose_sample",
    "split_options", "question_stem",
]
