"""Training data: reading the export parquets, encoding rows, loss masks and collation.

Input schemas (the export contract):
- SFT (TRL conversational VLM): ``messages`` = [{role, content: [{type, text}]}] — a system turn, a user turn
  (``{"type": "image"}`` parts, then one text part), an assistant turn (the chain); ``images`` = [{bytes, path}];
  plus ``id``, ``task``, ``answer``, ``frame_width``, ``frame_height``.
- GRPO: ``prompt`` (system + user messages, same struct), ``images``, ``answer``, ``task``, ``ground_truth``
  (JSON string), ``frame_width``, ``frame_height`` (other columns, e.g. verl's, are ignored).

Invariants and choices:
- Text is rendered by the model's own chat template, images by its own processor; images are NOT resized again
  (see ``model.fit_processor_to_frames``): the coordinates in the chains stay in the frame the model sees.
- Loss mask = every assistant turn, found as the token sequence of the assistant header
  (``<|im_start|>assistant\\n``), from the token after it through its closing ``<|im_end|>`` (the model learns to
  stop). Never a fixed offset. Everything else (system, user, image tokens, padding) is masked.
- Image tokens are never truncated: a row longer than ``max_length`` is skipped and counted, with a warning.
  Lengths are computed up front from the text and the image sizes (cheap: image headers only), so the number of
  optimizer steps, and the data position on ``--resume``, are exact.
- ``mm_token_type_ids`` (1 on image tokens) travels with every batch: without it transformers 5.x silently
  uses 1-D positions for image tokens (wrong MRoPE).
- Batches are right-padded for training, left-padded for generation; ``pixel_values``/``image_grid_thw`` are
  concatenated in row order (the model consumes them in the order the image tokens appear).
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .model import TrainSetupError

log = logging.getLogger("mcts_engine.train")

SFT_REQUIRED = ("messages", "images")
GRPO_REQUIRED = ("prompt", "images", "task", "ground_truth")
ASSISTANT_HEADER = "<|im_start|>assistant\n"
TURN_END = "<|im_end|>"
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


# ------------------------------------------------------------------------------------------------
# Reading parquet
# ------------------------------------------------------------------------------------------------


class RowSource:
    """A parquet file held as a (memory-mapped) Arrow table; rows are read one at a time by index."""

    def __init__(self, path: str | Path, required: Sequence[str], kind: str) -> None:
        import pyarrow.parquet as pq

        self.path = Path(path)
        self.kind = kind
        if not self.path.exists():
            raise TrainSetupError(f"{self.path}: no such file")
        try:
            self.table = pq.read_table(self.path, memory_map=True)
        except Exception as exc:  # pyarrow raises several types for a non-parquet file
            raise TrainSetupError(f"{self.path}: not a readable parquet file ({str(exc).splitlines()[0]})") from None
        missing = [c for c in required if c not in self.table.column_names]
        if missing:
            hint = " (is this the other export? SFT needs 'messages', GRPO needs 'prompt')"
            raise TrainSetupError(
                f"{self.path}: missing column {missing[0]!r} for {kind} data{hint} (columns: {', '.join(self.table.column_names)})"
            )
        if self.table.num_rows == 0:
            raise TrainSetupError(f"{self.path}: no rows")

    def __len__(self) -> int:
        return self.table.num_rows

    def row(self, i: int, columns: Sequence[str] | None = None) -> dict[str, Any]:
        t = self.table.slice(i, 1)
        if columns is not None:
            t = t.select([c for c in columns if c in t.column_names])
        return t.to_pylist()[0]

    def column(self, name: str) -> list[Any]:
        """A light column as Python values (never ``images``: use :meth:`iter_column` / :attr:`image_sizes`)."""
        if name not in self.table.column_names:
            return [None] * len(self)
        return self.table.column(name).to_pylist()

    def iter_column(self, name: str, batch: int = 256):
        """Values of a column, ``batch`` rows at a time (image bytes are never all in memory at once)."""
        for start in range(0, len(self), batch):
            yield from self.table.slice(start, batch).column(name).to_pylist()

    @property
    def image_sizes(self) -> list[list[tuple[int, int]]]:
        """(width, height) of every image of every row, read from image headers once and cached."""
        if getattr(self, "_sizes", None) is None:
            self._sizes = [
                [image_size(cell, self.where(i, "images")) for cell in cells or []]
                for i, cells in enumerate(self.iter_column("images"))
            ]
        return self._sizes

    def where(self, i: int, field_name: str | None = None) -> str:
        return f"{self.path}: row {i}" + (f": field {field_name!r}" if field_name else "")


def image_bytes(cell: Any, where: str) -> bytes:
    """A datasets Image cell ({bytes, path}) → encoded bytes (a path is read from disk)."""
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return bytes(cell["bytes"])
        if cell.get("path"):
            p = Path(cell["path"])
            if not p.exists():
                raise TrainSetupError(f"{where}: image path {p} does not exist")
            return p.read_bytes()
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell)
    raise TrainSetupError(f"{where}: an image must be {{bytes, path}}, got {type(cell).__name__}")


def image_size(cell: Any, where: str) -> tuple[int, int]:
    """(width, height) from the image header only."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(image_bytes(cell, where))) as im:
            return im.size
    except TrainSetupError:
        raise
    except Exception as exc:
        raise TrainSetupError(f"{where}: unreadable image ({exc})") from None


