"""Input hygiene: what a row may name and hold (the rules of ``docs/input-data.md``).

Every check answers with a one-line reason; the loaders turn it into a sample failure naming the file,
line and field, and the run goes on. The bounds come from :class:`~mcts_engine.config.InputConfig`.

- Image paths stay inside their image root (``--image-root``, else the data file's folder): a path that
  resolves outside it — ``../``, an absolute path elsewhere, a symlink pointing out — is refused unless
  ``inputs.allow_outside_root`` (``--allow-outside-root``). :func:`confine` is the one place of that rule,
  used by the loaders, the frame preparation and the exporter (which also keeps its run-directory files
  inside the run directory with it).
- A decoded image is bounded: :func:`open_bounded` reads the header, refuses more than
  ``max_image_pixels`` before any pixel is decoded, and turns Pillow's own decompression-bomb error
  (above 2 × ``PIL.Image.MAX_IMAGE_PIXELS``, which this module never changes) into the same one line.
- Text fields are bounded (:func:`text_problem`); a JSONL line is read as bytes, bounded by
  ``max_row_bytes`` and decoded on its own (:func:`iter_lines`, :func:`decode_json_line`), so one bad
  byte costs one row; unreadable parquet rows are failures too (:func:`iter_parquet_rows`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from PIL import Image

from ..config import InputConfig

DEFAULT_INPUTS = InputConfig()
ALLOW_HINT = "--allow-outside-root or --set inputs.allow_outside_root=true allows it"


def confine(src: str, root: str | Path | None, allow_outside: bool = False, what: str = "image root") -> Path:
    """``src`` resolved against ``root`` (joined when relative). ``ValueError`` (one line) when it resolves —
    symlinks followed — outside ``root``, unless ``allow_outside``. No root: the path as given, unchecked
    (the caller named the file itself)."""
    p = Path(src)
    if root is None or str(root) == "":
        return p
    path = p if p.is_absolute() else Path(root) / p
    if allow_outside:
        return path
    real, base = path.resolve(), Path(root).resolve()
    if real != base and not real.is_relative_to(base):
        hint = f" ({ALLOW_HINT})" if what == "image root" else ""
        raise ValueError(f"path {src!r} resolves outside the {what} {root}{hint}")
    return path


ImageInput = Path | bytes | bytearray


def open_bounded(src: ImageInput | IO[bytes], max_pixels: int, where: str) -> Image.Image:
    """Open an image lazily (header only) and refuse it, before decoding, when width × height exceeds
    ``max_pixels``. Raises ``ValueError`` (one line) for a bomb; other Pillow errors pass through."""
    import io

    fp = io.BytesIO(bytes(src)) if isinstance(src, (bytes, bytearray)) else src
    try:
        with warnings.catch_warnings():  # our bound decides; Pillow's warning below it is noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image {where} is too large to decode (Pillow: {str(exc).splitlines()[0]})") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise ValueError(
            f"image {where} is {w}x{h} = {w * h:,} pixels, over inputs.max_image_pixels {max_pixels:,} "
            "(a decompression bomb?)"
        )
    return img


def text_problem(question: str, answer: str, choices: list[str], limits: InputConfig) -> str | None:
    """The first text field over its bound, as ``field 'x' is N characters, over inputs.key M``; else None."""
    if len(question) > limits.max_question_chars:
        return f"field 'question' is {len(question):,} characters, over inputs.max_question_chars {limits.max_question_chars:,}"
    if len(answer) > limits.max_answer_chars:
        return f"field 'answer' is {len(answer):,} characters, over inputs.max_answer_chars {limits.max_answer_chars:,}"
    if len(choices) > limits.max_choices:
        return f"field 'choices' has {len(choices)} options, over inputs.max_choices {limits.max_choices}"
    for i, c in enumerate(choices):
        if len(c) > limits.max_choice_chars:
            return f"field 'choices[{i}]' is {len(c):,} characters, over inputs.max_choice_chars {limits.max_choice_chars:,}"
    return None


def sample_problem(sample: Any, limits: InputConfig) -> str | None:
    """Why a loaded ``Sample`` breaks the input rules (text bounds, then each image path inside the
    sample's image root unless ``allow_outside_root``), naming the field; None when it is fine."""
    why = text_problem(sample.question, sample.answer, sample.choices, limits)
    if why is not None:
        return why
    root = sample.image_root if sample.image_root is not None else "."
    for i, src in enumerate(sample.images):
        if isinstance(src, str):
            try:
                confine(src, root, limits.allow_outside_root)
            except ValueError as exc:
                return f"field '{'image' if len(sample.images) == 1 else f'images[{i}]'}': {exc}"
    return None


def iter_lines(fh: IO[bytes], max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, raw bytes)`` for each line of a binary file; ``None`` for a line longer than
    ``max_bytes`` (read past in chunks, never held whole)."""
    lineno = 0
    while True:
        line = fh.readline(max_bytes + 1)
        if not line:
            return
        lineno += 1
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while True:
                chunk = fh.readline(1 << 20)
                if not chunk or chunk.endswith(b"\n"):
                    break
            yield lineno, None
            continue
        yield lineno, line


def decode_json_line(raw: bytes, where: str) -> dict[str, Any] | str | None:
    """One JSONL line → its object; a one-line reason (str) for bad bytes, bad JSON or a non-object;
    None for a blank line. A UTF-8 byte-order mark is ignored."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
    text = text.lstrip("\ufeff")
    if not text.strip():
        return None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"{where}: not valid JSON ({exc.msg} at column {exc.colno})"
    except RecursionError:
        return f"{where}: not valid JSON (nested too deeply)"
    if not isinstance(row, dict):
        return f"{where}: row is not a JSON object"
    return row


def iter_parquet_rows(path: Path, batch_size: int = 64) -> Iterator[dict[str, Any] | tuple[int, str]]:
    """The rows of one parquet file as dicts; a row (or, when the file itself breaks, the rest of the
    file) that cannot be read comes as ``(row index, one-line reason)`` instead."""
    import pyarrow.parquet as pq

    index = 0
    try:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=batch_size):
            try:
                rows: list[Any] = batch.to_pylist()
            except Exception:  # a bad value: read the batch row by row to keep the good ones
                rows = []
                for i in range(batch.num_rows):
                    try:
                        rows.append(batch.slice(i, 1).to_pylist()[0])
                    except Exception as exc:
                        rows.append((index + i, f"{path.name} row {index + i}: cannot be read ({_one_line(exc)})"))
            yield from rows
            index += batch.num_rows
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        yield index, f"{path.name} row {index}: this row and the rest of the file cannot be read ({_one_line(exc)})"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


__all__ = ["confine", "open_bounded", "text_problem", "sample_problem", "iter_lines", "decode_json_line", "iter_parquet_rows",
           "DEFAULT_INPUTS", "ALLOW_HINT"]
