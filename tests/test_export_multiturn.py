"""Multi-turn export: chains as turns, SFT rows whose images match their placeholders (order checked by the
bytes of the run's crop files), GRPO rows with the environment's settings, the mode switch and its refusals,
the report's crops — on a hand-built run and on a real sim run through the CLI."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from mcts_engine.cli import app
from mcts_engine.export.config import ExportConfig, ExportError
from mcts_engine.export.linearize import Linearizer
from mcts_engine.export.protocol_rows import row_multiturn
from mcts_engine.export.report import build_report
from mcts_engine.export.rows import observation_parts
from mcts_engine.export.run import export_run
from mcts_engine.grounding import IMAGE_MARKER, parse_step
from mcts_engine.search.tree import Tree
from mcts_engine.tasks import get_task
from mcts_engine.testing.synthetic_runs import MT_EXTRA, MT_SETTINGS, answer, make_image, make_run, mt_think, mt_tree
from mcts_engine.zoom.environment import TOOL_NAME

ALL = "best,all_correct,backtrack"


@pytest.fixture(scope="module")
def mt_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("mt")
    run_dir = tmp / "run"
    trees = [mt_tree(f"s{i}", run_dir, make_image(tmp / "data" / f"img{i}.png", seed=i)) for i in range(3)]
    return make_run(tmp, trees, data=str(tmp / "data" / "x.jsonl"), extra=MT_EXTRA)


def _sha(b: bytes) -> str:
    return hashlib.sha1(b).hexdigest()


def _crop_files(run: Path) -> dict[str, dict[str, Any]]:
    """Every observation in the run's trees by (sample id, point): its record."""
    out = {}
    for line in (run / "trees.jsonl").read_text().splitlines():
        tree = Tree.from_dict(json.loads(line))
        for n in tree.nodes:
            if n.observation:
                out[(tree.sample_id, tuple(n.observation["point"]))] = n.observation
    return out