def decode_images(cells: Sequence[Any], where: str) -> list[Any]:
    from PIL import Image

    out = []
    for cell in cells:
        try:
            im = Image.open(io.BytesIO(image_bytes(cell, where)))
            out.append(im.convert("RGB"))
        except TrainSetupError:
            raise
        except Exception as exc:
            raise TrainSetupError(f"{where}: unreadable image ({exc})") from None
    return out


def normalize_messages(messages: Any, where: str) -> list[dict[str, Any]]:
    """Validate the message struct; drop null ``text`` keys from image parts (templates test ``'text' in part``)."""
    if not isinstance(messages, list) or not messages:
        raise TrainSetupError(f"{where}: must be a non-empty list of messages")
    out = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise TrainSetupError(f"{where}: every message needs a string 'role'")
        content = m.get("content")
        if isinstance(content, str):
            out.append({"role": m["role"], "content": content})
            continue
        if not isinstance(content, list):
            raise TrainSetupError(f"{where}: message 'content' must be a list of parts or a string")
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("image", "text"):
                raise TrainSetupError(f"{where}: a content part must be {{type: image|text, text}}")
            if part["type"] == "image":
                parts.append({"type": "image"})
            else:
                parts.append({"type": "text", "text": part.get("text") or ""})
        out.append({"role": m["role"], "content": parts})
    return out


def count_image_parts(messages: list[dict[str, Any]]) -> int:
    return sum(
        1 for m in messages if isinstance(m["content"], list) for p in m["content"] if p.get("type") == "image"
    )


# ------------------------------------------------------------------------------------------------
# Templates, masks, token counts
# ------------------------------------------------------------------------------------------------


