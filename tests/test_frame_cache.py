"""FrameCache: an image several samples ask about is decoded, resized and encoded once per run."""

from __future__ import annotations

import io
import json
import os
import threading
import time
import types
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import mcts_engine.samples.frames as frames_mod
import mcts_engine.samples.images as images_mod
from mcts_engine.cli import app
from mcts_engine.samples import FrameCache

MAXP, MINP = 1280 * 28 * 28, 56 * 56


def _png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (300, 200)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


@pytest.fixture()
def counted(monkeypatch):
    """Count the real encodes (one per preparation)."""
    calls: list[int] = []
    real = images_mod.encode_image

    def counting(img, **kw):
        calls.append(1)
        return real(img, **kw)

    monkeypatch.setattr(images_mod, "encode_image", counting)
    return calls


def test_same_file_is_prepared_once(tmp_path, counted):
    img = _png(tmp_path / "a.png", (10, 20, 30))
    cache = FrameCache()
    a = cache.get(str(img), None, MAXP, MINP, "png")
    b = cache.get("a.png", str(tmp_path), MAXP, MINP, "png")  # the same file by another spelling
    assert a is b and len(counted) == 1 and (cache.misses, cache.hits) == (1, 1)
    assert a[0].frame.width % 28 == 0 and a[1].size == (a[0].frame.width, a[0].frame.height)


def test_changed_file_other_settings_and_other_bytes_are_prepared_again(tmp_path, counted):
    img = _png(tmp_path / "a.png", (10, 20, 30))
    cache = FrameCache()
    first = cache.get(str(img), None, MAXP, MINP, "png")
    assert cache.get(str(img), None, MAXP, MINP, "jpeg")[0].mime == "image/jpeg"  # another format
    assert cache.get(str(img), None, 200 * 28 * 28 // 10, MINP, "png")[0].frame != first[0].frame  # another frame
    _png(img, (200, 20, 30), size=(301, 200))
    os.utime(img, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert cache.get(str(img), None, MAXP, MINP, "png")[0].key != first[0].key  # rewritten on disk
    assert len(counted) == 4

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="PNG")
    data = buf.getvalue()
    x = cache.get(data, None, MAXP, MINP, "png")
    assert cache.get(bytes(data), None, MAXP, MINP, "png") is x  # equal bytes, another object
    buf2 = io.BytesIO()
    Image.new("RGB", (64, 64), (3, 2, 1)).save(buf2, format="PNG")
    assert cache.get(buf2.getvalue(), None, MAXP, MINP, "png") is not x
    assert len(counted) == 6


def test_least_recently_used_is_dropped(tmp_path, counted):
    paths = [str(_png(tmp_path / f"{i}.png", (i, i, i))) for i in range(3)]
    cache = FrameCache(capacity=2)
    cache.get(paths[0], None, MAXP, MINP, "png")
    cache.get(paths[1], None, MAXP, MINP, "png")
    cache.get(paths[0], None, MAXP, MINP, "png")  # 0 is now the most recent
    cache.get(paths[2], None, MAXP, MINP, "png")  # drops 1
    cache.get(paths[0], None, MAXP, MINP, "png")
    assert len(counted) == 3
    cache.get(paths[1], None, MAXP, MINP, "png")
    assert len(counted) == 4


def test_threads_asking_at_once_share_one_preparation(tmp_path, monkeypatch):
    """Eight requests for one image provably in flight together: the first is held inside the preparation
    until the seven others are waiting for its result (on the cache's per-key event), so the test cannot pass
    by threads running one after another; then the preparation has run once and all share its result."""
    img = str(_png(tmp_path / "a.png", (10, 20, 30)))
    cond = threading.Condition()
    state = {"preparing": 0, "waiting": 0}
    release = threading.Event()
    real = frames_mod.load_frame

    def held(*args, **kw):
        with cond:
            state["preparing"] += 1
            cond.notify_all()
        assert release.wait(30), "the test never released the preparation"
        return real(*args, **kw)

    class CountedEvent(threading.Event):  # the per-key "being prepared" event the cache makes
        def wait(self, timeout=None):
            with cond:
                state["waiting"] += 1
                cond.notify_all()
            return super().wait(timeout)

    monkeypatch.setattr(frames_mod, "load_frame", held)
    monkeypatch.setattr(frames_mod, "threading", types.SimpleNamespace(Lock=threading.Lock, Event=CountedEvent))
    cache = FrameCache()
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(img, None, MAXP, MINP, "png")), daemon=True)
               for _ in range(8)]
    try:
        for t in threads:
            t.start()
        with cond:  # until all eight are in flight, or a second preparation started
            settled = cond.wait_for(lambda: state["preparing"] + state["waiting"] >= 8 or state["preparing"] > 1, 10)
            in_flight = dict(state)
    finally:
        release.set()
        for t in threads:
            t.join(10)
    assert settled, f"requests did not wait for the one preparation in flight: {state}"
    assert in_flight == {"preparing": 1, "waiting": 7}  # one held inside the preparation, seven waiting on it
    assert len(got) == 8 and all(g is got[0] for g in got)
    assert (cache.misses, cache.hits) == (1, 7)


def test_failures_are_not_kept_and_every_asker_gets_the_reason(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    cache = FrameCache()
    errors: list[str] = []

    def ask() -> None:
        try:
            cache.get(str(bad), None, MAXP, MINP, "png")
        except ValueError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert len(errors) == 4 and all("cannot read image" in e and "bad.png" in e for e in errors)
    with pytest.raises(ValueError, match="image not found"):
        cache.get(str(tmp_path / "missing.png"), None, MAXP, MINP, "png")
    _png(bad, (5, 5, 5))  # fixed on disk: now it prepares
    assert cache.get(str(bad), None, MAXP, MINP, "png")[0].frame.orig_width == 300


def test_generate_prepares_a_shared_image_once(tmp_path):
    img = _png(tmp_path / "shot.png", (240, 240, 240), size=(400, 300))
    rows = [
        {"id": f"q{i}", "image": "shot.png", "question": f"Question {i}? Choices: left, right",
         "answer": "left", "choices": ["left", "right"]}
        for i in range(5)
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["generate", "--no-progress", "--task", "sat2", "--data", str(data),
                                   "--image-root", str(tmp_path), "--teacher", "sim", "--out", str(out)])
    assert res.exit_code == 0, res.output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["session"]["images_prepared"] == 1 and stats["session"]["images_reused"] == 4
    keys = {json.loads(line)["images"][0]["key"] for line in (out / "trees.jsonl").read_text().splitlines()}
    assert len(keys) == 1 and len(list((out / "images").iterdir())) == 1
    assert img.exists()
