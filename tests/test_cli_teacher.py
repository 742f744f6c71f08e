"""One rule picks the teacher for generate, eval and demo: a server address never ends up at the simulator."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcts_engine.cli import app
from mcts_engine.commands import TEACHER_KINDS, choose_teacher, recipe_teacher_kind
from mcts_engine.testing.refused_port import refused_url

runner = CliRunner()
DEAD = "http://127.0.0.1:9/v1"  # a URL for the pure choice of teacher; tests that connect use refused_url()
IMAGE = Path(__file__).resolve().parent.parent / "mcts_engine" / "sample_data" / "sat2_sample" / "images" / "sat2_000.png"

FLAGS = [None, *TEACHER_KINDS]
COMBOS = list(itertools.product(FLAGS, [None, DEAD], [None, "qwen-vl"], FLAGS, [True, False]))


def expected(teacher, base_url, model, recipe_kind, bundled):
    """The rule, written out independently of the implementation (None: refused)."""
    server = bool(base_url or model)
    if teacher is not None:
        return None if teacher == "sim" and server else teacher
    if recipe_kind is not None:
        return None if recipe_kind == "sim" and server else recipe_kind
    if server:
        return "openai"
    return "sim" if bundled else "openai"


@pytest.mark.parametrize("teacher,base_url,model,recipe_kind,bundled", COMBOS)
def test_every_flag_combination(teacher, base_url, model, recipe_kind, bundled) -> None:
    want = expected(teacher, base_url, model, recipe_kind, bundled)
    if want is None:
        with pytest.raises(ValueError, match="sim"):
            choose_teacher(teacher, base_url, model, recipe_kind, bundled)
        return
    got = choose_teacher(teacher, base_url, model, recipe_kind, bundled)
    assert got.kind == want and got.why
    if base_url or model:
        assert got.kind != "sim"  # the point of the rule
    if got.kind == "sim":
        assert bundled or teacher == "sim" or recipe_kind == "sim"


def test_table_covers_all_combinations() -> None:
    assert len(COMBOS) == 4 * 2 * 2 * 4 * 2


@pytest.mark.parametrize("bad", ["vlm", "gpt", ""])
def test_unknown_kind_is_one_line(bad: str) -> None:
    with pytest.raises(ValueError, match=r"expected one of openai, sim, vllm"):
        choose_teacher(bad, None, None, None, True)
    with pytest.raises(ValueError, match=r"teacher.kind"):
        choose_teacher(None, None, None, bad, True)


def test_recipe_kind_is_read_after_set_overrides() -> None:
    assert recipe_teacher_kind({"teacher": {"model": "m"}}, []) is None
    assert recipe_teacher_kind({"teacher": {"kind": "vllm"}}, []) == "vllm"
    assert recipe_teacher_kind({}, ["teacher.kind=openai"]) == "openai"


@pytest.mark.parametrize("command", ["generate", "eval"])
def test_base_url_and_model_reach_the_server_not_the_sim(command: str, tmp_path: Path) -> None:
    with refused_url() as dead:
        res = runner.invoke(app, [command, "--task", "sat2", "--base-url", dead, "--model", "qwen-vl", "--limit", "1",
                                  "--out", str(tmp_path / "r"), "--no-progress"])
    assert res.exit_code == 2, res.output
    assert f"cannot reach teacher at {dead}" in res.output
    assert "sim" not in res.output.split("error:")[0]  # the first lines name the openai teacher


def test_demo_uses_the_same_rule(tmp_path: Path) -> None:
    with refused_url() as dead:
        res = runner.invoke(app, ["demo", "--image", str(IMAGE), "--query", "Where is the chair?", "--model", "qwen-vl",
                                  "--base-url", dead, "--out", str(tmp_path)])
    assert res.exit_code == 2 and "cannot reach teacher" in res.output
    res = runner.invoke(app, ["demo", "--image", str(IMAGE), "--query", "q", "--teacher", "sim", "--model", "m"])
    assert res.exit_code == 2 and "--teacher sim" in res.output


@pytest.mark.parametrize("command", ["generate", "eval"])
def test_teacher_vlm_errors_before_printing_anything(command: str, tmp_path: Path) -> None:
    res = runner.invoke(app, [command, "--teacher", "vlm", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == ["error: --teacher 'vlm': expected one of openai, sim, vllm"]


def test_a_recipe_naming_sim_with_a_server_is_refused(tmp_path: Path) -> None:
    res = runner.invoke(app, ["generate", "--set", "teacher.kind=sim", "--base-url", DEAD, "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "pass --teacher openai" in res.output


@pytest.mark.parametrize("command", ["generate", "eval"])
def test_vllm_without_vllm_is_one_line_before_any_teacher_line(command: str, tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    res = runner.invoke(app, [command, "--teacher", "vllm", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "vllm" in lines[0]