def render(processor: Any, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> str:
    """The chat-template text (image parts become one ``<|image_pad|>`` each; the processor expands them)."""
    owner = processor if getattr(processor, "chat_template", None) else processor.tokenizer
    return owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


@dataclass(frozen=True)
class SpecialIds:
    header: tuple[int, ...]  # <|im_start|>assistant\n
    end: int  # <|im_end|>
    pad: int
    image: int
    eos: tuple[int, ...]  # tokens that end a generation
    vision: tuple[int, ...] = ()  # vision placeholder tokens: never sampled (each must match an image feature)

    @classmethod
    def from_processor(cls, processor: Any) -> SpecialIds:
        tok = processor.tokenizer
        header = tuple(tok.encode(ASSISTANT_HEADER, add_special_tokens=False))
        end = tok.convert_tokens_to_ids(TURN_END)
        if end is None or end == tok.unk_token_id:
            raise TrainSetupError(f"tokenizer has no {TURN_END} token (not a Qwen-style chat model?)")
        image = getattr(processor, "image_token_id", None)
        if image is None:
            image = tok.convert_tokens_to_ids("<|image_pad|>")
        pad = tok.pad_token_id if tok.pad_token_id is not None else end
        eos = tuple(dict.fromkeys(t for t in (end, tok.eos_token_id) if t is not None))
        vision = tuple(
            int(i) for t in VISION_TOKENS
            if (i := tok.convert_tokens_to_ids(t)) is not None and i != tok.unk_token_id
        )
        return cls(header=header, end=int(end), pad=int(pad), image=int(image), eos=eos, vision=vision)

    def with_eos(self, more: Sequence[int]) -> SpecialIds:
        """The same ids with ``more`` end tokens (the model's EOS list) added to ``eos`` (``<|im_end|>`` stays)."""
        from dataclasses import replace

        return replace(self, eos=tuple(dict.fromkeys([*self.eos, *(int(t) for t in more)])))


def assistant_mask(ids: Sequence[int], header: Sequence[int], end_id: int) -> list[bool]:
    """True on every assistant token: after each ``header`` occurrence, up to and including its ``end_id``
    (to the sequence end when the turn is unterminated). The header itself is never in the mask."""
    n, h = len(ids), len(header)
    mask = [False] * n
    i = 0
    header = list(header)
    while i <= n - h:
        if list(ids[i:i + h]) == header:
            j = i + h
            while j < n:
                mask[j] = True
                if ids[j] == end_id:
                    break
                j += 1
            i = j + 1
        else:
            i += 1
    return mask


def image_tokens(processor: Any, width: int, height: int) -> tuple[int, bool]:
    """(tokens the LLM sees for one image, whether the processor resizes it)."""
    ip = processor.image_processor
    merge = int(getattr(ip, "merge_size", 2))
    patch = int(getattr(ip, "patch_size", 14))
    patches = ip.get_number_of_image_patches(height, width, {})
    grid = patches  # grid_h * grid_w
    resized = grid != (height // patch) * (width // patch) or height % (patch * merge) or width % (patch * merge)
    return patches // (merge * merge), bool(resized)


# ------------------------------------------------------------------------------------------------
# Scanning a file: lengths, skips
# ------------------------------------------------------------------------------------------------


@dataclass
class Scan:
    """What a pass over a file found: rows kept (with their token length), rows skipped (with reasons)."""

    kept: list[int] = field(default_factory=list)
    lengths: dict[int, int] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)
    resized: int = 0  # rows whose image the processor resizes (frame not a multiple of 28 / outside bounds)
    frame_mismatch: int = 0  # rows whose image size differs from frame_width × frame_height
    max_frame: tuple[int, int] = (0, 0)

    def summary(self) -> dict[str, Any]:
        return {"kept": len(self.kept), "skipped": dict(self.skipped), "resized": self.resized,
                "frame_mismatch": self.frame_mismatch}


def frames_of(source: RowSource) -> list[tuple[int, int]]:
    """Every image size in the file (headers only), for sizing the processor."""
    return [size for sizes in source.image_sizes for size in sizes]


def scan(source: RowSource, processor: Any, max_length: int, message_column: str, need_assistant: bool) -> Scan:
    """Validate every row and compute its token length without decoding pixels. Bad structure is an error
    naming the row; a row over ``max_length`` is skipped and counted."""
    ids = SpecialIds.from_processor(processor)
    tok = processor.tokenizer
    result = Scan()
    messages_col = source.column(message_column)
    fw, fh = source.column("frame_width"), source.column("frame_height")
    for i, (raw, sizes) in enumerate(zip(messages_col, source.image_sizes)):
        messages = normalize_messages(raw, source.where(i, message_column))
        n_parts = count_image_parts(messages)
        if n_parts != len(sizes):
            raise TrainSetupError(
                f"{source.where(i, 'images')}: {len(sizes)} images but {n_parts} image parts in {message_column!r}"
            )
        roles = [m["role"] for m in messages]
        if need_assistant and "assistant" not in roles:
            raise TrainSetupError(f"{source.where(i, message_column)}: no assistant message")
        if not need_assistant and roles[-1] == "assistant":
            raise TrainSetupError(f"{source.where(i, message_column)}: a prompt must not end with an assistant turn")
        text = render(processor, messages, add_generation_prompt=not need_assistant)
        token_ids = tok.encode(text, add_special_tokens=False)
        if need_assistant and not any(assistant_mask(token_ids, ids.header, ids.end)):
            raise TrainSetupError(
                f"{source.where(i, message_column)}: the assistant header {ASSISTANT_HEADER!r} is not found as a "
                "token sequence in the rendered chat (chat template of another model family?)"
            )
        length = len(token_ids)
        resized = False
        for k, (w, h) in enumerate(sizes):
            n_tok, r = image_tokens(processor, w, h)
            length += n_tok - 1
            resized = resized or r
            if k == 0:
                result.max_frame = (max(result.max_frame[0], w), max(result.max_frame[1], h))
                if fw[i] is not None and fh[i] is not None and (int(fw[i]), int(fh[i])) != (w, h):
                    result.frame_mismatch += 1
        result.resized += int(resized)
        if length > max_length:
            result.skipped["too_long"] += 1
            continue
        result.kept.append(i)
        result.lengths[i] = length
    return result


def report_scan(path: Path, result: Scan, max_length: int) -> None:
    """Warn about skipped/resized rows (once per file)."""
    if result.skipped.get("too_long"):
        log.warning("%s: skipped %d of %d rows longer than train.max_length=%d tokens (image tokens are never truncated)",
                    path, result.skipped["too_long"], len(result.kept) + sum(result.skipped.values()), max_length)
    if result.resized:
        log.warning("%s: the processor resizes the images of %d rows (frame not a multiple of 28 or outside "
                    "train.max_pixels): their (x, y) points no longer match the pixels the model sees", path, result.resized)
    if result.frame_mismatch:
        log.warning("%s: %d rows have an image whose size differs from frame_width x frame_height", path,
                    result.frame_mismatch)
    if not result.kept:
        raise TrainSetupError(f"{path}: no row fits train.max_length={max_length} (raise it)")


# ------------------------------------------------------------------------------------------------
# Encoding and collation
# ------------------------------------------------------------------------------------------------


def encode(processor: Any, text: str, images: list[Any]) -> dict[str, torch.Tensor]:
    """One row through the processor: 1-D ``input_ids``/``mm_token_type_ids``, plus pixels and grids."""
    out = processor(text=[text], images=[images] if images else None, return_tensors="pt")
    enc = {
        "input_ids": out["input_ids"][0],
        "mm_token_type_ids": out["mm_token_type_ids"][0] if "mm_token_type_ids" in out else None,
    }
    if enc["mm_token_type_ids"] is None:
        image_id = SpecialIds.from_processor(processor).image
        enc["mm_token_type_ids"] = (enc["input_ids"] == image_id).long()
    if images:
        enc["pixel_values"] = out["pixel_values"]
        enc["image_grid_thw"] = out["image_grid_thw"]
    return enc


def encode_sft_row(row: dict[str, Any], processor: Any, ids: SpecialIds, where: str) -> dict[str, torch.Tensor]:
    messages = normalize_messages(row["messages"], where)
    images = decode_images(row.get("images") or [], where)
    enc = encode(processor, render(processor, messages), images)
    mask = assistant_mask(enc["input_ids"].tolist(), ids.header, ids.end)
    enc["target_mask"] = torch.tensor(mask, dtype=torch.bool)
    return enc


def encode_prompt(messages: list[dict[str, Any]], images: list[Any], processor: Any) -> dict[str, torch.Tensor]:
    enc = encode(processor, render(processor, messages, add_generation_prompt=True), images)
    enc["target_mask"] = torch.zeros_like(enc["input_ids"], dtype=torch.bool)
    return enc


def _pad(seqs: list[torch.Tensor], value: int | bool, left: bool) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=seqs[0].dtype)
    for r, s in enumerate(seqs):
        if left:
            out[r, width - len(s):] = s
        else:
            out[r, : len(s)] = s
    return out


