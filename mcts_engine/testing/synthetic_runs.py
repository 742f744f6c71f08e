"""Hand-built trees and run directories for the export/report tests and benchmarks (no engine, no network)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from mcts_engine.frame import Frame, frame_for
from mcts_engine.search.tree import Node, Tree
from mcts_engine.store import DuplicateSample, RunStore

CHOICES = ["left", "right"]
TRUTH = {"answer": "left", "choices": CHOICES}


def frame(w: int = 300, h: int = 200) -> Frame:
    return frame_for(w, h, max_pixels=1280 * 28 * 28)  # 300x200 -> 308x196 (a real resize)


def think(tree: Tree, parent: Node, x: int, y: int, text: str | None = None, visits: int = 1, value: float = 0.0,
          source: str = "expand") -> Node:
    t = text if text is not None else f"I look at region {x}-{y} ({x}, {y})."
    return tree.add(parent, kind="think", thought=t, point=(x, y), visits=visits, value_sum=value, source=source,
                    text=f"<think> {t} </think>", expanded=True)


def answer(tree: Tree, parent: Node, ans: str, correct: bool | None, visits: int = 1, value: float | None = None) -> Node:
    v = (1.0 if correct else 0.0) if value is None else value
    return tree.add(parent, kind="answer", answer=ans, correct=correct, reward=1.0 if correct else 0.0,
                    verdict="match" if correct else "text differs", visits=visits, value_sum=v * visits,
                    text=f"<answer> {ans} </answer>")


def sample_record(sid: str, image: str, image_root: str | None = None, question: str = "Where is the cup?") -> dict[str, Any]:
    rec = {"id": sid, "images": [image], "question": question, "answer": "left", "choices": list(CHOICES),
           "boxes": [{"label": "cup", "bbox": [10, 10, 60, 60]}], "task": "sat2", "metadata": {}}
    if image_root is not None:
        rec["image_root"] = image_root
    return rec


def rich_tree(sid: str = "s0", image: str = "img0.png", image_root: str | None = None, fr: Frame | None = None) -> Tree:
    """root ─ A(50,40) ─ B(120,80) ─ ans left ✓
                     └ C(200,150) ─ ans right ✗
            └ D(250,30) ─ ans right ✗
            └ E(30,170) ─ ans left ✓   (a second correct path, lower value)"""
    tree = Tree(sample_id=sid, task="sat2", frame=fr or frame(), truth=dict(TRUTH),
                sample=sample_record(sid, image, image_root), prompt={"system": "teacher", "user": "q"})
    r = tree.root
    r.visits, r.value_sum, r.expanded = 4, 2.0, True
    a = think(tree, r, 50, 40, visits=2, value=1.0)
    b = think(tree, a, 120, 80, visits=1, value=1.0)
    answer(tree, b, "left", True)
    c = think(tree, a, 200, 150, visits=1, value=0.0)
    answer(tree, c, "right", False)
    d = think(tree, r, 250, 30, visits=1, value=0.0)
    answer(tree, d, "right", False)
    e = think(tree, r, 30, 170, visits=1, value=1.0)
    e.value_sum = 0.5  # a lower-value correct branch
    answer(tree, e, "left", True)
    return tree


def make_image(path: Path, w: int = 300, h: int = 200, seed: int = 0) -> Path:
    img = Image.new("RGB", (w, h), (40 + seed * 7 % 200, 90, 160))
    d = ImageDraw.Draw(img)
    d.rectangle([10, 10, 60, 60], fill=(250, 250, 0))
    d.text((80, 80), f"img {seed}", fill=(255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def make_run(tmp: Path, trees: list[Tree | dict[str, Any] | str], data: str | None = None,
             export: dict[str, Any] | None = None, failures: list[tuple[str, str]] = (),
             extra: dict[str, Any] | None = None) -> Path:
    """A run directory with config.json, the given trees (a str is written as a raw line) and failures.
    ``extra``: more config.json ``config`` keys (e.g. ``multiturn``, ``search``)."""
    run = tmp / "run"
    cfg = {"task": "sat2", "data": data, "image_root": None, "teacher": {"max_pixels": 1280 * 28 * 28, "min_pixels": 3136},
           "task_options": {}, "export": export or {}, **(extra or {})}
    store = RunStore.open_for_generate(run, cfg, "hash0")
    for t in trees:
        if isinstance(t, str):
            with (run / "trees.jsonl").open("a") as fh:
                fh.write(t + "\n")
        else:
            try:
                store.append_tree(t)
            except DuplicateSample:  # written as a run of an older version could hold it (export keeps the first)
                with (run / "trees.jsonl").open("a") as fh:
                    fh.write(json.dumps(t.to_dict() if isinstance(t, Tree) else t) + "\n")
    for sid, reason in failures:
        store.append_failure(sid, reason)
    store.write_stats({"calls": 12, "completion_tokens": 345})
    return run


def add_cache(tree: Tree, run_dir: Path, src: Path, fmt: str = "png") -> bytes:
    """Give ``tree`` a run-dir image cache entry the way generate does (frame-sized, content-keyed);
    returns the cached bytes. Call before ``make_run`` writes the tree (``run_dir`` = tmp/"run")."""
    from mcts_engine.samples import encode_image

    enc, _ = encode_image(Image.open(src).convert("RGB"), max_pixels=1280 * 28 * 28, fmt=fmt)
    ext = "jpg" if enc.mime == "image/jpeg" else "png"
    (run_dir / "images").mkdir(parents=True, exist_ok=True)
    (run_dir / "images" / f"{enc.key}.{ext}").write_bytes(enc.data)
    f = enc.frame
    tree.images = [{"key": enc.key, "file": f"images/{enc.key}.{ext}", "width": f.width, "height": f.height,
                    "mime": enc.mime, "orig_width": f.orig_width, "orig_height": f.orig_height}]
    return enc.data


# --------------------------------------------------------------------------------------------
# Multi-turn trees: every think step carries a tool call and the crop the environment returned
# --------------------------------------------------------------------------------------------

MT_SETTINGS = {"enabled": True, "crop_offset": 40, "crop_size": 112, "draw_dot": True, "dot_radius": 3}
MT_EXTRA = {"multiturn": MT_SETTINGS, "search": {"max_depth": 5}}


def mt_think(tree: Tree, parent: Node, x: int, y: int, run_dir: Path, frame_img: Image.Image, visits: int = 1,
             value: float = 0.0, observe: bool = True) -> Node:
    """A multi-turn step at (x, y): the response with its tool call, and (``observe``) the crop, cut by the
    real environment and written to ``run_dir/images/`` the way generate does."""
    import hashlib
    import io

    from mcts_engine.config import MultiTurnConfig
    from mcts_engine.zoom.environment import format_tool_call, observation_text, zoom

    thought = f"I zoom on region {x}-{y} at ({x}, {y})."
    node = tree.add(parent, kind="think", thought=thought, point=(x, y), visits=visits, value_sum=value,
                    source="expand", expanded=True, text=f"<think> {thought} </think>\n{format_tool_call((x, y))}")
    if observe:
        cfg = MultiTurnConfig(**MT_SETTINGS)
        crop, box = zoom(frame_img, (x, y), cfg)
        buf = io.BytesIO()
        crop.save(buf, format="PNG")
        data = buf.getvalue()
        key = hashlib.sha1(data).hexdigest()[:16]
        (run_dir / "images").mkdir(parents=True, exist_ok=True)
        (run_dir / "images" / f"{key}.png").write_bytes(data)
        node.observation = {"point": [x, y], "box": list(box), "text": observation_text((x, y)),
                            "image": {"key": key, "file": f"images/{key}.png", "width": crop.width,
                                      "height": crop.height, "mime": "image/png"}}
    return node


def mt_tree(sid: str, run_dir: Path, src: Path) -> Tree:
    """The shape of ``rich_tree`` with multi-turn steps (crops in ``run_dir/images``, frame image cached):

    root ─ A(50,40) ─ B(120,80) ─ ans left ✓
                    └ C(200,150) ─ ans right ✗
         └ D(250,30) ─ ans right ✗
         └ E(30,170) ─ ans left ✓ (lower value)"""
    tree = Tree(sample_id=sid, task="sat2", frame=frame(), truth=dict(TRUTH),
                sample=sample_record(sid, src.name, str(src.parent)), prompt={"system": "teacher", "user": "q"})
    add_cache(tree, run_dir, src)
    img = Image.open(run_dir / tree.images[0]["file"]).convert("RGB")
    r = tree.root
    r.visits, r.value_sum, r.expanded = 4, 2.0, True
    a = mt_think(tree, r, 50, 40, run_dir, img, visits=2, value=1.0)
    b = mt_think(tree, a, 120, 80, run_dir, img, visits=1, value=1.0)
    answer(tree, b, "left", True)
    c = mt_think(tree, a, 200, 150, run_dir, img, visits=1, value=0.0)
    answer(tree, c, "right", False)
    d = mt_think(tree, r, 250, 30, run_dir, img, visits=1, value=0.0)
    answer(tree, d, "right", False)
    e = mt_think(tree, r, 30, 170, run_dir, img, visits=1, value=0.5)
    answer(tree, e, "left", True)
    return tree
