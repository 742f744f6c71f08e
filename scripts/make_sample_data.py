#!/usr/bin/env python
"""Render the bundled SAT-style spatial sample set in ``mcts_engine/sample_data/sat2_sample/`` (deterministic, seeded).

Each item is a synthetic indoor scene (wall, floor with perspective lines, 3-5 labelled coloured
objects: boxes, balls, chairs, lamps) and one multiple-choice question of a SAT kind:

- ``relative_position``  "Is the red chair to the left or right of the blue box?"       left / right
- ``relative_depth``     "Which is closer to the camera, the red chair or the blue box?" the two labels
- ``goal_aim``           "... should you turn left, go straight ahead, or turn right?"   3 options
- ``perspective``        "Standing at the red chair facing the camera, is the blue box on your left or right?"

Depth cue: an object standing lower on the floor (nearer the bottom of the frame) is nearer the
camera and drawn larger, as in a real photo. The questions are only asked where the answer is
unambiguous (clear margins), and each kind's answers are balanced.

Outputs (rerunning gives byte-identical files for the same Pillow/pyarrow versions):

- ``images/sat2_XXX.png``  the scenes (palette PNGs, a few KB each)
- ``samples.jsonl``        all items, plain JSONL: id, image, question, answer (option text), choices,
                           boxes [{label, bbox: [x1, y1, x2, y2]}] in image pixels, question_type
- ``sat_schema.parquet``   6 items in the SAT parquet schema: images (list of datasets Image =
                           {bytes, path}), question, answers, correct_answer, question_type
- ``vigorl.jsonl``         6 items in ViGoRL's JSONL shape: id, image, conversations [human, gpt]

Usage: ``python scripts/make_sample_data.py [--out mcts_engine/sample_data/sat2_sample] [--n 32] [--seed 2025]``
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "mcts_engine" / "sample_data" / "sat2_sample"

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "blue": (40, 80, 210),
    "green": (40, 160, 70),
    "yellow": (235, 200, 30),
    "purple": (130, 60, 170),
    "orange": (240, 130, 30),
}
KINDS = ("box", "ball", "chair", "lamp")
SIZES = ((640, 480), (640, 480), (640, 480), (576, 432), (720, 480), (512, 512))
WALLS = ((226, 218, 200), (205, 215, 225), (230, 225, 215), (215, 225, 210))
FLOORS = ((160, 120, 85), (150, 150, 150), (180, 150, 110), (120, 110, 100))
QTYPES = ("relative_position", "relative_depth", "goal_aim", "perspective")
GOAL_OPTIONS = ["turn left", "go straight ahead", "turn right"]


@dataclass
class Obj:
    label: str
    kind: str
    color: tuple[int, int, int]
    cx: float  # centre x of the footprint
    foot: float  # y where it stands on the floor (larger = nearer the camera)
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)


def _shade(c: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(max(0, min(255, round(v * f))) for v in c)  # type: ignore[return-value]


def _draw_room(d: ImageDraw.ImageDraw, w: int, h: int, horizon: int, rng: random.Random) -> None:
    wall, floor = rng.choice(WALLS), rng.choice(FLOORS)
    d.rectangle([0, 0, w, horizon], fill=wall)
    d.rectangle([0, horizon, w, h], fill=floor)
    d.rectangle([0, horizon - 6, w, horizon], fill=_shade(wall, 0.8))  # skirting board
    # A window on the wall (decor, not annotated).
    wx = rng.randint(w // 10, w // 2)
    d.rectangle([wx, horizon // 5, wx + w // 5, horizon * 3 // 5], fill=(190, 215, 235), outline=_shade(wall, 0.6), width=3)
    # Floor boards converging on a vanishing point: the perspective cue.
    vx = w // 2 + rng.randint(-w // 10, w // 10)
    for i in range(-6, 7):
        d.line([(vx, horizon), (vx + i * w // 5, h)], fill=_shade(floor, 0.85), width=1)


def _draw_obj(d: ImageDraw.ImageDraw, o: Obj, s: float) -> None:
    """Draw ``o`` at scale ``s`` (pixels per unit) and store its tight box."""
    c, x, y = o.color, o.cx, o.foot
    if o.kind == "box":
        bw, bh, top = 1.5 * s, 1.1 * s, 0.35 * s
        x1, x2 = x - bw / 2, x + bw / 2
        d.rectangle([x1, y - bh, x2, y], fill=c, outline=_shade(c, 0.6))
        d.polygon([(x1, y - bh), (x1 + top, y - bh - top), (x2 + top, y - bh - top), (x2, y - bh)], fill=_shade(c, 1.25))
        d.polygon([(x2, y - bh), (x2 + top, y - bh - top), (x2 + top, y - top), (x2, y)], fill=_shade(c, 0.75))
        o.bbox = (round(x1), round(y - bh - top), round(x2 + top), round(y))
    elif o.kind == "ball":
        r = 0.6 * s
        d.ellipse([x - r, y - 0.15 * r, x + r, y + 0.15 * r], fill=(70, 60, 55))  # shadow
        d.ellipse([x - r, y - 2 * r, x + r, y], fill=c, outline=_shade(c, 0.6))
        d.ellipse([x - 0.45 * r, y - 1.65 * r, x - 0.05 * r, y - 1.25 * r], fill=_shade(c, 1.4))
        o.bbox = (round(x - r), round(y - 2 * r), round(x + r), round(y))
    elif o.kind == "chair":
        sw, seat_y, back_h, leg = 1.2 * s, y - 0.9 * s, 1.1 * s, max(2, round(0.1 * s))
        x1, x2 = x - sw / 2, x + sw / 2
        for lx in (x1 + leg, x2 - leg):
            d.line([(lx, seat_y), (lx, y)], fill=_shade(c, 0.55), width=leg)
        d.rectangle([x1, seat_y - back_h, x1 + 0.22 * s, seat_y], fill=_shade(c, 0.8))  # back post
        d.rectangle([x1, seat_y - back_h, x2, seat_y - back_h + 0.45 * s], fill=_shade(c, 0.9))  # back rest
        d.rectangle([x1, seat_y - 0.22 * s, x2, seat_y], fill=c, outline=_shade(c, 0.6))  # seat
        o.bbox = (round(x1), round(seat_y - back_h), round(x2), round(y))
    elif o.kind == "lamp":
        pole, shade_h, shade_w = max(2, round(0.08 * s)), 0.6 * s, 0.9 * s
        top = y - 2.4 * s
        d.ellipse([x - 0.35 * s, y - 0.12 * s, x + 0.35 * s, y + 0.05 * s], fill=(60, 60, 60))
        d.line([(x, y), (x, top + shade_h)], fill=(70, 70, 70), width=pole)
        d.polygon([(x - shade_w / 4, top), (x + shade_w / 4, top), (x + shade_w / 2, top + shade_h), (x - shade_w / 2, top + shade_h)],
                  fill=c, outline=_shade(c, 0.6))
        o.bbox = (round(x - shade_w / 2), round(top), round(x + shade_w / 2), round(y + 0.05 * s))
    else:  # pragma: no cover
        raise ValueError(o.kind)


def render_scene(rng: random.Random, w: int, h: int) -> tuple[Image.Image, list[Obj]]:
    horizon = round(h * rng.uniform(0.38, 0.48))
    img = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(img)
    _draw_room(d, w, h, horizon, rng)
    n = rng.randint(3, 5)
    labels = rng.sample([(col, kind) for col in COLORS for kind in KINDS], n)
    slot = w / n
    objs = []
    for i, (col, kind) in enumerate(labels):
        cx = slot * (i + 0.5) + rng.uniform(-0.2, 0.2) * slot
        foot = rng.uniform(horizon + 0.15 * (h - horizon), h - 0.04 * h)
        objs.append(Obj(label=f"{col} {kind}", kind=kind, color=COLORS[col], cx=cx, foot=foot))
    rng.shuffle(objs)  # labels and positions independent
    for o in sorted(objs, key=lambda o: o.foot):  # far to near (painter's order)
        depth = (o.foot - horizon) / (h - horizon)  # 0 at the horizon, 1 at the bottom edge
        _draw_obj(d, o, s=(0.25 + 0.9 * depth) * 70 * w / 640)
    for o in objs:
        x1, y1, x2, y2 = o.bbox
        o.bbox = (max(0, x1), max(0, y1), min(w - 1, x2), min(h - 1, y2))
    return img, objs


def make_question(qtype: str, want: int, objs: list[Obj], w: int, h: int, rng: random.Random) -> dict | None:
    """A question of ``qtype`` whose answer is option ``want`` (for balance), or None if the scene has none."""
    pairs = [(a, b) for a in objs for b in objs if a is not b]
    rng.shuffle(pairs)
    if qtype == "relative_position":
        for a, b in pairs:
            if abs(a.cx - b.cx) > 0.15 * w and (a.cx < b.cx) == (want == 0):
                return {"question": f"Is the {a.label} to the left or right of the {b.label}?", "choices": ["left", "right"],
                        "answer": "left" if a.cx < b.cx else "right", "objects": [a, b]}
    elif qtype == "relative_depth":
        for a, b in pairs:
            if abs(a.foot - b.foot) > 0.08 * h:
                near = a if a.foot > b.foot else b
                choices = [a.label, b.label]
                if choices.index(near.label) == want:
                    return {"question": f"Which is closer to the camera, the {a.label} or the {b.label}?", "choices": choices,
                            "answer": near.label, "objects": [a, b]}
    elif qtype == "goal_aim":
        bands = [(0.0, 0.3), (0.42, 0.58), (0.7, 1.0)]
        lo, hi = bands[want]
        for o in rng.sample(objs, len(objs)):
            if lo * w <= o.cx <= hi * w:
                return {"question": f"You are the camera. To walk to the {o.label}, should you turn left, go straight ahead, "
                                    "or turn right?", "choices": list(GOAL_OPTIONS), "answer": GOAL_OPTIONS[want], "objects": [o]}
    elif qtype == "perspective":
        for a, b in pairs:
            # Facing the camera mirrors left and right: image-left is the viewer's right.
            if abs(a.cx - b.cx) > 0.15 * w:
                ans = "right" if b.cx < a.cx else "left"
                if ans == ["left", "right"][want]:
                    return {"question": f"Imagine you are standing at the {a.label}, facing the camera. Is the {b.label} "
                                        "on your left or on your right?", "choices": ["left", "right"], "answer": ans,
                            "objects": [a, b]}
    return None


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    # Flat colours: a 64-colour palette keeps files a few KB; loaders convert back to RGB.
    img.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def build_items(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        qtype = QTYPES[i % len(QTYPES)]
        n_opts = 3 if qtype == "goal_aim" else 2
        want = (i // len(QTYPES)) % n_opts
        w, h = SIZES[rng.randrange(len(SIZES))]
        for _ in range(200):
            img, objs = render_scene(rng, w, h)
            q = make_question(qtype, want, objs, w, h, rng)
            if q is not None:
                break
        else:  # pragma: no cover
            raise RuntimeError(f"item {i}: no {qtype} question found")
        asked = {o.label for o in q["objects"]}
        items.append({
            "id": f"sat2-sample-{i:03d}",
            "image": f"images/sat2_{i:03d}.png",
            "question": q["question"],
            "answer": q["answer"],
            "choices": q["choices"],
            # The asked-about objects first, then the rest (distractors), in a stable order.
            "boxes": [{"label": o.label, "bbox": list(o.bbox)} for o in sorted(objs, key=lambda o: (o.label not in asked, o.label))],
            "question_type": qtype,
            "_png": png_bytes(img),
        })
    return items


def write_all(out: Path, n: int, seed: int, n_extra: int = 6) -> None:
    items = build_items(n, seed)
    if (out / "images").exists():
        shutil.rmtree(out / "images")
    (out / "images").mkdir(parents=True)
    for it in items:
        (out / it["image"]).write_bytes(it["_png"])
    public = [{k: v for k, v in it.items() if k != "_png"} for it in items]
    with (out / "samples.jsonl").open("w", encoding="utf-8") as fh:
        for row in public:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    # ViGoRL JSONL: options written into the question, lettered; the answer is the option text.
    with (out / "vigorl.jsonl").open("w", encoding="utf-8") as fh:
        for row in public[:n_extra]:
            opts = "\n".join(f"({chr(65 + j)}) {c}" for j, c in enumerate(row["choices"]))
            fh.write(json.dumps({
                "id": row["id"],
                "image": row["image"],
                "conversations": [
                    {"from": "human", "value": f"<image>\n{row['question']}\nOptions:\n{opts}"},
                    {"from": "gpt", "value": row["answer"]},
                ],
            }, ensure_ascii=False) + "\n")

    # SAT parquet schema (as in the SAT-2 release): no ids, no boxes; images as datasets Image structs.
    import datasets
    from datasets import Dataset, Features, List, Value
    from datasets import Image as HFImage

    datasets.disable_progress_bars()

    sat = items[n_extra:2 * n_extra]
    feats = Features({
        "images": List(HFImage()),
        "question": Value("string"),
        "answers": List(Value("string")),
        "correct_answer": Value("string"),
        "question_type": Value("string"),
    })
    ds = Dataset.from_dict({
        "images": [[{"bytes": it["_png"], "path": Path(it["image"]).name}] for it in sat],
        "question": [it["question"] for it in sat],
        "answers": [it["choices"] for it in sat],
        "correct_answer": [it["answer"] for it in sat],
        "question_type": [it["question_type"] for it in sat],
    }, features=feats)
    ds.to_parquet(str(out / "sat_schema.parquet"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--seed", type=int, default=2025)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    write_all(args.out, args.n, args.seed)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.n} items to {args.out} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