def collate(rows: list[dict[str, torch.Tensor]], pad_id: int, left: bool = False) -> dict[str, torch.Tensor]:
    """Pad rows into a batch: ``input_ids``, ``attention_mask``, ``mm_token_type_ids``, ``target_mask``
    (right-padded unless ``left``), and the concatenated ``pixel_values``/``image_grid_thw``."""
    batch = {
        "input_ids": _pad([r["input_ids"] for r in rows], pad_id, left),
        "attention_mask": _pad([torch.ones_like(r["input_ids"]) for r in rows], 0, left),
        "mm_token_type_ids": _pad([r["mm_token_type_ids"] for r in rows], 0, left),
        "target_mask": _pad([r["target_mask"] for r in rows], False, left),
    }
    with_images = [r for r in rows if "pixel_values" in r]
    if with_images:
        batch["pixel_values"] = torch.cat([r["pixel_values"] for r in with_images])
        batch["image_grid_thw"] = torch.cat([r["image_grid_thw"] for r in with_images])
    return batch


class SFTDataset(torch.utils.data.Dataset):
    """Map-style dataset over the kept rows of an SFT parquet (encoding happens in DataLoader workers).

    A row's encoding (tokens, pixels, masks) depends only on the row, so the first ``cache_bytes`` of encodings
    are kept and reused when the row comes round again (the next epoch): decoding the images and running the
    processor is skipped. The cache fills in first-seen order and then stops growing (no eviction: under shuffled
    epochs every row is equally likely next, so keeping the first ones hits as often as any policy, at no
    bookkeeping cost). Memory is bounded by ``cache_bytes`` per process (each DataLoader worker holds its own
    share: :func:`worker_cache_bytes`); 0 turns it off. Callers must not modify the returned tensors in place
    (``collate`` copies them into new batch tensors)."""

    def __init__(self, source: RowSource, processor: Any, ids: SpecialIds, cache_bytes: int = 0) -> None:
        self.source, self.processor, self.ids = source, processor, ids
        self.cache_bytes = max(0, int(cache_bytes))
        self.cached_bytes = 0
        self._cache: dict[int, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        hit = self._cache.get(i)
        if hit is not None:
            return hit
        row = self.source.row(i, ("messages", "images"))
        enc = encode_sft_row(row, self.processor, self.ids, self.source.where(i, "messages"))
        size = sum(t.numel() * t.element_size() for t in enc.values())
        if self.cached_bytes + size <= self.cache_bytes:
            self._cache[i] = enc
            self.cached_bytes += size
        return enc


def worker_cache_bytes(cache_mb: int, workers: int) -> int:
    """Each loader process's share of the ``train.encode_cache_mb`` budget (workers each hold a copy of the
    dataset, so the budget is split to keep the total bounded)."""
    return max(0, cache_mb) * 2**20 // max(1, workers)
