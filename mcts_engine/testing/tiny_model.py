"""Test fixtures for the trainer: a tiny Qwen2.5-VL (~0.2 M params) built locally, and small export parquets.

The tiny model follows /work/shared/ENVIRONMENT.md: a byte-level BPE tokenizer (vocab ~400) with the Qwen special
tokens first, a Qwen2-VL-style chat template, text hidden 64 / 2 layers, vision depth 2 / hidden 32, and the
torchvision-free image processor. It is saved in the *hub* layout (``preprocessor_config.json``,
``chat_template.json``, ``processor_class: Qwen2_5_VLProcessor``) so tests load it exactly like a real model.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SYSTEM = (
    "You answer spatial questions about images. First think step by step inside <think> </think>, "
    "grounding every step in the image with integer pixel coordinates (x, y). Then give the exact text "
    "of the chosen option inside <answer> </answer>."
)

CORPUS = [
    SYSTEM,
    "Is the red cup left or right of the plate?\nOptions:\n(A) left\n(B) right",
    "<think>\nThe red cup is at (20, 30). The plate is at (70, 40).\n</think>\n<answer> left </answer>",
    "<think>\nThe plate is here (14, 50). The cup is there (60, 22).\n</think>\n<answer> right </answer>",
    "system user assistant 0123456789 ( ) , . left right cup plate",
]


def build_tiny_model(out_dir: str | Path, seed: int = 0, vocab_size: int = 400) -> Path:
    """Build and save the tiny Qwen2.5-VL + processor; returns the directory."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE
    )
    ids = {t: fast.convert_tokens_to_ids(t) for t in SPECIALS}
    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(fast), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, max_position_embeddings=4096, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=64, fullatt_block_indexes=[1], window_size=56,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.bos_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    fast.save_pretrained(out)
    ip = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112)
    pre = ip.to_dict()
    pre.update({"min_pixels": 56 * 56, "max_pixels": 112 * 112, "processor_class": "Qwen2_5_VLProcessor",
                "image_processor_type": "Qwen2VLImageProcessor"})
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2, default=str))
    (out / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    tc = json.loads((out / "tokenizer_config.json").read_text())
    tc["processor_class"] = "Qwen2_5_VLProcessor"
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
    (out / "chat_template.jinja").unlink(missing_ok=True)
    return out


# ------------------------------------------------------------------------------------------------
# Parquet fixtures in the export schemas (docs: mcts_engine/train/data.py)
# ------------------------------------------------------------------------------------------------


def png_bytes(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30), seed: int = 0) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = np.empty((height, width, 3), dtype=np.uint8)
    arr[:] = color
    arr[: height // 2, : width // 2] = rng.integers(0, 255, (height // 2, width // 2, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _user(question: str, n_images: int = 1) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "image", "text": None} for _ in range(n_images)]
    parts.append({"type": "text", "text": question})
    return {"role": "user", "content": parts}


QUESTION = "Is the red cup left or right of the plate?\nOptions:\n(A) left\n(B) right"


def chain(answer: str, points: list[tuple[int, int]]) -> str:
    steps = " ".join(f"The {'cup' if i % 2 == 0 else 'plate'} is at ({x}, {y})." for i, (x, y) in enumerate(points))
    return f"<think>\n{steps}\n</think>\n<answer> {answer} </answer>"


def sft_rows(n: int, frame: tuple[int, int] = (56, 56), answers: tuple[str, ...] = ("left", "right")) -> list[dict]:
    rows = []
    w, h = frame
    for i in range(n):
        ans = answers[i % len(answers)]
        rows.append({
            "id": f"s{i}",
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
                _user(QUESTION),
                {"role": "assistant", "content": [{"type": "text", "text": chain(ans, [(10 + i % 30, 20), (40, 30)])}]},
            ],
            "images": [{"bytes": png_bytes(w, h, seed=i), "path": None}],
            "task": "sat2",
            "answer": ans,
            "frame_width": w,
            "frame_height": h,
        })
    return rows


def grpo_rows(n: int, frame: tuple[int, int] = (56, 56), answer: str = "left") -> list[dict]:
    rows = []
    w, h = frame
    for i in range(n):
        rows.append({
            "id": f"g{i}",
            "prompt": [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]}, _user(QUESTION)],
            "images": [{"bytes": png_bytes(w, h, seed=100 + i), "path": None}],
            "answer": answer,
            "task": "sat2",
            "ground_truth": json.dumps({"answer": answer, "choices": ["left", "right"]}),
            "frame_width": w,
            "frame_height": h,
            "data_source": "sat2",
        })
    return rows


