#!/usr/bin/env python
"""Benchmark (not a test): the real ``generate`` engine against a stand-in OpenAI-compatible server.

The stand-in (``mcts_engine.testing.stub_server``) runs in a SEPARATE process with a set capacity
(sequences decoded at once) and per-choice latency, so the ideal throughput is ``capacity / latency``
choices per second. This process runs ``run_generate`` with ``teacher.kind = openai`` against it and
reports:

- achieved choices/s ÷ ideal, over the whole run (ramp-up and drain included) and in steady state
  (the middle 80 % of completed choices: between the moments 10 % and 90 % had completed);
- engine CPU ms per choice: this process's CPU time (all threads: search, HTTP client, image encoding,
  run-directory writes) during ``run_generate`` ÷ choices, split into the event loop's thread (search,
  teacher client, store) and worker threads (per-sample image load/resize/encode, run via
  ``asyncio.to_thread``), and into user/kernel time;
- prompt bytes per choice (request bodies ÷ choices) and mean choices per request;
- requests in flight at the server: time-weighted mean and max;
- with ``--faults`` (the stand-in's fault plan, ``mcts_engine/testing/faults.py``): samples done and
  failed, faults served, requests retried, choices asked by attempts that failed (and choices the server
  decoded for replies that were then lost), and throughput ÷ ideal counting only the choices delivered.

Samples: the bundled ``mcts_engine/sample_data/sat2_sample`` set repeated to ``--samples`` under fresh ids, each repeat with
its own image file of different content (one pixel changed), so every sample pays the whole image
preparation; synthesized images if the bundled set is missing.

    python scripts/bench_generate.py                       # capacity 256, 500 ms per choice
    python scripts/bench_generate.py --capacity 64 --latency-ms 200 --samples 200
    python scripts/bench_generate.py --faults              # the issue's fault mix (10 % 5xx, 5 % hangs, ...)
    python scripts/bench_generate.py --faults '5xx=10%,429=5%' --max-retries 5
    python scripts/bench_generate.py --profile 25          # + the engine's top functions by CPU
    python scripts/bench_generate.py --image-prep          # per-sample image preparation, by stage
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _http(url: str, method: str = "GET") -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with opener.open(req, timeout=60) as resp:
        return json.loads(resp.read())


DEFAULT_FAULTS = "5xx=10%,hang=5%,reset=2%,malformed=5%"  # the mix of issue 12
DECODED_THEN_LOST = {"hang", "reset", "cut_chunked", "not_json", "no_choices", "no_content", "too_few", "wrong_count"}


def start_stub(capacity: int, latency_ms: float, workdir: Path, faults: str = "", hang_s: float = 30.0) -> tuple[subprocess.Popen, str]:
    ready = workdir / "stub.port"
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcts_engine.testing.stub_server", "--port", "0", "--ready-file", str(ready),
         "--capacity", str(capacity), "--latency-ms", str(latency_ms), "--model", "stub-model",
         "--faults", faults, "--hang-s", str(hang_s), "--retry-after-s", "1"],
        cwd=ROOT, stdout=subprocess.DEVNULL,
    )
    deadline = time.time() + 30
    while not (ready.exists() and ready.read_text().strip()):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise SystemExit("bench: the stub server did not start")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{ready.read_text().strip()}/v1"


def make_samples(n: int, workdir: Path) -> Path:
    """``n`` samples as plain JSONL with absolute image paths: the bundled set repeated (or synthesized).

    Every repeat gets its OWN image file with different content (one pixel changed, same mode and
    format as the original), so each sample pays the whole image preparation: the engine reuses an
    image several samples share (``FrameCache``), and the benchmark must not profit from that."""
    from PIL import Image

    src = ROOT / "mcts_engine" / "sample_data" / "sat2_sample" / "samples.jsonl"
    base: list[dict] = []
    if src.exists():
        for line in src.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                rec["image"] = str((src.parent / rec["image"]).resolve())
                base.append(rec)
    if not base:
        base = synthesize(24, workdir)
    images = workdir / "images"
    images.mkdir(exist_ok=True)
    out = workdir / "bench_samples.jsonl"
    with out.open("w") as fh:
        for i in range(n):
            rec = dict(base[i % len(base)])
            r = i // len(base)
            rec["id"] = f"{rec['id']}-r{r}"
            with Image.open(rec["image"]) as im:
                im.load()
                copy = im.copy()
            x, y = r % copy.width, (r // copy.width) % copy.height
            px = copy.getpixel((x, y))
            copy.putpixel((x, y), (px + 1) % 256 if isinstance(px, int) else tuple((c + 1) % 256 for c in px))
            path = images / f"{i:05d}{Path(rec['image']).suffix}"
            copy.save(path, format=im.format)
            rec["image"] = str(path)
            fh.write(json.dumps(rec) + "\n")
    return out


def synthesize(k: int, workdir: Path) -> list[dict]:
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(0)
    recs = []
    for i in range(k):
        img = Image.new("RGB", (720, 480), (235, 235, 230))
        d = ImageDraw.Draw(img)
        boxes = []
        for label, color in (("red box", (200, 40, 40)), ("blue box", (40, 60, 200))):
            x, y = rng.randrange(20, 620), rng.randrange(20, 380)
            d.rectangle([x, y, x + 80, y + 80], fill=color)
            boxes.append({"label": label, "bbox": [x, y, x + 80, y + 80]})
        path = workdir / f"synth_{i:03d}.png"
        img.save(path)
        answer = "left" if boxes[0]["bbox"][0] < boxes[1]["bbox"][0] else "right"
        recs.append({"id": f"synth-{i:03d}", "image": str(path), "question": "Is the red box to the left or right of the blue box?",
                     "answer": answer, "choices": ["left", "right"], "boxes": boxes})
    return recs


def steady_ratio(records: list[dict], ideal: float) -> float:
    """Choices/s between the moments 10 % and 90 % of the choices had completed, ÷ ideal (choices of
    replies the client got and could use: faulted replies left out)."""
    done = sorted((r["t1"], r.get("n", 0)) for r in records
                  if r.get("status") == 200 and "t1" in r and r.get("fault") not in DECODED_THEN_LOST)
    total = sum(n for _, n in done)
    if total == 0:
        return 0.0
    acc, t10, t90, c10, c90 = 0, None, None, 0, 0
    for t, n in done:
        acc += n
        if t10 is None and acc >= 0.1 * total:
            t10, c10 = t, acc
        if t90 is None and acc >= 0.9 * total:
            t90, c90 = t, acc
    if t10 is None or t90 is None or t90 <= t10:
        return 0.0
    return (c90 - c10) / (t90 - t10) / ideal


def run_once(args: argparse.Namespace, url: str, data: Path, workdir: Path) -> dict:
    from mcts_engine.config import build_run_config, load_recipe
    from mcts_engine.generate import run_generate

    concurrency = args.concurrency or args.capacity
    retries = args.max_retries if args.max_retries is not None else (3 if args.faults else 0)
    timeout = args.timeout_s or (5.0 if args.faults else 120.0)
    overrides = [
        "teacher.kind=openai", f"teacher.base_url={url}", "teacher.model=stub-model",
        f"teacher.concurrency={concurrency}", f"teacher.max_retries={retries}", f"teacher.timeout_s={timeout:g}",
        f"search.children={args.children}",
    ] + list(args.set or [])
    cfg = build_run_config(load_recipe(None, "sat2"), overrides, data=str(data), seed=0)
    out = workdir / f"run-c{args.capacity}-l{args.latency_ms:g}"
    _http(url.rsplit("/v1", 1)[0] + "/stats/reset", "POST")
    prof = None
    if args.profile:
        import cProfile

        # the event loop thread's CPU time (cProfile only sees this thread; process time would charge the
        # worker threads' image work to whatever this thread was doing meanwhile)
        prof = cProfile.Profile(time.thread_time)
    import resource

    import aiohttp  # noqa: F401 - a one-time start-up cost, not a per-choice one

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0, main0 = time.process_time(), time.perf_counter(), time.thread_time()
    if prof:
        prof.enable()
    from mcts_engine.teachers.openai_compat import OpenAITeacher

    teacher = OpenAITeacher(cfg.teacher)
    stats = run_generate(cfg, out, force=True, progress=False, teacher=teacher)
    import asyncio

    asyncio.run(teacher.aclose())  # its event loop has ended: this drops the sockets it left
    if prof:
        prof.disable()
    cpu, wall, main_cpu = time.process_time() - cpu0, time.perf_counter() - wall0, time.thread_time() - main0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    server = _http(url.rsplit("/v1", 1)[0] + "/stats")
    records = server["records"]
    lost = sum(r.get("n", 0) for r in records if r.get("fault") in DECODED_THEN_LOST and r.get("status") == 200)
    choices = server["choices"] - lost  # delivered to the search
    ideal = args.capacity / (args.latency_ms / 1000.0)
    row = {
        "faults": args.faults or "none",
        "faults_served": sum(server["faults"].values()),
        "retried": teacher.retried,
        "retried_choices": teacher.retried_choices,
        "lost_choices": lost,
        "failed_requests": teacher.failed,
        "capacity": args.capacity,
        "latency_ms": args.latency_ms,
        "concurrency": concurrency,
        "samples": stats.get("finished", 0),
        "failed": stats.get("failed", 0),
        "requests": server["chat_requests"],
        "choices": choices,
        "choices_per_request": choices / max(1, server["chat_requests"]),
        "wall_s": wall,
        "choices_per_s": choices / wall if wall else 0.0,
        "ideal_per_s": ideal,
        "ratio_run": choices / wall / ideal if wall else 0.0,
        "ratio_steady": steady_ratio(records, ideal),
        "cpu_ms_per_choice": 1000.0 * cpu / max(1, choices),
        "cpu_s": cpu,
        "cpu_loop_ms_per_choice": 1000.0 * main_cpu / max(1, choices),
        "cpu_threads_ms_per_choice": 1000.0 * (cpu - main_cpu) / max(1, choices),
        "cpu_user_ms_per_choice": 1000.0 * (ru1.ru_utime - ru0.ru_utime) / max(1, choices),
        "cpu_sys_ms_per_choice": 1000.0 * (ru1.ru_stime - ru0.ru_stime) / max(1, choices),
        "prompt_bytes_per_choice": server["bytes_in"] / max(1, choices),
        "inflight_mean": server["mean_inflight"],
        "inflight_max": server["max_inflight"],
        "decoding_max": server["max_decoding"],
    }
    row["cpu_where"] = f"{row['cpu_loop_ms_per_choice']:.3f} / {row['cpu_threads_ms_per_choice']:.3f}"
    row["cpu_split"] = f"{row['cpu_user_ms_per_choice']:.3f} / {row['cpu_sys_ms_per_choice']:.3f}"
    row["retry_split"] = f"{row['retried']:,} / {row['failed_requests']:,}"
    row["waste_split"] = f"{row['retried_choices']:,} / {row['lost_choices']:,}"
    if prof:
        import io
        import pstats

        buf = io.StringIO()
        st = pstats.Stats(prof, stream=buf)
        st.sort_stats("tottime").print_stats(args.profile)
        st.sort_stats("cumtime").print_stats(args.profile)
        row["profile"] = buf.getvalue()
    return row


TABLE = [
    ("fault plan", "faults", "{}"),
    ("capacity", "capacity", "{:d}"),
    ("latency ms", "latency_ms", "{:g}"),
    ("concurrency", "concurrency", "{:d}"),
    ("samples done", "samples", "{:d}"),
    ("samples failed", "failed", "{:d}"),
    ("requests (attempts at the server)", "requests", "{:d}"),
    ("faults served", "faults_served", "{:d}"),
    ("attempts retried / requests failed after retries", "retry_split", "{}"),
    ("choices asked by failed attempts / decoded then lost", "waste_split", "{}"),
    ("choices delivered", "choices", "{:d}"),
    ("choices/request", "choices_per_request", "{:.2f}"),
    ("wall s", "wall_s", "{:.1f}"),
    ("choices/s", "choices_per_s", "{:.0f}"),
    ("ideal choices/s", "ideal_per_s", "{:.0f}"),
    ("achieved ÷ ideal (whole run)", "ratio_run", "{:.2f}"),
    ("achieved ÷ ideal (steady state)", "ratio_steady", "{:.2f}"),
    ("engine CPU ms / choice", "cpu_ms_per_choice", "{:.3f}"),
    ("… event loop / worker threads", "cpu_where", "{}"),
    ("… user / kernel", "cpu_split", "{}"),
    ("prompt bytes / choice", "prompt_bytes_per_choice", "{:,.0f}"),
    ("requests in flight (mean)", "inflight_mean", "{:.1f}"),
    ("requests in flight (max)", "inflight_max", "{:d}"),
    ("sequences decoding (max)", "decoding_max", "{:d}"),
]


def _photo_like(seed: int):
    """A synthesized photograph stand-in (smooth colour fields + sensor-like noise): PNG filters and
    zlib behave on it as on camera images, unlike on the flat renders of the bundled sets."""
    from PIL import Image, ImageFilter

    bands = [Image.effect_noise((720, 480), 60 + 10 * (seed + c)).filter(ImageFilter.GaussianBlur(6 + 2 * c)) for c in range(3)]
    smooth = Image.merge("RGB", bands)
    grain = Image.merge("RGB", [Image.effect_noise((720, 480), 6) for _ in range(3)])
    return Image.blend(smooth, grain, 0.15)


def image_prep(repeats: int) -> None:
    """Per-sample image preparation, by stage (ms per image, best of ``repeats``), on bundled images of
    three tasks and on synthesized photo-like images: the one-time work a sample's frame costs."""
    import io

    from PIL import Image

    from mcts_engine.frame import frame_for
    from mcts_engine.samples import open_image
    from mcts_engine.samples.png import encode_png_rgb

    sets = {name: sorted(p for p in (ROOT / "mcts_engine" / "sample_data" / f"{name}_sample").rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:8]
            for name in ("sat2", "screenspot", "vstar")}
    photos = [_photo_like(i) for i in range(4)]

    def best(fn, items) -> float:
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for it in items:
                fn(it)
            runs.append((time.perf_counter() - t0) / len(items) * 1000.0)
        return min(runs)

    def pillow_png(img) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=1)
        return buf.getvalue()

    def jpeg(img) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        return buf.getvalue()

    print("| images | frame | decode ms | bicubic resize ms | PNG (Pillow, level 1) ms · KB | PNG (engine) ms · KB | JPEG q90 ms · KB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, paths in list(sets.items()) + [("photo-like (synthesized)", photos)]:
        if not paths:
            continue
        srcs = [p.read_bytes() for p in paths] if name != "photo-like (synthesized)" else [pillow_png(p) for p in paths]
        rgb = [open_image(s) for s in srcs]
        sizes = [frame_for(im.width, im.height, max_pixels=1280 * 28 * 28) for im in rgb]
        frames = [im.resize((f.width, f.height), Image.BICUBIC) for im, f in zip(rgb, sizes)]
        pairs = list(zip(rgb, sizes))
        cells = [f"{best(open_image, srcs):.2f}", f"{best(lambda p: p[0].resize((p[1].width, p[1].height), Image.BICUBIC), pairs):.2f}"]
        for enc in (pillow_png, encode_png_rgb, jpeg):
            kb = sum(len(enc(f)) for f in frames) / len(frames) / 1000.0
            cells.append(f"{best(enc, frames):.2f} · {kb:,.0f}")
        print(f"| {name} ({len(frames)}) | {frames[0].width}×{frames[0].height} | " + " | ".join(cells) + " |")


def print_table(rows: list[dict]) -> None:
    print("| metric | " + " | ".join(f"run {i + 1}" for i in range(len(rows))) + " |")
    print("|---|" + "---:|" * len(rows))
    for label, key, fmt in TABLE:
        print(f"| {label} | " + " | ".join(fmt.format(r[key]) for r in rows) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capacity", type=int, nargs="+", default=[256], help="sequences the stand-in decodes at once")
    ap.add_argument("--latency-ms", type=float, default=500.0, help="per-choice decode time at the stand-in")
    ap.add_argument("--samples", type=int, default=480, help="samples to search (bundled set repeated)")
    ap.add_argument("--faults", nargs="?", const=DEFAULT_FAULTS, default="",
                    help=f"the stand-in's fault plan (bare --faults: {DEFAULT_FAULTS.replace('%', '%%')!r}; "
                         "see mcts_engine/testing/faults.py)")
    ap.add_argument("--hang-s", type=float, default=30.0, help="how long an injected hang waits (past --timeout-s)")
    ap.add_argument("--timeout-s", type=float, default=0.0, help="teacher.timeout_s (default 120, or 5 with --faults)")
    ap.add_argument("--max-retries", type=int, default=None, help="teacher.max_retries (default 0, or 3 with --faults)")
    ap.add_argument("--concurrency", type=int, default=0, help="teacher.concurrency (default: = capacity)")
    ap.add_argument("--children", type=int, default=3, help="search.children (n of an expansion request)")
    ap.add_argument("--set", action="append", help="extra config override key=value (repeatable)")
    ap.add_argument("--profile", type=int, default=0, help="print the engine's top N functions by CPU")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (run dirs, samples)")
    ap.add_argument("--image-prep", action="store_true",
                    help="only time the per-sample image preparation by stage (decode, resize, PNG/JPEG encoders)")
    args = ap.parse_args()
    if args.image_prep:
        image_prep(repeats=7)
        return

    if args.faults:
        from mcts_engine.testing.faults import FaultPlan, parse_faults

        try:
            FaultPlan(parse_faults(args.faults))
        except ValueError as exc:
            raise SystemExit(f"bench_generate: --faults: {exc}") from None
    workdir = Path(tempfile.mkdtemp(prefix="bench_generate_"))
    data = make_samples(args.samples, workdir)
    rows = []
    for capacity in args.capacity:
        one = argparse.Namespace(**{**vars(args), "capacity": capacity})
        proc, url = start_stub(capacity, args.latency_ms, workdir, args.faults, args.hang_s)
        try:
            row = run_once(one, url, data, workdir)
        finally:
            proc.terminate()
            proc.wait(10)
        rows.append(row)
        if row.get("profile"):
            print(row.pop("profile"))
        print(f"capacity {capacity}, faults {row['faults']}: {row['choices']} choices in {row['wall_s']:.1f}s, "
              f"{row['ratio_steady']:.2f} of ideal (steady), {row['cpu_ms_per_choice']:.3f} ms CPU/choice", file=sys.stderr)
    print(f"\nbench_generate: stand-in server in a separate process; engine = this process (pid {os.getpid()}); "
          f"{os.cpu_count()} CPU cores\n")
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"\nwork directory kept: {workdir}")


if __name__ == "__main__":
    main()
