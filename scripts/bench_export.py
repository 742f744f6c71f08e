"""Benchmark `mcts-engine export`: 1,000 synthetic trees → ≥ 10,000 SFT chains.

Builds a run directory the way ``generate`` does — synthetic trees (each: 5 first steps × 3 second
steps, 15 answer leaves, 11 of them correct) over distinct synthetic photo-like 640×480 JPEG sources,
with the run's image cache (each image resized to the teacher's 644×476 frame and encoded once in the
teacher's ``--teacher-format``) — then times the export and compares the output size with the unique
image bytes stored plus the text of the rows. A second run without the cache (an older run) shows the
fallback path that reads and resizes the source images.

    python scripts/bench_export.py                  # 1,000 trees, the default table
    python scripts/bench_export.py --trees 200      # quicker
    python scripts/bench_export.py --teacher-format png   # a run that cached lossless PNG frames

Image generation and tree building are not timed. Prints a markdown table (for the README).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mcts_engine.export.config import ExportConfig
from mcts_engine.export.run import export_run
from mcts_engine.export.schema import features_for
from mcts_engine.frame import frame_for
from mcts_engine.samples import load_frame
from mcts_engine.search.tree import Tree
from mcts_engine.store import RunStore

W, H = 640, 480
CHOICES = ["left", "right", "above", "below"]


def make_image(path: Path, rng: random.Random) -> None:
    """A photo-like image: smooth gradient, random shapes, mild noise (so PNG/JPEG sizes are realistic)."""
    y, x = np.mgrid[0:H, 0:W]
    base = np.stack([(x * rng.uniform(0.1, 0.4) + y * rng.uniform(0.1, 0.4) + rng.uniform(0, 80)) % 256
                     for _ in range(3)], axis=-1)
    img = Image.fromarray(base.astype("uint8"))
    d = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.randrange(W - 40), rng.randrange(H - 40)
        d.ellipse([x0, y0, x0 + rng.randrange(20, 200), y0 + rng.randrange(20, 160)],
                  fill=tuple(rng.randrange(256) for _ in range(3)))
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, 6, (H, W, 3))
    arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype("uint8")
    Image.fromarray(arr).save(path, format="JPEG", quality=90)


def make_tree(i: int, rng: random.Random) -> Tree:
    frame = frame_for(W, H, max_pixels=1280 * 28 * 28)
    sid = f"b{i:05d}"
    truth = {"answer": "left", "choices": CHOICES}
    sample = {"id": sid, "images": [f"img{i:05d}.jpg"], "question": f"Where is object {i}?", "answer": "left",
              "choices": CHOICES, "boxes": [], "task": "sat2", "metadata": {}}
    t = Tree(sample_id=sid, task="sat2", frame=frame, truth=truth, sample=sample, prompt={"system": "", "user": ""})
    used: set[tuple[int, int]] = set()

    def pt() -> tuple[int, int]:
        while True:
            p = (rng.randrange(frame.width), rng.randrange(frame.height))
            if p not in used:
                used.add(p)
                return p

    wrong_slots = set(rng.sample(range(15), 4))
    k = 0
    for _ in range(5):
        p = pt()
        a = t.add(t.root, kind="think", thought=f"The region near the {rng.choice(['lamp', 'chair', 'door', 'cup'])} "
                  f"looks relevant to the question {p}.".replace(str(p), f"({p[0]}, {p[1]})"), point=p, expanded=True)
        for _ in range(3):
            q = pt()
            b = t.add(a, kind="think", thought=f"Comparing it with the object at ({q[0]}, {q[1]}), the relation "
                      f"becomes clear.", point=q, expanded=True)
            ok = k not in wrong_slots
            t.add(b, kind="answer", answer="left" if ok else rng.choice(CHOICES[1:]), correct=ok,
                  reward=float(ok), verdict="match" if ok else "chose option B", visits=1, value_sum=float(ok))
            b.visits, b.value_sum = 1, float(ok)
            a.visits += 1
            a.value_sum += float(ok)
            k += 1
    t.root.visits = sum(t.nodes[c].visits for c in t.root.children)
    t.root.value_sum = sum(t.nodes[c].value_sum for c in t.root.children)
    t.stats = {"calls": 21, "completion_tokens": 1800}
    return t


def build_run(root: Path, n: int, seed: int, teacher_format: str = "auto") -> tuple[Path, Path]:
    """(run with the image cache, the same run without it)."""
    rng = random.Random(seed)
    data = root / "data"
    data.mkdir(parents=True)
    for i in range(n):
        make_image(data / f"img{i:05d}.jpg", rng)
    cfg = {"task": "sat2", "data": str(data / "samples.jsonl"), "teacher": {"max_pixels": 1280 * 28 * 28, "min_pixels": 3136}}
    store = RunStore.open_for_generate(root / "run", cfg, "bench")
    bare = RunStore.open_for_generate(root / "run_nocache", cfg, "bench")
    cache = store.path / "images"
    cache.mkdir(exist_ok=True)
    for i in range(n):
        tree = make_tree(i, rng)
        bare.append_tree(tree)
        enc, _ = load_frame(f"img{i:05d}.jpg", str(data), 1280 * 28 * 28, 56 * 56, teacher_format)
        ext = "jpg" if enc.mime == "image/jpeg" else "png"
        (cache / f"{enc.key}.{ext}").write_bytes(enc.data)
        f = enc.frame
        tree.images = [{"key": enc.key, "file": f"images/{enc.key}.{ext}", "width": f.width, "height": f.height,
                        "mime": enc.mime, "orig_width": f.orig_width, "orig_height": f.orig_height}]
        store.append_tree(tree)
    return store.path, bare.path


def dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and f.name != "export_summary.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--teacher-format", default="auto", choices=["auto", "png", "jpeg"],
                    help="teacher.image_format the run cached its frames with (auto, the default: JPEG sources → JPEG)")
    ap.add_argument("--workdir", default=None, help="keep the run and outputs here (default: a temp dir, removed)")
    args = ap.parse_args()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_export_"))
    try:
        t0 = time.perf_counter()
        run, bare = build_run(work, args.trees, args.seed, args.teacher_format)
        src_bytes = sum(f.stat().st_size for f in (work / "data").iterdir())
        cache_bytes = sum(f.stat().st_size for f in (run / "images").iterdir())
        print(f"built {args.trees} trees + images in {time.perf_counter() - t0:.1f}s (source JPEGs {src_bytes / 1e6:.1f} MB; "
              f"cached {args.teacher_format} frames {cache_bytes / 1e6:.1f} MB; trees.jsonl {(run / 'trees.jsonl').stat().st_size / 1e6:.1f} MB)")
        features_for("sft", "trl")  # import datasets outside the timings
        export_run(run, work / "warmup", kinds=["sft"], cfg=ExportConfig(), limit=20)  # task registry, page cache
        shutil.rmtree(work / "warmup")
        cases = [
            ("sft · cached frame images copied (default)", run, ["sft"], "parquet", {}),
            ("sft · cached frames re-encoded as JPEG q95", run, ["sft"], "parquet", {"image_format": "jpeg"}),
            ("sft · no cache: source JPEG resized → JPEG", bare, ["sft"], "parquet", {}),
            ("sft · rescale_to_original (source copied)", run, ["sft"], "parquet", {"rescale_to_original": True}),
            ("sft · --format jsonl (images as files)", run, ["sft"], "jsonl", {}),
            ("sft+grpo+dpo+prm (a file per kind)", run, ["sft", "grpo", "dpo", "prm"], "parquet", {}),
        ]
        print()
        print(f"{args.trees:,} trees, {os.cpu_count()} CPU cores")
        print()
        print("| export | rows (sft chains) | time | trees/s | output | unique images | text | output / (images + text) |")
        print("|---|---|---|---|---|---|---|---|")
        for i, (label, run_dir, kinds, fmt, extra) in enumerate(cases):
            cfg = ExportConfig(strategies="best,all_correct,backtrack", max_correct_per_sample=10,
                               val_fraction=0.05, **extra)
            out = work / f"out{i}"
            t = time.perf_counter()
            res = export_run(run_dir, out, kinds=kinds, cfg=cfg, fmt=fmt)
            dt = time.perf_counter() - t
            rows = sum(res.rows.values())
            chains = sum(res.strategies.values())
            size = dir_bytes(out)
            base = res.unique_image_bytes + res.text_bytes
            print(f"| {label} | {rows:,} ({chains:,}) | {dt:.1f} s | {res.trees / dt:,.0f} | {size / 1e6:.1f} MB | "
                  f"{res.unique_image_bytes / 1e6:.1f} MB | {res.text_bytes / 1e6:.1f} MB | {size / base:.2f} |")
            shutil.rmtree(out)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
