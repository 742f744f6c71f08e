"""The presets against an in-test server that checks every request (system message, observation turn, crop size,
image cap) and speaks the released multi-turn protocol (tool calls, crops, a pre-filled final answer)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from PIL import Image
from typer.testing import CliRunner

from mcts_engine.cli import app
from mcts_engine.frame import capped_frame
from mcts_engine.testing.stub_server import StubServer, image_size
from mcts_engine.zoom.environment import format_tool_call

runner = CliRunner()
OBS = "<observation>\nLook at ({x}, {y}) here:<image>\n</observation>"


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def vstar_data(root: Path) -> Path:
    """Two V* items in the released layout, images under DATA_ROOT/visual_search/vstar/<category>/."""
    for cat, name in (("direct_attributes", "a.jpg"), ("relative_position", "b.jpg")):
        p = root / "visual_search" / "vstar" / cat / name
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (2000, 1500), (40, 90, 160)).save(p, quality=90)
    return write_jsonl(root / "visual_search" / "vstar" / "vstarbench_test.jsonl", [
        {"id": "v1", "image": "visual_search/vstar/direct_attributes/a.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is the color of the cup?\n(A) red\n(B) blue"},
            {"from": "gpt", "value": "blue"}]},
        {"id": "v2", "image": "visual_search/vstar/relative_position/b.jpg", "conversations": [
            {"from": "human", "value": "<image>\nIs the dog left or right of the car?\n(A) left\n(B) right"},
            {"from": "gpt", "value": "B"}]},
    ])


def image_parts(msg: dict) -> list[dict]:
    return [p for p in msg["content"] if isinstance(msg["content"], list) and p.get("type") == "image_url"]


def released_protocol(body: dict, i: int, rng: Any) -> str:
    """Two zooms, then the forced last turn continues the pre-filled answer ("blue" for every item)."""
    last = body["messages"][-1]
    if last["role"] == "assistant" and str(last["content"]).endswith("<answer>"):
        return " blue </answer>"
    turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
    point = (30, 40) if turn == 0 else (990, 700)
    return f"<think> Look near the object ({point[0]}, {point[1]}). </think>\n{format_tool_call(point)}"


def check_multiturn_requests(bodies: list[dict], system: str | None, crop: tuple[int, int], template: str,
                             max_side: int) -> int:
    """Asserts on every request; returns the number of observation turns seen."""
    seen = 0
    for b in bodies:
        msgs = b["messages"]
        if system is None:
            assert all(m["role"] != "system" for m in msgs), msgs[0]
        else:
            assert msgs[0] == {"role": "system", "content": system}
        head = 0 if system is None else 1
        first = msgs[head]
        assert first["role"] == "user"
        frame = image_size(image_parts(first)[0]["image_url"]["url"])
        assert frame is not None and max(frame) <= max_side and frame[0] % 28 == 0
        for m in msgs[head + 1:]:
            if m["role"] != "user" or not isinstance(m["content"], list):
                continue
            texts = [p["text"] for p in m["content"] if p["type"] == "text"]
            imgs = image_parts(m)
            assert len(imgs) == 1 and image_size(imgs[0]["image_url"]["url"]) == crop
            point = re.search(r"\((\d+), (\d+)\)", texts[0])
            assert point is not None
            x, y = point.groups()
            want = template.replace("{x}", x).replace("{y}", y).split("<image>")
            assert texts == [t for t in want if t.strip()]
            seen += 1
    return seen


def test_eval_vstar_vigorl_end_to_end(tmp_path: Path) -> None:
    data = vstar_data(tmp_path / "DATA")
    obs = tmp_path / "obs.txt"
    obs.write_text(OBS)
    out = tmp_path / "ev"
    with StubServer(keep_bodies=True, replies=released_protocol, models=("gsarch/ViGoRL-Multiturn-7b-Visual-Search",)) as server:
        res = cli("eval", "--task", "vstar", "--protocol", "vigorl", "--data", str(data), "--base-url", server.url,
                  "--model", "gsarch/ViGoRL-Multiturn-7b-Visual-Search", "--out", str(out), "--no-progress",
                  "--set", f"multiturn.observation_text=@{obs}", "--max-turns", "3")
        assert res.exit_code == 0, res.output
        bodies = [r["body"] for r in server.stats.records]
    assert len(bodies) == 2 * 3  # per item: two zoom turns, then the forced answer turn
    assert check_multiturn_requests(bodies, None, (672, 672), OBS, 3600) == 2 * (1 + 2)
    assert all(b["max_tokens"] == 2048 for b in bodies)  # the preset's budget of one turn
    finals = [b for b in bodies if b.get("continue_final_message")]
    assert len(finals) == 2 and all(re.fullmatch(r"<think> .+ </think>\n<answer>", b["messages"][-1]["content"]) for b in finals)
    recs = {r["sample_id"]: r for r in lines(out / "trees.jsonl")}
    assert recs["v1"]["groups"] == {"category": "direct_attributes"} and recs["v1"]["prompt"]["system"] is None
    o1, o2 = (recs[k]["variants"][0]["outputs"][0] for k in ("v1", "v2"))
    assert o1["correct"] and o1["answer"] == "blue" and o1["end"] == "answer" and len(o1["turns"]) == 3
    assert not o2["correct"] and o2["answer"] == "blue"  # truth "B" became the option text "right"
    assert recs["v2"]["variants"][0]["truth"]["answer"] == "right"
    s = json.loads((out / "summary.json").read_text())
    assert s["overall"]["mean"] == 0.5 and s["items"] == 2
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["prompt"] == {"system_prompt": "model", "user_text": "question", "protocol": "vigorl"}
    assert cfg["multiturn"]["crop_shape"] == "square" and cfg["multiturn"]["observation_text"] == OBS  # the file's text, not its path


def test_eval_system_prompt_file_is_sent_exactly(tmp_path: Path) -> None:
    data = vstar_data(tmp_path / "DATA")
    prompt = tmp_path / "system.txt"
    prompt.write_text("You zoom, then answer.\n  Exactly this text.\n")
    with StubServer(keep_bodies=True, replies=released_protocol) as server:
        res = cli("eval", "--task", "vstar", "--protocol", "vigorl", "--data", str(data), "--base-url", server.url,
                  "--model", "stub-model", "--out", str(tmp_path / "ev"), "--no-progress", "--limit", "1",
                  "--system-prompt", f"@{prompt}", "--max-turns", "2")
        assert res.exit_code == 0, res.output
        bodies = [r["body"] for r in server.stats.records]
    assert bodies and all(b["messages"][0] == {"role": "system", "content": prompt.read_text()} for b in bodies)
    bad = cli("eval", "--task", "vstar", "--protocol", "vigorl", "--data", str(data), "--base-url", server.url,
              "--model", "stub-model", "--out", str(tmp_path / "ev2"), "--no-progress", "--system-prompt", "@/no/such/file")
    assert bad.exit_code != 0 and "system_prompt: cannot read /no/such/file" in bad.output


def test_eval_screenspot_vigorl_crops_with_a_region_dot(tmp_path: Path) -> None:
    root = tmp_path / "DATA"
    shot = root / "web_grounding" / "ScreenSpot-Pro" / "images" / "s.png"
    shot.parent.mkdir(parents=True)
    Image.new("RGB", (1920, 1080), (255, 255, 255)).save(shot)
    data = write_jsonl(root / "web_grounding" / "ScreenSpot-Pro" / "screenspot_pro_test.jsonl", [
        {"id": "p1", "image": "web_grounding/ScreenSpot-Pro/images/s.png", "conversations": [
            {"from": "human", "value": "<image>the save button"}, {"from": "gpt", "value": "(900, 500, 1000, 560)"}]},
    ])
    crops: list[str] = []

    def replies(body: dict, i: int, rng: Any) -> str:
        msgs = body["messages"]
        for m in msgs[1:]:
            if m["role"] == "user":
                crops.extend(p["image_url"]["url"] for p in image_parts(m))
        if sum(1 for m in msgs if m["role"] == "assistant") == 0:
            return f"<think> The toolbar (950, 530). </think>\n{format_tool_call((950, 530))}"
        return "<think> It is the save icon. </think>\n<answer> (950, 530) </answer>"

    out = tmp_path / "ev"
    with StubServer(keep_bodies=True, replies=replies) as server:
        res = cli("eval", "--task", "screenspot", "--protocol", "vigorl", "--data", str(data), "--base-url", server.url,
                  "--model", "stub-model", "--out", str(out), "--no-progress")
        assert res.exit_code == 0, res.output
        bodies = [r["body"] for r in server.stats.records]
    assert len(bodies) == 2 and all(all(m["role"] != "system" for m in b["messages"]) for b in bodies)
    first_user = bodies[0]["messages"][0]["content"]
    assert [p["text"] for p in first_user if p["type"] == "text"] == ["the save button"]  # the query as written
    assert check_multiturn_requests(bodies[1:], None, (504, 504), build_template(out), 3600) == 1
    import base64
    import io

    crop = Image.open(io.BytesIO(base64.b64decode(crops[0].split(",", 1)[1]))).convert("RGB")
    r, g, b = crop.getpixel((252, 252))  # the point is the region's centre: a red dot, scaled with the zoom
    assert r > 200 and g < 80 and b < 80
    assert crop.getpixel((252 + 12, 252))[1] < 80  # radius 7 region px ≈ 17 crop px: still red 12 px away
    o = lines(out / "trees.jsonl")[0]["variants"][0]["outputs"][0]
    assert o["correct"] and o["answer"] == "(950, 530)"


def build_template(out: Path) -> str:
    return json.loads((out / "config.json").read_text())["config"]["multiturn"]["observation_text"]


def test_eval_sat2_vigorl_caps_the_longer_side(tmp_path: Path) -> None:
    root = tmp_path / "DATA"
    img = root / "spatial_reasoning" / "sat2_test" / "images" / "a.png"
    img.parent.mkdir(parents=True)
    Image.new("RGB", (2520, 1260), (10, 20, 30)).save(img)
    data = write_jsonl(root / "spatial_reasoning" / "sat2_test" / "sat2_test.jsonl", [
        {"id": "s1", "image": "spatial_reasoning/sat2_test/images/a.png", "conversations": [
            {"from": "human", "value": "<image>Which side is the door on? Answer choices: ['left', 'right']"},
            {"from": "gpt", "value": "left"}]},
    ])
    reply = "<think> The door frame is at (100, 300). </think>\n<answer> left </answer>"
    out = tmp_path / "ev"
    with StubServer(keep_bodies=True, replies=lambda b, i, r: reply) as server:
        res = cli("eval", "--task", "sat2", "--protocol", "vigorl", "--data", str(data), "--base-url", server.url,
                  "--model", "stub-model", "--out", str(out), "--no-progress")
        assert res.exit_code == 0, res.output
        bodies = [r["body"] for r in server.stats.records]
    assert len(bodies) == 1  # the query as written fixes its option order: no circular rotations
    want = capped_frame(2520, 1260, 1260, 12_845_056, 56 * 56)
    assert max(want.width, want.height) <= 1260 + 14
    for b in bodies:
        assert [m["role"] for m in b["messages"]] == ["user"]
        size = image_size(image_parts(b["messages"][0])[0]["image_url"]["url"])
        assert size == (want.width, want.height)  # 2520x1260 → 1260x630 → Qwen's rule: at most 1260 + 14 wide
        assert b["stop"] == ["</answer>"]
    texts = [[p["text"] for p in b["messages"][0]["content"] if p["type"] == "text"][0] for b in bodies]
    assert texts[0] == "Which side is the door on? Answer choices: ['left', 'right']"
    rec = lines(out / "trees.jsonl")[0]
    assert rec["frame"]["orig_width"] == 2520 and (rec["frame"]["width"], rec["frame"]["height"]) == (want.width, want.height)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["mean"] == 1.0 and summary["circular"] is False
    bad = cli("eval", "--task", "sat2", "--protocol", "vigorl", "--data", str(data), "--base-url", server.url,
              "--model", "stub-model", "--out", str(tmp_path / "ev2"), "--no-progress", "--circular")
    assert bad.exit_code != 0 and "--circular: needs user_text: task" in bad.output


def test_demo_vigorl_sends_no_system_message(tmp_path: Path) -> None:
    img = tmp_path / "p.png"
    Image.new("RGB", (900, 700), (200, 200, 200)).save(img)
    with StubServer(keep_bodies=True, replies=released_protocol) as server:
        res = cli("demo", "--image", str(img), "--query", "What color is the cup?", "--choices", "red|blue",
                  "--protocol", "vigorl", "--base-url", server.url, "--model", "stub-model", "--out", str(tmp_path / "d.html"),
                  "--max-turns", "2", "--quiet")
        assert res.exit_code == 0, res.output
        bodies = [r["body"] for r in server.stats.records]
    assert len(bodies) == 2 and all(m["role"] != "system" for b in bodies for m in b["messages"])
    page = (tmp_path / "d.html").read_text()
    assert "chat template applies its default" in page


def test_generate_teacher_prompt_file_and_protocol_observations(tmp_path: Path) -> None:
    data = vstar_data(tmp_path / "DATA")
    teacher = tmp_path / "teacher.txt"
    teacher.write_text("Teacher instructions, verbatim.")
    final = tmp_path / "final.txt"
    final.write_text("Seen enough.")
    run = tmp_path / "run"
    with StubServer(keep_bodies=True, replies=released_protocol) as server:
        res = cli("generate", "--task", "vstar", "--protocol", "vigorl", "--data", str(data), "--base-url", server.url,
                  "--model", "stub-model", "--out", str(run), "--no-progress", "--limit", "1",
                  "--set", f"teacher.system_prompt=@{teacher}", "--set", "search.simulations=1", "--set", "search.children=1",
                  "--set", "search.rollouts=1", "--set", "teacher.max_pixels=1003520", "--set", "search.max_depth=3",
                  "--set", f"multiturn.final_think=@{final}")
        assert res.exit_code == 0, res.output
        bodies = [r["body"] for r in server.stats.records]
    assert bodies and all(b["messages"][0] == {"role": "system", "content": "Teacher instructions, verbatim."} for b in bodies)
    template = json.loads((run / "config.json").read_text())["config"]["multiturn"]["observation_text"]
    assert "{x}" in template and not template.startswith("@")
    assert json.loads((run / "config.json").read_text())["config"]["multiturn"]["final_think"] == "Seen enough."
    forced = [b for b in bodies if b.get("continue_final_message") and b["messages"][-1]["content"].endswith("<answer>")]
    assert forced and all(b["messages"][-1]["content"].endswith("<think> Seen enough. </think>\n<answer>") for b in forced)
    assert check_multiturn_requests(bodies, "Teacher instructions, verbatim.", (672, 672), template, 1200) >= 1
    # export in the protocol: no system message, the protocol's observation text, crops cut again (here: a
    # different geometry from the run's), and the multiturn column carrying the keys a GRPO rollout needs
    obs = tmp_path / "obs.txt"
    obs.write_text(OBS)
    ex = tmp_path / "ex"
    res = cli("export", "--run", str(run), "--out", str(ex), "--val-fraction", "0", "--protocol", "vigorl",
              "--set", f"multiturn.observation_text=@{obs}", "--set", "multiturn.crop_size=448", "--quiet")
    assert res.exit_code == 0, res.output
    sft = pq.read_table(ex / "sft_train.parquet").to_pylist()
    grpo = pq.read_table(ex / "grpo_train.parquet").to_pylist()
    assert sft and grpo
    for row in sft:
        assert row["messages"][0]["role"] == "user"
        observations = [m for m in row["messages"][1:] if m["role"] == "user"]
        assert observations and all(m["content"][0]["text"].startswith("<observation>\nLook at (") for m in observations)
        assert [im["bytes"] is not None for im in row["images"]] and len(row["images"]) == 1 + len(observations)
        from io import BytesIO

        assert all(Image.open(BytesIO(im["bytes"])).size == (448, 448) for im in row["images"][1:])
        assert row["multiturn"]["observation_text"] == OBS and row["multiturn"]["crop_shape"] == "square"
    for row in grpo:
        assert [m["role"] for m in row["prompt"]] == ["user"] and row["multiturn"]["crop_size"] == 448
    # only the system message changes: the run's own observations and crops are kept as they were
    ex2 = tmp_path / "ex2"
    res = cli("export", "--run", str(run), "--out", str(ex2), "--val-fraction", "0", "--set", "system_prompt=none", "--quiet")
    assert res.exit_code == 0, res.output
    from io import BytesIO

    for row in pq.read_table(ex2 / "sft_train.parquet").to_pylist():
        assert row["messages"][0] == {"role": "system", "content": [{"type": "text", "text": ""}]}
        observations = [m for m in row["messages"][2:] if m["role"] == "user"]
        assert observations
        for m in observations:
            x, y = re.search(r"\((\d+), (\d+)\)", m["content"][0]["text"]).groups()  # type: ignore[union-attr]
            assert m["content"][0]["text"] == template.split("<image>")[0].replace("{x}", x).replace("{y}", y)
        assert all(Image.open(BytesIO(im["bytes"])).size == (672, 672) for im in row["images"][1:])
        assert row["multiturn"]["observation_text"] == template and row["multiturn"]["crop_size"] == 672
