#!/usr/bin/env python
"""Render the bundled sample sets of the benchmark tasks, deterministically, in each benchmark's OWN layout.

    python scripts/make_task_samples.py                 # all tasks into mcts_engine/sample_data/<task>_sample/
    python scripts/make_task_samples.py --tasks blink --out /tmp/x   # one task, elsewhere

Everything is synthetic (drawn with PIL from a seeded RNG; no real benchmark images): the point is that
every command runs offline and that the loaders read the real field layouts. Rerunning with the same
seed writes byte-identical files (same Pillow version). What each set holds:

- ``blink_sample/blink_val.parquet``: 15 BLINK-layout rows (``idx``, ``question``, ``sub_task``,
  ``image_1``..``image_4``, ``choices``, ``answer`` "(A)", ``prompt``, ``explanation``) over 5 sub-tasks,
  1-3 images per item, plus an optional ``boxes`` column (our extension: per-image regions for the sim teacher).
- ``vstar_sample/{direct_attributes,relative_position}/``: 8 large cluttered images with V*'s per-image JSON
  (``target_object``, ``bbox`` ``[x, y, w, h]``, ``question``, ``options`` correct first).
- ``screenspot_sample/``: ScreenSpot-v2 files ``screenspot_{desktop,mobile,web}_v2.json`` (``[x, y, w, h]``) with
  ``screenspotv2_image/``; ``screenspot_sample/pro/``: ScreenSpot-Pro ``annotations/*.json`` (xyxy) + ``images/``.
- ``osatlas_sample/``: OS-ATLAS grounding JSON (``img_filename`` + ``elements`` with boxes normalized to [0, 1]).
- ``web_action_sample/samples.jsonl``: set-of-marks web screenshots with VisualWebArena-style gold actions.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
COLORS = {
    "red": (220, 50, 47), "green": (60, 160, 60), "blue": (38, 110, 210), "yellow": (235, 200, 40),
    "purple": (140, 80, 180), "orange": (240, 140, 30), "black": (30, 30, 30), "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "diamond")


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def draw_shape(d: ImageDraw.ImageDraw, shape: str, box: list[int], fill: tuple[int, int, int]) -> None:
    x1, y1, x2, y2 = box
    if shape == "circle":
        d.ellipse(box, fill=fill, outline=(20, 20, 20))
    elif shape == "square":
        d.rectangle(box, fill=fill, outline=(20, 20, 20))
    elif shape == "triangle":
        d.polygon([((x1 + x2) // 2, y1), (x2, y2), (x1, y2)], fill=fill, outline=(20, 20, 20))
    elif shape == "diamond":
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        d.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=fill, outline=(20, 20, 20))
    elif shape == "ring":
        d.ellipse(box, outline=fill, width=max(2, (x2 - x1) // 5))
    elif shape == "cross":
        t = max(2, (x2 - x1) // 4)
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        d.rectangle([cx - t // 2, y1, cx + t // 2, y2], fill=fill)
        d.rectangle([x1, cy - t // 2, x2, cy + t // 2], fill=fill)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------------------
# BLINK
# --------------------------------------------------------------------------------------------


def _scene(rng: random.Random, w: int, h: int, n: int, avoid: list[list[int]] | None = None) -> tuple[Image.Image, list[dict]]:
    img = Image.new("RGB", (w, h), (236, 232, 222))
    d = ImageDraw.Draw(img)
    d.rectangle([0, int(h * 0.55), w, h], fill=(205, 190, 165))
    objs: list[dict] = []
    tries = 0
    while len(objs) < n and tries < 500:
        tries += 1
        s = rng.randint(28, 60)
        x, y = rng.randint(8, w - s - 8), rng.randint(8, h - s - 8)
        box = [x, y, x + s, y + s]
        if any(not (box[2] + 6 < o["bbox"][0] or o["bbox"][2] + 6 < box[0] or box[3] + 6 < o["bbox"][1] or o["bbox"][3] + 6 < box[1])
               for o in objs + [{"bbox": a} for a in (avoid or [])]):
            continue
        color = rng.choice(list(COLORS)[:6])
        shape = rng.choice(SHAPES)
        draw_shape(d, shape, box, COLORS[color])
        objs.append({"label": f"{color} {shape}", "bbox": box, "color": color, "shape": shape})
    return img, objs


def make_blink(out: Path, seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    rows = []
    letters = "ABCD"

    def row(sub: str, i: int, question: str, images: list[Image.Image], choices: list[str], answer_idx: int,
            boxes: list[dict], explanation: str = "") -> None:
        cells = [{"bytes": png_bytes(im), "path": None} for im in images] + [None] * (4 - len(images))
        opts = "\n".join(f"({letters[j]}) {c}" for j, c in enumerate(choices))
        rows.append({
            "idx": f"val_{sub}_{i + 1}", "question": question, "sub_task": sub,
            "image_1": cells[0], "image_2": cells[1], "image_3": cells[2], "image_4": cells[3],
            "choices": choices, "answer": f"({letters[answer_idx]})",
            "prompt": f"{question}\nSelect from the following choices.\n{opts}", "explanation": explanation,
            "boxes": [{"label": b["label"], "bbox": [int(v) for v in b["bbox"]], "image": int(b.get("image", 0))} for b in boxes],
        })

    for i in range(3):  # Counting
        img, objs = _scene(rng, 400, 300, rng.randint(5, 8))
        target = rng.choice(objs)["shape"]
        n = sum(o["shape"] == target for o in objs)
        choices = [str(v) for v in sorted({n, n + 1, max(0, n - 1), n + 2})][:4]
        row("Counting", i, f"How many {target}s are in the image?", [img], choices, choices.index(str(n)),
            [o for o in objs if o["shape"] == target])
    for i in range(3):  # Relative_Depth: the lower, bigger object is nearer; circled points A and B
        img = Image.new("RGB", (400, 300), (225, 230, 238))
        d = ImageDraw.Draw(img)
        d.polygon([(0, 300), (400, 300), (260, 120), (140, 120)], fill=(190, 180, 160))
        near = [rng.randint(60, 150) + (200 if i % 2 else 0), rng.randint(220, 250)]
        far = [rng.randint(60, 150) + (0 if i % 2 else 200), rng.randint(130, 150)]
        nb = [near[0] - 34, near[1] - 60, near[0] + 34, near[1] + 8]
        fb = [far[0] - 12, far[1] - 22, far[0] + 12, far[1] + 2]
        d.rectangle(nb, fill=COLORS["blue"])
        d.rectangle(fb, fill=COLORS["blue"])
        a_is_near = rng.random() < 0.5
        pa_, pb_ = (near, far) if a_is_near else (far, near)
        for (px, py), name in ((pa_, "A"), (pb_, "B")):
            d.ellipse([px - 7, py - 30, px + 7, py - 16], outline=(220, 20, 20), width=3)
            d.text((px + 10, py - 34), name, fill=(220, 20, 20), font=font(16))
        boxes = [{"label": "point A", "bbox": nb if a_is_near else fb}, {"label": "point B", "bbox": fb if a_is_near else nb}]
        row("Relative_Depth", i, "Two points are circled on the image, labeled by A and B beside each circle. "
            "Which point is closer to the camera?", [img], ["A", "B"], 0 if a_is_near else 1, boxes)
    for i in range(3):  # Spatial_Relation
        img, objs = _scene(rng, 400, 300, 4)
        a, b = objs[0], objs[1]
        truth = a["bbox"][2] < b["bbox"][0] or (a["bbox"][0] + a["bbox"][2]) < (b["bbox"][0] + b["bbox"][2])
        row("Spatial_Relation", i, f"Is the {a['label']} to the left of the {b['label']}?", [img], ["yes", "no"],
            0 if truth else 1, [a, b])
    for i in range(3):  # Multi-view_Reasoning: two frames, the scene shifts opposite to the camera
        img, objs = _scene(rng, 360, 270, 4)
        shift = 40 if i % 2 == 0 else -40  # content moves right → camera moved left
        second = Image.new("RGB", img.size, (236, 232, 222))
        second.paste(img.crop((max(0, -shift), 0, img.width - max(0, shift), img.height)), (max(0, shift), 0))
        boxes = [{**o, "image": 0} for o in objs[:2]] + [
            {"label": o["label"], "bbox": [o["bbox"][0] + shift, o["bbox"][1], o["bbox"][2] + shift, o["bbox"][3]], "image": 1}
            for o in objs[:2] if 0 <= o["bbox"][0] + shift and o["bbox"][2] + shift <= img.width]
        row("Multi-view_Reasoning", i, "The images are frames from a video. The video is shooting a static scene. "
            "The camera is either moving clockwise (left) or counter-clockwise (right) around the object. The first "
            "image is from the beginning of the video and the second image is from the end. Is the camera moving "
            "left or right when shooting the video?", [img, second], ["left", "right"], 0 if shift > 0 else 1, boxes)
    for i in range(3):  # Visual_Similarity: three images
        shape, color = rng.choice(SHAPES), rng.choice(list(COLORS)[:6])
        other_shape = rng.choice([s for s in SHAPES if s != shape])
        other_color = rng.choice([c for c in list(COLORS)[:6] if c != color])
        ims, boxes = [], []
        for j, (s, c) in enumerate(((shape, color), (shape, color), (other_shape, other_color))):
            im = Image.new("RGB", (240, 240), (240, 240, 240))
            off = rng.randint(-20, 20)
            box = [70 + off, 70, 170 + off, 170]
            draw_shape(ImageDraw.Draw(im), s, box, COLORS[c])
            ims.append(im)
            boxes.append({"label": f"{c} {s}", "bbox": box, "image": j})
        similar_second = i % 2 == 0
        if not similar_second:
            ims[1], ims[2] = ims[2], ims[1]
            boxes[1], boxes[2] = {**boxes[2], "image": 1}, {**boxes[1], "image": 2}
        row("Visual_Similarity", i, "Given three images, which one of the second and the third image is more similar to the first?",
            ims, ["The second image", "The third image"], 0 if similar_second else 1, boxes)
    image_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([
        ("idx", pa.string()), ("question", pa.string()), ("sub_task", pa.string()),
        ("image_1", image_t), ("image_2", image_t), ("image_3", image_t), ("image_4", image_t),
        ("choices", pa.list_(pa.string())), ("answer", pa.string()), ("prompt", pa.string()), ("explanation", pa.string()),
        ("boxes", pa.list_(pa.struct([("label", pa.string()), ("bbox", pa.list_(pa.int64())), ("image", pa.int64())]))),
    ])
    d = fresh(out)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), d / "blink_val.parquet", compression="zstd")


# --------------------------------------------------------------------------------------------
# V*Bench
# --------------------------------------------------------------------------------------------


def _clutter(rng: random.Random, w: int, h: int) -> Image.Image:
    img = Image.new("RGB", (w, h), (214, 220, 206))
    d = ImageDraw.Draw(img)
    for _ in range(70):
        s = rng.randint(20, 90)
        x, y = rng.randint(0, w - s), rng.randint(0, h - s)
        g = rng.randint(120, 200)
        d.rectangle([x, y, x + s, y + rng.randint(10, 60)], fill=(g, g - 5, g - 15))
    return img


def make_vstar(out: Path, seed: int) -> None:
    rng = random.Random(seed + 1)
    d = fresh(out)
    small = ("ring", "cross", "circle", "square", "triangle", "diamond")
    for cat, n in (("direct_attributes", 4), ("relative_position", 4)):
        (d / cat).mkdir()
        for i in range(n):
            w, h = 1600, 1200
            img = _clutter(rng, w, h)
            dr = ImageDraw.Draw(img)
            objs = []
            for shape in rng.sample(small, 2):
                s = rng.randint(22, 34)
                while True:
                    x, y = rng.randint(40, w - 80), rng.randint(40, h - 80)
                    if all(abs(x - o[1][0]) > 300 for o in objs):
                        break
                color = rng.choice(list(COLORS)[:6])
                draw_shape(dr, shape, [x, y, x + s, y + s], COLORS[color])
                objs.append((shape, [x, y, s, s], color))
            name = f"sa_{(1000 if cat == 'direct_attributes' else 2000) + i}"
            if cat == "direct_attributes":
                shape, bb, color = objs[0]
                others = rng.sample([c for c in list(COLORS)[:6] if c != color], 3)
                ann = {"target_object": [shape], "bbox": [bb], "question": f"What is the color of the {shape}?",
                       "options": [color] + others}
            else:
                (s1, b1, _), (s2, b2, _) = objs
                left = b1[0] < b2[0]
                ann = {"target_object": [s1, s2], "bbox": [b1, b2],
                       "question": f"Is the {s1} on the left or right side of the {s2}?",
                       "options": ["left", "right"] if left else ["right", "left"]}
            img.save(d / cat / f"{name}.jpg", format="JPEG", quality=80)
            write_json(d / cat / f"{name}.json", ann)


# --------------------------------------------------------------------------------------------
# GUI screenshots: ScreenSpot v2 / Pro, OS-ATLAS
# --------------------------------------------------------------------------------------------

ICONS = ("search", "settings", "close", "menu", "home", "share")
LABELS = ("Sign in", "Checkout", "Save draft", "Open file", "Downloads", "Help center", "New message", "Export", "Cancel", "Apply filters")


def _draw_icon(d: ImageDraw.ImageDraw, kind: str, box: list[int]) -> None:
    x1, y1, x2, y2 = box
    cx, cy, r = (x1 + x2) // 2, (y1 + y2) // 2, (x2 - x1) // 2 - 3
    ink = (50, 50, 60)
    if kind == "search":
        d.ellipse([cx - r, cy - r, cx + r // 3, cy + r // 3], outline=ink, width=3)
        d.line([cx, cy, cx + r, cy + r], fill=ink, width=3)
    elif kind == "settings":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=ink, width=4)
        d.ellipse([cx - r // 3, cy - r // 3, cx + r // 3, cy + r // 3], fill=ink)
    elif kind == "close":
        d.line([x1 + 4, y1 + 4, x2 - 4, y2 - 4], fill=ink, width=3)
        d.line([x1 + 4, y2 - 4, x2 - 4, y1 + 4], fill=ink, width=3)
    elif kind == "menu":
        for k in (-1, 0, 1):
            d.line([x1 + 4, cy + k * r // 2, x2 - 4, cy + k * r // 2], fill=ink, width=3)
    elif kind == "home":
        d.polygon([(cx, y1 + 3), (x2 - 3, cy), (x1 + 3, cy)], outline=ink, width=3)
        d.rectangle([cx - r // 2, cy, cx + r // 2, y2 - 3], outline=ink, width=3)
    elif kind == "share":
        for px, py in ((x1 + 5, cy), (x2 - 5, y1 + 5), (x2 - 5, y2 - 5)):
            d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=ink)
        d.line([x1 + 5, cy, x2 - 5, y1 + 5], fill=ink, width=2)
        d.line([x1 + 5, cy, x2 - 5, y2 - 5], fill=ink, width=2)


def gui_screen(rng: random.Random, w: int, h: int, scale: float = 1.0, n_buttons: int = 4, n_icons: int = 3,
               marks: bool = False) -> tuple[Image.Image, list[dict]]:
    """A synthetic app/web screen: a title bar with icons, text buttons, a text field, some body text.
    Returns the image and its elements ``{"kind": text|icon|input, "name", "bbox": xyxy}``."""
    img = Image.new("RGB", (w, h), (250, 250, 252))
    d = ImageDraw.Draw(img)
    bar = int(56 * scale)
    d.rectangle([0, 0, w, bar], fill=(232, 236, 244))
    f = font(int(18 * scale))
    elements: list[dict] = []
    icon_size = int(32 * scale)
    for j, kind in enumerate(rng.sample(ICONS, n_icons)):
        x = w - (j + 1) * (icon_size + int(16 * scale)) if j else int(12 * scale)
        box = [x, (bar - icon_size) // 2, x + icon_size, (bar - icon_size) // 2 + icon_size]
        _draw_icon(d, kind, box)
        elements.append({"kind": "icon", "name": kind, "bbox": box, "role": "button"})
    y = bar + int(30 * scale)
    field_box = [int(24 * scale), y, w - int(24 * scale), y + int(40 * scale)]
    d.rectangle(field_box, outline=(150, 150, 160), width=2, fill=(255, 255, 255))
    d.text((field_box[0] + 10, field_box[1] + int(10 * scale)), "Search…", fill=(150, 150, 150), font=f)
    elements.append({"kind": "input", "name": "search field", "bbox": field_box, "role": "textbox"})
    y = field_box[3] + int(30 * scale)
    cols = 2 if w > h else 1
    bw = (w - int(24 * scale) * (cols + 1)) // cols
    for j, label in enumerate(rng.sample(LABELS, n_buttons)):
        c, r = j % cols, j // cols
        x = int(24 * scale) + c * (bw + int(24 * scale))
        yy = y + r * int(64 * scale)
        tw = d.textlength(label, font=f)
        box = [x, yy, x + int(min(bw, tw + 40 * scale)), yy + int(44 * scale)]
        d.rounded_rectangle(box, radius=int(8 * scale), fill=(60, 110, 220))
        d.text((box[0] + int(20 * scale), box[1] + int(12 * scale)), label, fill=(255, 255, 255), font=f)
        elements.append({"kind": "text", "name": label, "bbox": box, "role": "button"})
    yy = y + ((n_buttons + cols - 1) // cols) * int(64 * scale) + int(20 * scale)
    for k in range(3):
        if yy + int(24 * scale) > h:
            break
        d.text((int(24 * scale), yy), "Lorem ipsum dolor sit amet, consectetur adipiscing elit."[: 20 + 10 * k], fill=(90, 90, 100), font=f)
        yy += int(30 * scale)
    if marks:
        fm = font(int(14 * scale))
        for k, e in enumerate(elements, start=1):
            e["id"] = k
            x1, y1, x2, y2 = e["bbox"]
            d.rectangle([x1 - 2, y1 - 2, x2 + 2, y2 + 2], outline=(230, 40, 40), width=2)
            tag = str(k)
            tw = d.textlength(tag, font=fm)
            d.rectangle([x1 - 2, y1 - 2, x1 + tw + 6, y1 + int(18 * scale)], fill=(230, 40, 40))
            d.text((x1 + 2, y1 - 1), tag, fill=(255, 255, 255), font=fm)
    return img, elements


def _instruction(e: dict) -> str:
    if e["kind"] == "icon":
        return {"search": "search", "settings": "open settings", "close": "close this window", "menu": "open the menu",
                "home": "go to the home page", "share": "share this page"}[e["name"]]
    if e["kind"] == "input":
        return "type in the search box"
    return f"click {e['name'].lower()}"


def make_screenspot(out: Path, seed: int) -> None:
    rng = random.Random(seed + 2)
    d = fresh(out)
    imgdir = d / "screenspotv2_image"
    imgdir.mkdir()
    specs = {"mobile": ((540, 960), ("ios", "android")), "desktop": ((1280, 720), ("windows", "macos")),
             "web": ((1280, 720), ("shop", "forum"))}
    for platform, ((w, h), sources) in specs.items():
        rows = []
        for s, source in enumerate(sources):
            img, els = gui_screen(rng, w, h)
            fn = f"{platform}_{source}_{s}.png"
            img.save(imgdir / fn, optimize=True)
            for e in (next(e for e in els if e["kind"] == "text"), next(e for e in els if e["kind"] == "icon")):
                x1, y1, x2, y2 = e["bbox"]
                rows.append({"img_filename": fn, "bbox": [x1, y1, x2 - x1, y2 - y1], "instruction": _instruction(e),
                             "data_type": e["kind"], "data_source": source})
        write_json(d / f"screenspot_{platform}_v2.json", rows)
    pro = d / "pro"
    (pro / "annotations").mkdir(parents=True)
    (pro / "images").mkdir()
    for app, group, platform in (("vscode", "Dev", "macos"), ("photoshop", "Creative", "windows")):
        rows = []
        img, els = gui_screen(rng, 1920, 1080, scale=1.0, n_buttons=6, n_icons=4)
        fn = f"{app}_{platform}/screenshot_0.png"
        (pro / "images" / fn).parent.mkdir(parents=True, exist_ok=True)
        img.save(pro / "images" / fn, optimize=True)
        for k, e in enumerate((next(e for e in els if e["kind"] == "text"), next(e for e in els if e["kind"] == "icon"))):
            rows.append({"img_filename": fn, "bbox": list(e["bbox"]), "instruction": _instruction(e),
                         "instruction_cn": "", "id": f"{app}_{platform}_{k}", "application": app, "platform": platform,
                         "img_size": [1920, 1080], "ui_type": e["kind"] if e["kind"] != "input" else "text", "group": group})
        write_json(pro / "annotations" / f"{app}_{platform}.json", rows)


def make_osatlas(out: Path, seed: int) -> None:
    rng = random.Random(seed + 3)
    d = fresh(out)
    (d / "images").mkdir()
    rows = []
    for i, (w, h) in enumerate(((1280, 720), (1280, 800), (1440, 900))):
        img, els = gui_screen(rng, w, h)
        fn = f"web_{seed}_{i:03d}.png"
        img.save(d / "images" / fn, optimize=True)
        picked = rng.sample(els, 3)
        rows.append({"img_filename": fn, "elements": [
            {"instruction": _instruction(e), "bbox": [round(e["bbox"][0] / w, 4), round(e["bbox"][1] / h, 4),
                                                      round(e["bbox"][2] / w, 4), round(e["bbox"][3] / h, 4)]}
            for e in picked]})
    write_json(d / "web_grounding.json", rows)


# --------------------------------------------------------------------------------------------
# Web actions (set-of-marks)
# --------------------------------------------------------------------------------------------


def make_web_action(out: Path, seed: int) -> None:
    rng = random.Random(seed + 4)
    d = fresh(out)
    (d / "images").mkdir()
    rows = []
    queries = ("blue sofa under 200 dollars", "wooden dining table", "red running shoes size 10", "usb c charger")
    kinds = ["type", "click", "click", "type", "scroll", "go_back", "stop", "click", "type", "hover"]
    for i, kind in enumerate(kinds):
        img, els = gui_screen(rng, 1024, 768, marks=True)
        fn = f"som_{i:03d}.png"
        img.save(d / "images" / fn, optimize=True)
        field = next(e for e in els if e["kind"] == "input")
        button = rng.choice([e for e in els if e["kind"] == "text"])
        prev: list[str] = []
        if kind == "type":
            q = rng.choice(queries)
            intent, action = f"Search the shop for a {q}.", f"type [{field['id']}] [{q}] [1]"
        elif kind in ("click", "hover"):
            intent, action = f"{'Open' if kind == 'click' else 'Show the tooltip of'} the \"{button['name']}\" button.", f"{kind} [{button['id']}]"
            prev = ["scroll [down]"] if i % 3 == 0 else []
        elif kind == "scroll":
            intent, action = "Find the reviews section further down the page.", "scroll [down]"
        elif kind == "go_back":
            intent, action = "Return to the search results you were on before.", "go_back"
            prev = [f"click [{button['id']}]"]
        else:
            intent, action = "How many buttons does this page show? Answer when done.", f"stop [{sum(e['kind'] == 'text' for e in els)}]"
        rows.append({
            "id": f"web-{i:03d}", "image": f"images/{fn}", "intent": intent, "url": f"http://shop.example/page/{i}",
            "previous_actions": prev, "action": action, "site": "shopping",
            "elements": [{"id": e["id"], "bbox": list(e["bbox"]), "role": e["role"],
                          "text": e["name"] if e["kind"] != "icon" else f"{e['name']} icon"} for e in els],
        })
    (d / "samples.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


MAKERS = {"blink": make_blink, "vstar": make_vstar, "screenspot": make_screenspot, "osatlas": make_osatlas,
          "web_action": make_web_action}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(MAKERS), help="comma-separated subset of " + ", ".join(MAKERS))
    ap.add_argument("--out", type=Path, default=ROOT / "mcts_engine" / "sample_data", help="parent directory (default mcts_engine/sample_data/)")
    ap.add_argument("--seed", type=int, default=2025)
    args = ap.parse_args()
    for name in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        if name not in MAKERS:
            ap.error(f"unknown task {name!r}")
        MAKERS[name](args.out / f"{name}_sample", args.seed)
        print(f"wrote {args.out / f'{name}_sample'}")


if __name__ == "__main__":
    main()
