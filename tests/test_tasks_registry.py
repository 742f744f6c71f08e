"""The task registry: modules found by discovery, each benchmark layout recognised by its own module's hook."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

import mcts_engine.tasks as tasks_pkg
from mcts_engine.samples import Sample, load_samples, vigorl
from mcts_engine.samples.probe import InputProbe
from mcts_engine.tasks import TASKS, get_task, layout_modules, load_benchmark, task_names

DATA = Path(__file__).resolve().parent.parent / "mcts_engine" / "sample_data"


def test_every_task_module_is_discovered():
    assert set(task_names()) >= {"sat2", "blink", "vstar", "screenspot", "osatlas", "web_action"}
    hooks = [m.__name__.rsplit(".", 1)[1] for m in layout_modules()]
    assert hooks == ["screenspot", "vstar", "blink", "sat2", "osatlas", "web_action"]  # by LAYOUT_PRIORITY


@pytest.mark.parametrize(("path", "module"), [
    ("blink_sample", "blink"), ("blink_sample/blink_val.parquet", "blink"),
    ("sat2_sample/sat_schema.parquet", "sat2"), ("vstar_sample", "vstar"),
    ("screenspot_sample", "screenspot"), ("screenspot_sample/pro", "screenspot"),
    ("screenspot_sample/screenspot_web_v2.json", "screenspot"),
    ("osatlas_sample", "osatlas"), ("osatlas_sample/web_grounding.json", "osatlas"),
    ("web_action_sample", "web_action"), ("web_action_sample/samples.jsonl", "web_action"),
])
def test_each_bundled_layout_is_claimed_by_exactly_its_own_module(path, module):
    probe = InputProbe(DATA / path)
    claims = [m.__name__.rsplit(".", 1)[1] for m in layout_modules() if m.detect(probe)]
    assert claims == [module]


def test_generic_and_released_layouts_are_claimed_by_no_task():
    assert load_benchmark(DATA / "sat2_sample" / "samples.jsonl") is None  # plain JSONL: the generic reader
    released = DATA / "sat2_sample" / "vigorl.jsonl"
    assert load_benchmark(released) is None and vigorl.detect(InputProbe(released))
    assert not vigorl.detect(InputProbe(DATA / "web_action_sample" / "samples.jsonl"))


def test_a_new_module_is_a_new_task_and_layout(tmp_path, monkeypatch):
    """Adding a task is one module: dropped into the package's path, it is found, registered and asked first."""
    pkg = tmp_path / "extra"
    pkg.mkdir()
    (pkg / "zz_demo.py").write_text(textwrap.dedent('''
        from mcts_engine.samples import Sample
        from mcts_engine.tasks import register
        from mcts_engine.tasks.sat2 import SAT2

        @register
        class Demo(SAT2):
            name = "zz_demo"

        LAYOUT_PRIORITY = 1

        def detect(probe):
            return probe.suffix == ".demo"

        def load(probe, image_root=None, task="", inputs=None):
            for i, line in enumerate(probe.path.read_text().splitlines()):
                q, a = line.split("|")
                yield Sample(id=f"demo-{i}", images=["img.png"], question=q, answer=a, task="zz_demo",
                             image_root=str(probe.path.parent))
    '''))
    (tmp_path / "items.demo").write_text("Which side?|left\nHow many?|2\n")
    monkeypatch.setattr(tasks_pkg, "__path__", [*tasks_pkg.__path__, str(pkg)])
    monkeypatch.setattr(tasks_pkg, "_MODULES", [])
    try:
        assert "zz_demo" in task_names() and get_task("zz_demo").name == "zz_demo"
        assert layout_modules()[0].__name__ == "mcts_engine.tasks.zz_demo"
        items = list(load_samples(tmp_path / "items.demo"))
        assert [(s.id, s.question, s.answer) for s in items if isinstance(s, Sample)] == [
            ("demo-0", "Which side?", "left"), ("demo-1", "How many?", "2")]
    finally:
        TASKS.pop("zz_demo", None)
        sys.modules.pop("mcts_engine.tasks.zz_demo", None)
