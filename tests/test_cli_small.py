"""Small things a first hour trips on: --help without <bool>, --kind errors about --kind, demo's page location,
the export's sizes, the next step after export."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcts_engine.cli import app
from mcts_engine.evaluation.demo import DEMO_DIR, page_path
from mcts_engine.export.console import next_train_hint, size_line

runner = CliRunner()
IMAGE = Path(__file__).resolve().parent.parent / "mcts_engine" / "sample_data" / "sat2_sample" / "images" / "sat2_000.png"


@pytest.mark.parametrize("command", [[], ["generate"], ["export"], ["report"], ["eval"], ["demo"], ["train"], ["env"]])
def test_help_shows_no_bool_type(command: list[str]) -> None:
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "<bool>" not in res.output


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small") / "r"
    res = runner.invoke(app, ["generate", "--no-progress", "--status-every", "0", "--limit", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_unknown_kind_talks_about_kind(run: Path) -> None:
    res = runner.invoke(app, ["export", "--run", str(run), "--kind", "sfft"])
    assert res.exit_code == 2 and "--kind 'sfft'" in res.output and "--flavor" not in res.output
    res = runner.invoke(app, ["export", "--run", str(run), "--kind", "sft,all"])
    assert res.exit_code == 2 and "--kind" in res.output


def test_export_sizes_add_up_and_the_next_step_is_train(run: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["export", "--run", str(run), "--out", str(tmp_path / "e"), "--quiet"])
    assert res.exit_code == 0, res.output
    m = re.search(r"content before compression ([\d.]+) MB = images ([\d.]+) MB \(unique\) \+ text ([\d.]+) MB", res.output)
    assert m and abs(float(m.group(1)) - float(m.group(2)) - float(m.group(3))) < 0.011
    assert "next: mcts-engine train --method sft" in res.output and str(tmp_path / "e" / "sft_train.parquet") in res.output


def test_size_line_total_is_never_below_a_part() -> None:
    line = size_line(100_000, 3_456_789, 12_345)
    total, img, txt = (float(x) for x in re.findall(r"([\d.]+) MB", line)[1:4])
    assert total >= img and total >= txt and "on disk" in line


def test_next_train_hint() -> None:
    assert next_train_hint(Path("r"), Path("r/e"), ["grpo_train"], "parquet").startswith("next: mcts-engine train --method grpo")
    assert next_train_hint(Path("r"), Path("r/e"), ["sft_train"], "jsonl") is None


def test_demo_page_path() -> None:
    assert page_path(None, Path("/x/photo.jpg")) == DEMO_DIR / "demo-photo.html"
    assert page_path(Path("out"), Path("a.png")) == Path("out/demo-a.html")
    assert page_path(Path("o/p.html"), Path("a.png")) == Path("o/p.html")


def test_demo_writes_into_the_given_directory_and_says_where(tmp_path: Path) -> None:
    res = runner.invoke(app, ["demo", "--image", str(IMAGE), "--query", "Where is the chair?", "--teacher", "sim",
                              "--task", "vstar", "--choices", "left|right", "--out", str(tmp_path / "pages"), "--quiet"])
    assert res.exit_code == 0, res.output
    page = tmp_path / "pages" / "demo-sat2_000.html"
    assert page.is_file() and f"wrote {page.resolve()}" in res.output


def test_slow_marker_selects_by_node_id(pytestconfig: pytest.Config) -> None:
    from conftest import SLOW, is_slow

    assert any("slow:" in m for m in pytestconfig.getini("markers"))
    assert is_slow("tests/test_train_sft.py::test_two_processes_equal_one_process[ddp]")
    assert is_slow("test_report_scale.py::test_ten_thousand_trees_make_a_small_page_of_data_not_markup")
    assert not is_slow("tests/test_train_sft.py::test_two_processes_equal_one_process_x")
    assert not is_slow("tests/test_cli_small.py::test_slow_marker_selects_by_node_id")
    assert all(s.startswith("tests/test_") and "::" in s for s in SLOW)
