"""The bundled benchmark samples: rendered deterministically, and read without a single bad row."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from mcts_engine.samples import Sample, load_samples

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "make_task_samples.py"


def digest(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def test_rendering_is_deterministic(tmp_path):
    for name in ("a", "b"):
        subprocess.run([sys.executable, str(SCRIPT), "--tasks", "blink,screenspot,web_action", "--out", str(tmp_path / name)],
                       check=True, capture_output=True, timeout=120)
    for task in ("blink", "screenspot", "web_action"):
        a, b = digest(tmp_path / "a" / f"{task}_sample"), digest(tmp_path / "b" / f"{task}_sample")
        assert a and a == b


@pytest.mark.parametrize(
    "path, task, n",
    [("blink_sample", "blink", 15), ("vstar_sample", "vstar", 8), ("screenspot_sample", "screenspot", 12),
     ("screenspot_sample/pro", "screenspot", 4), ("osatlas_sample", "osatlas", 9),
     ("web_action_sample/samples.jsonl", "web_action", 10)],
)
def test_bundled_samples_load_cleanly(path, task, n):
    from mcts_engine.frame import frame_for
    from mcts_engine.tasks import get_task

    items = list(load_samples(ROOT / "mcts_engine" / "sample_data" / path, task=task))
    assert all(isinstance(i, Sample) for i in items), [str(i) for i in items if not isinstance(i, Sample)]
    assert len(items) == n and len({i.id for i in items}) == n
    t = get_task(task)
    for s in items:
        t.check_sample(s)
        assert len(s.images) == 1
        frame = frame_for(1000, 800, max_pixels=1280 * 28 * 28)
        assert t.ground_truth(s, frame)["answer"]