def check_sft_row(row: dict[str, Any], run: Path, crops: dict, parts: bool = True) -> None:
    """The invariants every multi-turn SFT row keeps (TRL parts or sharegpt strings)."""
    msgs, images = row["messages"], row["images"]
    roles = [m["role"] for m in msgs]
    assert roles[:2] == ["system", "user"] and roles[-1] == "assistant"
    assert roles[2:] == ["assistant", "user"] * ((len(roles) - 3) // 2) + ["assistant"], roles
    assert row["n_turns"] == (len(roles) - 2 + 1) // 2
    # placeholders == images, and each observation's crop is the image at its placeholder's position
    slots: list[str | None] = []  # per placeholder: the observation text it belongs to (None: the question image)
    for i, m in enumerate(msgs):
        if parts:
            n_img = sum(1 for p in m["content"] if p["type"] == "image")
            text = "".join(p["text"] or "" for p in m["content"] if p["type"] == "text")
            if m["role"] == "user" and i > 1:  # an observation: its text around one image part
                assert [p["type"] for p in m["content"]] == ["text", "image", "text"]
        else:
            n_img = m["content"].count(IMAGE_MARKER)
            text = m["content"].replace(IMAGE_MARKER, "")
        if m["role"] == "assistant":
            assert n_img == 0
        slots += [None if i == 1 else text] * n_img
    assert len(slots) == len(images)
    assert slots[0] is None and all(s is not None for s in slots[1:])
    points = [tuple(map(int, re.search(r"\((\d+), (\d+)\)", s).groups())) for s in slots[1:]]  # type: ignore[union-attr]
    assert [list(p) for p in points] == row["points"]
    for img, p in zip(images[1:], points):
        rec = crops[(row["id"], p)]
        assert _sha(img["bytes"]) == _sha((run / rec["image"]["file"]).read_bytes())
    assert row["crop_boxes"] == [list(crops[(row["id"], p)]["box"]) for p in points]
    # every assistant turn but the last is a step whose tool call names the zoom that follows
    assistants = [m for m in msgs if m["role"] == "assistant"]
    for m, p in zip(assistants, points):
        text = m["content"][0]["text"] if parts else m["content"]
        call = parse_step(text).tool_call
        assert call is not None and call.name == TOOL_NAME and call.point == p
    last = assistants[-1]["content"][0]["text"] if parts else assistants[-1]["content"]
    assert last == f"<answer> {row['answer']} </answer>"
    settings = {k: v for k, v in MT_SETTINGS.items() if k != "enabled"}
    assert row["multiturn"] == {**settings, "max_turns": 5, **row_multiturn({})}  # + the protocol keys at defaults


# --------------------------------------------------------------------------------------------
# Linearization
# --------------------------------------------------------------------------------------------


def test_multiturn_chains_keep_turns_tool_calls_and_crops(mt_run: Path) -> None:
    tree = Tree.from_dict(json.loads((mt_run / "trees.jsonl").read_text().splitlines()[0]))
    lin = Linearizer(tree, ExportConfig(strategies=ALL), multiturn=True,
                     backtrack_sentence="Wait, this does not look right.")
    chains = lin.mt_sft_chains()
    assert [c.strategy for c in chains] == ["best", "all_correct", "backtrack"]
    best, other, back = chains
    by_point = {n.point: n for n in tree.nodes if n.kind == "think"}
    assert best.points == ((50, 40), (120, 80)) and best.answer == "left"
    assert [t.text for t in best.turns[:-1]] == [by_point[p].text for p in best.points]  # verbatim, tool call kept
    assert best.turns[-1].text == "<answer> left </answer>" and best.turns[-1].observation is None
    assert [o["point"] for o in best.observations] == [[50, 40], [120, 80]]
    assert other.points == ((30, 170),)
    # backtrack: the wrong path A→C (its crops), then B after the divergence, the sentence opening B's <think>
    assert back.points == ((50, 40), (200, 150), (120, 80)) and back.wrong_leaf is not None
    assert back.turns[2].text.startswith("<think> Wait, this does not look right. I zoom on region 120-80")
    assert parse_step(back.turns[2].text).tool_call.point == (120, 80)  # type: ignore[union-attr]
    assert back.turns[2].observation == by_point[(120, 80)].observation
    # the single-turn linearizer of the same tree is untouched
    st = Linearizer(tree, ExportConfig(strategies="best")).sft_chains()
    assert st[0].text.startswith("<think>\nI zoom on region 50-40") and "<tool_call>" not in st[0].text


def test_steps_without_a_usable_observation_invalidate_their_paths(tmp_path: Path) -> None:
    src = make_image(tmp_path / "a.png")
    tree = mt_tree("x", tmp_path / "run", src)
    img = Image.open(tmp_path / "run" / tree.images[0]["file"]).convert("RGB")
    bare = mt_think(tree, tree.root, 150, 100, tmp_path / "run", img, visits=1, value=1.0, observe=False)
    answer(tree, bare, "left", True)
    lied = mt_think(tree, tree.root, 160, 100, tmp_path / "run", img, visits=1, value=1.0)
    lied.text = lied.text.replace("[160, 100]", "[161, 100]")
    answer(tree, lied, "left", True)
    lin = Linearizer(tree, ExportConfig(strategies=ALL, max_correct_per_sample=10), multiturn=True)
    chains = lin.mt_sft_chains()
    assert all((150, 100) not in c.points and (160, 100) not in c.points for c in chains)
    assert lin.skips.counts["path invalid: step has no observation"] == 1
    assert lin.skips.counts["path invalid: tool call does not name the step's point"] == 1
    # a correct path that answers at the divergence cannot carry the backtrack sentence
    t2 = Tree(sample_id="y", task="sat2", frame=tree.frame, truth=dict(tree.truth))
    a = mt_think(t2, t2.root, 50, 40, tmp_path / "run", img, visits=2, value=1.0)
    answer(t2, a, "left", True)  # root → A → left ✓
    answer(t2, mt_think(t2, a, 200, 150, tmp_path / "run", img), "right", False)  # root → A → C → right ✗
    lin2 = Linearizer(t2, ExportConfig(strategies="backtrack"), multiturn=True)
    assert lin2.mt_sft_chains() == []
    assert any("answers at the divergence" in k for k in lin2.skips.counts)


def test_answer_turn_keeps_a_grounded_final_thought(tmp_path: Path) -> None:
    tree = mt_tree("z", tmp_path / "run", make_image(tmp_path / "a.png"))
    leaf = tree.nodes[3]  # A → B → left ✓
    leaf.thought, leaf.text = "The cup is at (121, 82).", "<think> The cup is at (121, 82). </think>\n<answer> left </answer>"
    best = Linearizer(tree, ExportConfig(strategies="best"), multiturn=True).mt_sft_chains()[0]
    assert best.turns[-1].text == "<think> The cup is at (121, 82). </think>\n<answer> left </answer>"
    assert best.points == ((50, 40), (120, 80))  # zoom points only


def test_observation_parts_split_at_the_marker() -> None:
    assert observation_parts("<observation>\nZoom:\n<image>\n</observation>") == [
        {"type": "text", "text": "<observation>\nZoom:\n"}, {"type": "image", "text": None},
        {"type": "text", "text": "\n</observation>"}]
    assert observation_parts("no marker") == [{"type": "image", "text": None}, {"type": "text", "text": "no marker"}]


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def test_sft_and_grpo_rows(mt_run: Path, tmp_path: Path) -> None:
    from datasets import load_dataset

    res = export_run(mt_run, tmp_path / "o", kinds=["sft", "grpo"], cfg=ExportConfig(strategies=ALL, val_fraction=0.0))
    assert res.mode == "multiturn" and res.multiturn["max_turns"] == 5
    summary = json.loads((tmp_path / "o" / "export_summary.json").read_text())
    assert summary["mode"] == "multiturn" and summary["multiturn"]["crop_offset"] == 40
    assert res.strategies == {"best": 3, "all_correct": 3, "backtrack": 3}
    crops = _crop_files(mt_run)
    rows = pq.read_table(tmp_path / "o" / "sft_train.parquet").to_pylist()
    assert len(rows) == 9 and res.crop_images == sum(len(r["points"]) for r in rows) == 3 * (2 + 1 + 3)
    for row in rows:
        check_sft_row(row, mt_run, crops)
    # datasets decodes every image; the first is the frame, the rest are crops
    ds = load_dataset("parquet", data_files=str(tmp_path / "o" / "sft_train.parquet"), split="train")
    assert [im.size for im in ds[0]["images"]] == [(308, 196), (112, 112), (112, 112)]
    grpo = pq.read_table(tmp_path / "o" / "grpo_train.parquet").to_pylist()
    assert len(grpo) == 3
    system = get_task("sat2").student_system(multiturn=True)
    for g in grpo:
        assert g["prompt"][0]["content"][0]["text"] == system and "<tool_call>" in system
        assert [p["type"] for p in g["prompt"][1]["content"]] == ["image", "text"] and len(g["images"]) == 1
        assert g["multiturn"] == {"max_turns": 5, "crop_offset": 40, "crop_size": 112, "draw_dot": True, "dot_radius": 3,
                                      **row_multiturn({})}
        assert json.loads(g["ground_truth"])["answer"] == "left" and g["reward_model"]["style"] == "rule"


def test_llamafactory_and_jsonl(mt_run: Path, tmp_path: Path) -> None:
    crops = _crop_files(mt_run)
    export_run(mt_run, tmp_path / "lf", kinds=["sft"], flavor="llamafactory", cfg=ExportConfig(strategies=ALL, val_fraction=0.0))
    rows = pq.read_table(tmp_path / "lf" / "sft_train.parquet").to_pylist()
    assert rows and all(isinstance(m["content"], str) for r in rows for m in r["messages"])
    for row in rows:
        check_sft_row(row, mt_run, crops, parts=False)
    assert "mcts_sft_train" in json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    export_run(mt_run, tmp_path / "j", kinds=["sft"], fmt="jsonl", cfg=ExportConfig(strategies="best", val_fraction=0.0))
    for line in (tmp_path / "j" / "sft_train.jsonl").read_text().splitlines():
        row = json.loads(line)
        row["images"] = [{"bytes": (tmp_path / "j" / p).read_bytes()} for p in row["images"]]
        check_sft_row(row, mt_run, crops)


def test_mode_switch_and_refusals(mt_run: Path, tmp_path: Path) -> None:
    cfg = ExportConfig(strategies="best", val_fraction=0.0)
    single = export_run(mt_run, tmp_path / "s", kinds=["sft", "dpo"], cfg=cfg, mode="single")
    assert single.mode == "single" and single.rows["sft_train.parquet"] == 3
    row = pq.read_table(tmp_path / "s" / "sft_train.parquet").to_pylist()[0]
    assert "multiturn" not in row and len(row["images"]) == 1
    for kwargs, msg in (
        (dict(kinds=["dpo"]), "--kind dpo"),
        (dict(kinds=["grpo"], flavor="verl"), "--flavor verl"),
        (dict(kinds=["grpo"], flavor="easyr1"), "--flavor easyr1"),
        (dict(kinds=["sft"], cfg=ExportConfig(rescale_to_original=True)), "rescale_to_original"),
        (dict(kinds=["sft"], mode="sideways"), "--mode 'sideways'"),
    ):
        with pytest.raises(ExportError, match=re.escape(msg)):
            export_run(mt_run, tmp_path / "x", **{"cfg": cfg, **kwargs})  # type: ignore[arg-type]
    plain = make_run(tmp_path / "plain", [])
    with pytest.raises(ExportError, match="not multi-turn"):
        export_run(plain, tmp_path / "y", kinds=["sft"], cfg=cfg, mode="multiturn")


def test_missing_crop_skips_the_sample(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    trees = [mt_tree(f"s{i}", run_dir, make_image(tmp_path / "data" / f"i{i}.png", seed=i)) for i in range(2)]
    gone = trees[1].nodes[2].observation["image"]["file"]  # B's crop, on the best path of s1
    run = make_run(tmp_path, trees, extra=MT_EXTRA)
    (run / gone).unlink()
    res = export_run(run, tmp_path / "o", kinds=["sft", "grpo"], cfg=ExportConfig(val_fraction=0.0))
    assert any(s["id"] == "s1" and "crop image missing" in s["reason"] for s in res.skipped_records)
    assert res.samples_exported == 1


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def test_report_shows_each_crop_beside_the_full_image(mt_run: Path, tmp_path: Path) -> None:
    from mcts_engine.export.report import read_page_data

    res = build_report(mt_run, tmp_path / "r.html", limit=1)
    html = (tmp_path / "r.html").read_text()
    assert res.samples_shown == 1 and "http" not in html.replace("http-equiv", "")
    _, cards = read_page_data(html)
    (card,) = cards.values()
    turns = card["turns"]
    assert len(turns) == 2  # two zooms of the best path; the answer turn follows them
    tree = Tree.from_dict(json.loads((mt_run / "trees.jsonl").read_text().splitlines()[0]))
    for turn, nid in zip(turns, (1, 2)):
        shown = Image.open(io.BytesIO(base64.b64decode(turn["crop"].split(",", 1)[1]))).convert("RGB")
        obs = tree.nodes[nid].observation
        stored = Image.open(mt_run / obs["image"]["file"]).convert("RGB")
        assert shown.size == stored.size
        diff = sum(abs(a - b) for a, b in zip(shown.tobytes(), stored.tobytes())) / len(stored.tobytes())
        assert diff < 8  # the same crop (JPEG in the page)
        assert "search_coordinate" in turn["text"] and turn["p"] == list(obs["point"]) and turn["box"] == obs["box"]
    assert "<answer> left </answer>" in card["last"]


# --------------------------------------------------------------------------------------------
# A real multi-turn search (sim teacher) through the CLI
# --------------------------------------------------------------------------------------------


def test_sim_multiturn_run_through_the_cli(tmp_path: Path) -> None:
    r = CliRunner()
    run = tmp_path / "mt"
    gen = r.invoke(app, ["generate", "--recipe", "vstar_multiturn", "--limit", "2", "--out", str(run), "--no-progress"])
    assert gen.exit_code == 0, gen.output
    ok = r.invoke(app, ["export", "--run", str(run), "--out", str(tmp_path / "e"), "--val-fraction", "0",
                        "--strategy", ALL])
    assert ok.exit_code == 0, ok.output
    assert "multi-turn rows" in ok.output and "grpo_train.parquet" in ok.output and "dpo" not in ok.output
    crops = _crop_files(run)
    rows = pq.read_table(tmp_path / "e" / "sft_train.parquet").to_pylist()
    assert rows
    for row in rows:
        cfg = json.loads((run / "config.json").read_text())["config"]
        assert row["multiturn"]["crop_size"] == cfg["multiturn"]["crop_size"] == 672
        assert row["multiturn"]["max_turns"] == cfg["search"]["max_depth"]
        MT = {k: v for k, v in cfg["multiturn"].items() if k != "enabled"}
        assert {k: row["multiturn"][k] for k in MT} == MT
        _check_sim_row(row, run, crops)
    bad = r.invoke(app, ["export", "--run", str(run), "--out", str(tmp_path / "v"), "--flavor", "verl"])
    assert bad.exit_code == 2 and "--mode single" in bad.output
    single = r.invoke(app, ["export", "--run", str(run), "--out", str(tmp_path / "s"), "--mode", "single", "--kind", "dpo"])
    assert single.exit_code == 0, single.output
    rep = r.invoke(app, ["report", "--run", str(run), "--out", str(tmp_path / "r.html"), "--limit", "1"])
    assert rep.exit_code == 0, rep.output
    from mcts_engine.export.report import read_page_data

    _, cards = read_page_data((tmp_path / "r.html").read_text())
    assert any(c.get("turns") and all(t["crop"] for t in c["turns"]) for c in cards.values())


def _check_sim_row(row: dict[str, Any], run: Path, crops: dict) -> None:
    """``check_sft_row`` for a sim run (its own crop settings)."""
    msgs, images = row["messages"], row["images"]
    n_parts = sum(1 for m in msgs for p in m["content"] if p["type"] == "image")
    assert n_parts == len(images) == 1 + len(row["points"])
    obs_msgs = [m for m in msgs[2:] if m["role"] == "user"]
    assert len(obs_msgs) == len(row["points"])
    for m, img, p in zip(obs_msgs, images[1:], row["points"]):
        rec = crops[(row["id"], tuple(p))]
        assert f"({p[0]}, {p[1]})" in m["content"][0]["text"]
        assert _sha(img["bytes"]) == _sha((run / rec["image"]["file"]).read_bytes())
    assert [m["role"] for m in msgs[2:]] == ["assistant", "user"] * len(row["points"]) + ["assistant"]