def write_parquet(rows: list[dict], path: str | Path) -> Path:
    """Write rows with the column types the exporter uses (image structs, message part structs)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    part = pa.struct([("type", pa.string()), ("text", pa.string())])
    message = pa.struct([("role", pa.string()), ("content", pa.list_(part))])
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = []
    for key in rows[0]:
        if key in ("messages", "prompt"):
            fields.append(pa.field(key, pa.list_(message)))
        elif key == "images":
            fields.append(pa.field(key, pa.list_(image)))
        elif key in ("frame_width", "frame_height"):
            fields.append(pa.field(key, pa.int64()))
        else:
            fields.append(pa.field(key, pa.string()))
    table = pa.Table.from_pylist(rows, schema=pa.schema(fields))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, p)
    return p


# ------------------------------------------------------------------------------------------------
# Multi-turn (zoom) fixtures: rows in the multi-turn export schemas, and a scripted policy
# ------------------------------------------------------------------------------------------------

MT_SETTINGS = {"max_turns": 4, "crop_offset": 28, "crop_size": 56, "draw_dot": False, "dot_radius": 6}
MT_SYSTEM = SYSTEM + " Work in turns: zoom with <tool_call> and finish with <answer> </answer>."


def tool_turn(point: tuple[int, int], note: str = "The cup") -> str:
    """An assistant zoom turn exactly as the exporter writes it (``environment.format_tool_call``)."""
    from mcts_engine.zoom.environment import format_tool_call

    return f"<think> {note} is at ({point[0]}, {point[1]}). </think>\n{format_tool_call(point)}"


def observation_user(point: tuple[int, int]) -> dict[str, Any]:
    """The observation user turn as the exporter writes it (text, image part, text)."""
    from mcts_engine.export.rows import observation_parts
    from mcts_engine.zoom.environment import observation_text

    return {"role": "user", "content": observation_parts(observation_text(point))}


def mt_sft_rows(n: int, frame: tuple[int, int] = (112, 84), crops: tuple[tuple[int, int], ...] = ((56, 56), (84, 56)),
                points: tuple[tuple[int, int], ...] = ((20, 30), (70, 40)), answer: str = "left") -> list[dict]:
    """Multi-turn SFT rows: system, user (frame + question), then per zoom an assistant tool-call turn and an
    observation turn with its crop, then the answer turn; ``images`` = [frame, crop 1, crop 2, …]."""
    rows = []
    w, h = frame
    for i in range(n):
        messages = [{"role": "system", "content": [{"type": "text", "text": MT_SYSTEM}]}, _user(QUESTION)]
        images = [{"bytes": png_bytes(w, h, seed=i), "path": None}]
        for k, (p, (cw, ch)) in enumerate(zip(points, crops)):
            messages.append({"role": "assistant", "content": [{"type": "text", "text": tool_turn(p)}]})
            messages.append(observation_user(p))
            images.append({"bytes": png_bytes(cw, ch, color=(30, 30 + 50 * k, 200), seed=10 * i + k), "path": None})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": f"<answer> {answer} </answer>"}]})
        rows.append({
            "id": f"m{i}", "messages": messages, "images": images, "task": "sat2", "answer": answer,
            "frame_width": w, "frame_height": h, "multiturn": dict(MT_SETTINGS),
        })
    return rows


def mt_grpo_rows(n: int, frame: tuple[int, int] = (112, 84), answer: str = "left",
                 settings: dict[str, Any] | None = None) -> list[dict]:
    """Multi-turn GRPO rows: the single-turn columns plus the ``multiturn`` struct."""
    rows = grpo_rows(n, frame=frame, answer=answer)
    for r in rows:
        r["prompt"][0]["content"][0]["text"] = MT_SYSTEM
        r["multiturn"] = dict(settings or MT_SETTINGS)
    return rows


def write_mt_parquet(rows: list[dict], path: str | Path) -> Path:
    """``write_parquet`` plus the ``multiturn`` struct column (as the multi-turn export types it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    plain = [{k: v for k, v in r.items() if k != "multiturn"} for r in rows]
    p = write_parquet(plain, path)
    table = pq.read_table(p)
    env = pa.struct([("max_turns", pa.int32()), ("crop_offset", pa.int32()), ("crop_size", pa.int32()),
                     ("draw_dot", pa.bool_()), ("dot_radius", pa.int32())])
    table = table.append_column(pa.field("multiturn", env), pa.array([r.get("multiturn") for r in rows], type=env))
    pq.write_table(table, p)
    return p


class ScriptedGenerate:
    """Stands in for ``model.generate``: each reply comes from ``script(context_text, sample_index)`` (the context
    decoded with special tokens; ``sample_index`` = k of ``num_return_sequences``), returned as the reply's tokens
    right-padded — as transformers returns finished sequences. ``script`` may return None to defer to
    ``fallback(**kwargs)`` (e.g. the real generate) for the whole call. Records every call's contexts."""

    def __init__(self, tokenizer: Any, script: Any, fallback: Any = None) -> None:
        self.tokenizer, self.script, self.fallback = tokenizer, script, fallback
        self.contexts: list[str] = []

    def __call__(self, input_ids: Any, num_return_sequences: int = 1, pad_token_id: int = 0, **kwargs: Any) -> Any:
        import torch

        config = kwargs.get("generation_config")  # the trainer passes one explicit GenerationConfig
        if config is not None:
            num_return_sequences = config.num_return_sequences or 1
            pad_token_id = config.pad_token_id if config.pad_token_id is not None else pad_token_id
        contexts = []
        for row, mask in zip(input_ids, kwargs.get("attention_mask", torch.ones_like(input_ids))):
            contexts.append(self.tokenizer.decode(row[mask.bool()].tolist(), skip_special_tokens=False))
        replies = [self.script(ctx, k) for ctx in contexts for k in range(num_return_sequences)]
        if any(r is None for r in replies):
            assert self.fallback is not None, "the script deferred but there is no fallback"
            return self.fallback(input_ids=input_ids, num_return_sequences=num_return_sequences,
                                 pad_token_id=pad_token_id, **kwargs)
        self.contexts.extend(contexts)
        new = [self.tokenizer.encode(r, add_special_tokens=False) for r in replies]
        if config is not None and config.max_new_tokens:  # generate never returns more than max_new_tokens
            new = [t[:config.max_new_tokens] for t in new]
        width = max(len(t) for t in new)
        base = input_ids.repeat_interleave(num_return_sequences, dim=0)
        tail = torch.full((len(new), width), pad_token_id, dtype=input_ids.dtype)
        for i, t in enumerate(new):
            tail[i, : len(t)] = torch.tensor(t, dtype=input_ids.dtype)
        return torch.cat([base, tail], dim=1)
