"""The layouts of ViGoRL's released datasets (``gsarch/vigorl_datasets``) → :class:`~mcts_engine.samples.Sample`.

The authors' evaluation and search code reads every benchmark from one JSONL layout (its data loader keeps
``id``, ``image``, ``conversations``; the first turn is the query, the second the ground truth)::

    {"id": "...", "image": "<path relative to DATA_ROOT>",
     "conversations": [{"from": "human", "value": "<image>…query…"}, {"from": "gpt", "value": "…answer…"}]}

with one file per benchmark under ``DATA_ROOT`` (``--image-root $DATA_ROOT``; without it, the nearest folder
above the file that holds the first row's image):

- SAT-2 ``spatial_reasoning/sat2_test/sat2_test.jsonl`` and BLINK ``spatial_reasoning/blink/blink_validation.jsonl``:
  the query lists the options; the answer is an option's text (scored by exact string match). BLINK ids are
  ``val_<Sub_Task>_<n>`` — the sub-task BLINK reports by is read from the id (``metadata["sub_task"]``).
- V*Bench ``visual_search/vstar/vstarbench_test.jsonl``: options in the query, answer = option text; the
  category (``direct_attributes`` / ``relative_position``) is the image's folder (``metadata["category"]``).
- Web grounding ``web_grounding/ScreenSpot-Pro/screenspot_pro_test.jsonl`` and
  ``web_grounding/ScreenSpot-V2/screenspot_v2_test.jsonl``: the query is the element's description, the answer
  the target box ``"(x1, y1, x2, y2)"`` in ORIGINAL pixels (scored: the predicted point inside the box). It
  becomes ``Sample.boxes`` (label ``target``); ``metadata["benchmark"]`` names the file's benchmark.

Options, read from the query in whichever of these forms it uses: lettered ``(A) text`` (inline or one per
line), ``A. text`` / ``A) text`` / ``A: text`` one per line, or a ``Choices:`` / ``Options:`` /
``Answer choices:`` line holding a comma list or a bracketed list (``['left', 'right']``). An answer given as a
letter (``B``, ``(B)``) becomes that option's text. Truth is the option text exactly as listed; a row whose
answer is not one of its options keeps its options and is refused by the task's check (a one-line failure), never
silently rescored. Everything else is ``samples.load_jsonl``'s (errors name file, row and field).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from ..config import InputConfig
from ..verifiers import resolve_choice
from .jsonl import load_jsonl
from .options import split_options
from .probe import InputProbe
from .types import Sample, SampleError

_BOX = re.compile(r"^\s*[\(\[]\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*[\)\]]\s*$")
_BLINK_ID = re.compile(r"^(?:val|test)_(.+)_\d+$")
_VSTAR_CATEGORIES = ("direct_attributes", "relative_position")
_BENCHMARKS = {"screenspot_pro": "ScreenSpot-Pro", "screenspot-pro": "ScreenSpot-Pro", "screenspot_v2": "ScreenSpot-V2",
               "screenspot-v2": "ScreenSpot-V2", "sat2": "SAT-2", "blink": "BLINK", "vstar": "V*Bench"}


def is_vigorl_row(row: dict[str, Any] | None) -> bool:
    """Whether a JSONL row has the released layout (``conversations`` + ``image``)."""
    return isinstance(row, dict) and isinstance(row.get("conversations"), list) and "image" in row


def parse_options(query: str) -> list[str]:
    """The options a query lists, in any layout the one option parser knows (``mcts_engine.samples.options``)."""
    return split_options(query)


def benchmark_of(path: Path) -> str:
    """The benchmark a released file holds, from its name or folder (``""`` if unknown)."""
    text = str(path).lower()
    for key, name in _BENCHMARKS.items():
        if key in text:
            return name
    return ""


def adapt(sample: Sample, benchmark: str) -> Sample:
    """One generically parsed row (``samples.load_jsonl``) read the released way: options, letter answers,
    BLINK's sub-task, V*'s category, a grounding box answer. ``ValueError`` (one line) on a malformed box."""
    meta = dict(sample.metadata)
    choices = parse_options(sample.question) or list(sample.choices)  # the query holds them (read again: all forms)
    answer = sample.answer
    if choices:
        idx = resolve_choice(answer, choices)
        if idx is not None:
            answer = choices[idx]
    boxes = list(sample.boxes)
    m = _BOX.match(answer) if not choices else None
    if m and not boxes:
        x1, y1, x2, y2 = (float(g) for g in m.groups())
        boxes = [{"label": "target", "bbox": [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]}]
        meta.setdefault("source_bbox", [float(g) for g in m.groups()])
    blink = _BLINK_ID.match(sample.id)
    if blink and (benchmark == "BLINK" or sample.task == "blink"):
        meta.setdefault("sub_task", blink.group(1))
    image = sample.images[0] if sample.images else ""
    if isinstance(image, str):
        parts = PurePosixPath(image.replace("\\", "/")).parts
        category = next((p for p in parts if p in _VSTAR_CATEGORIES), "")
        if category:
            meta.setdefault("category", category)
    if benchmark:
        meta.setdefault("benchmark", benchmark)
    return replace(sample, choices=choices, answer=answer, boxes=boxes, metadata=meta)


def data_root(path: Path) -> str | None:
    """Where a released file's relative image paths resolve when no ``--image-root`` is given: the nearest folder
    above the file (itself first) that holds the first row's image — ``DATA_ROOT`` in the released tree."""
    import json

    try:
        with path.open("r", encoding="utf-8") as fh:
            first = next((json.loads(line) for line in fh if line.strip()), None)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    image = first.get("image") if isinstance(first, dict) else None
    if not isinstance(image, str) or not image or Path(image).is_absolute():
        return None
    for folder in [path.parent, *path.parent.parents]:
        if (folder / image).exists():
            return str(folder)
    return None


def load_vigorl(
    path: str | Path, image_root: str | None = None, task: str = "", inputs: InputConfig | None = None
) -> Iterator[Sample | SampleError]:
    """The samples of one released JSONL file (see the module docstring); bad rows become ``SampleError``
    (``inputs``: the bounds and image-root rule every loader applies)."""
    p = Path(path)
    bench = benchmark_of(p)
    for item in load_jsonl(p, image_root or data_root(p), task, inputs):
        if isinstance(item, SampleError):
            yield item
            continue
        try:
            yield adapt(item, bench)
        except ValueError as exc:
            yield SampleError(item.id, f"{p}: {item.id}: {exc}")


def detect(probe: InputProbe) -> bool:
    """Whether the input is in the released layout: a ``.jsonl`` file, or a directory of them (no parquet table),
    whose (first file's) first row has it. ``load_samples`` asks after the task modules' layouts (a web-action or
    V* ``test_questions`` row is theirs) and before the generic readers."""
    if probe.is_dir and probe.columns is not None:
        return False
    return bool(probe.jsonls) and is_vigorl_row(probe.first_row)


def load(probe: InputProbe, image_root: str | None = None, task: str = "", inputs: InputConfig | None = None
         ) -> Iterator[Sample | SampleError]:
    """The samples of every released file of a :func:`detect`-ed input, in file order."""
    return (s for f in probe.jsonls for s in load_vigorl(f, image_root, task, inputs=inputs))


__all__ = ["detect", "load", "is_vigorl_row", "parse_options", "benchmark_of", "adapt", "data_root", "load_vigorl"]
