"""Multi-turn (zoom) training: SFT masks on multi-image conversations, the rollout loop with the zoom environment
(scripted policy: tool call → crop → answer, malformed call, out of frame, max turns forced), hand-computed rewards,
a GRPO step on the tiny model with observation tokens (text and crop image tokens) never trained, and the CLI path
generate (sim, vstar_multiturn) → export → train sft → train grpo."""

from __future__ import annotations

import contextlib
import json
import re
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from mcts_engine.testing.tiny_model import (
    MT_SYSTEM,
    QUESTION,
    ScriptedGenerate,
    mt_grpo_rows,
    mt_sft_rows,
    observation_user,
    tool_turn,
    write_mt_parquet,
)
from mcts_engine.train.config import RewardWeights, RunArgs, train_config_from_recipe


@pytest.fixture(scope="module")
def processor(tiny):
    from mcts_engine.train.model import load_processor

    return load_processor(str(tiny))


def runs(mask: list[bool]) -> list[tuple[int, int]]:
    """Contiguous [start, end) runs of True."""
    out, start = [], None
    for i, m in enumerate(list(mask) + [False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i))
            start = None
    return out


# --- SFT ------------------------------------------------------------------------------------------


def test_sft_mask_on_a_two_zoom_conversation_is_exactly_the_assistant_turns(processor, tmp_path):
    from mcts_engine.train.data import SFT_REQUIRED, RowSource, SpecialIds, encode_sft_row, scan
    from mcts_engine.train.model import fit_processor_to_frames

    rows = mt_sft_rows(2)
    src = RowSource(write_mt_parquet(rows, tmp_path / "sft.parquet"), SFT_REQUIRED, "SFT")
    fit_processor_to_frames(processor, [s for sizes in src.image_sizes for s in sizes])
    found = scan(src, processor, 4096, "messages", need_assistant=True)
    assert found.kept == [0, 1] and found.resized == 0  # frame and both crops reach the model unresized
    ids = SpecialIds.from_processor(processor)
    tok = processor.tokenizer
    for i, row in enumerate(rows):
        enc = encode_sft_row(src.row(i), processor, ids, "r")
        mask = enc["target_mask"].tolist()
        assistant = [m["content"][0]["text"] for m in row["messages"] if m["role"] == "assistant"]
        assert len(assistant) == 3  # two tool-call turns + the answer
        got = [tok.decode(enc["input_ids"][a:b].tolist()) for a, b in runs(mask)]
        assert got == [t + "<|im_end|>" for t in assistant]  # every assistant turn, tool calls included
        rest = tok.decode(enc["input_ids"][~enc["target_mask"]].tolist())
        assert MT_SYSTEM in rest and QUESTION in rest
        assert rest.count("<observation>\nZoomed view around") == 2 and "</tool_call>" not in rest
        # images in placeholder order: frame (112x84 → 12 tokens), crop 1 (56x56 → 4), crop 2 (84x56 → 6)
        image = enc["input_ids"] == ids.image
        assert [b - a for a, b in runs(image.tolist())] == [12, 4, 6]
        assert enc["image_grid_thw"].tolist() == [[1, 6, 8], [1, 4, 4], [1, 4, 6]]
        assert torch.equal(enc["mm_token_type_ids"].bool(), image) and not enc["target_mask"][image].any()


# --- the rollout loop with a scripted policy --------------------------------------------------------

FRAME = (112, 84)
PLANS = {
    # tool call → crop → tool call → crop → answer (correct)
    0: [tool_turn((20, 30), "Plan 0: the cup"), tool_turn((70, 40), "Plan 0: the plate"), "<answer> left </answer>"],
    # malformed tool call (the JSON misses a brace): the episode ends there
    1: ['<think> Plan 1: the cup is at (20, 30). </think>\n<tool_call>\n'
        '{"name": "search_coordinate", "arguments": {"coordinate": [20, 30]}\n</tool_call>'],
    # zoom, the same point again, another point, then the forced last turn (pre-filled "<answer>")
    2: [tool_turn((20, 30), "Plan 2: the cup"), tool_turn((20, 30), "Plan 2: again"), tool_turn((90, 10), "Plan 2: b"),
        " left </answer>"],
    # a point outside the 112x84 frame
    3: [tool_turn((500, 10), "Plan 3: far away")],
    # an immediate (wrong) answer
    4: ["<think> Plan 4: no zoom needed. </think>\n<answer> right </answer>"],
    # no stop string, no end token: runs into max_new_tokens (160; the stand-in generate cuts it there), truncated
    5: ["<think> Plan 5: the cup is" + " left of the plate and" * 40],
}
# hand-computed with the default weights (accuracy 1, format .5, grounding .5, distinct .25)
EXPECTED = {
    0: dict(total=2.25, accuracy=1.0, format=1.0, grounding=1.0, distinct=1.0, end="answer", turns=3, zooms=2),
    1: dict(total=0.0, accuracy=0.0, format=0.0, grounding=0.0, distinct=0.0, end="bad_tool_call", turns=1, zooms=0),
    2: dict(total=1 + 0.5 + 0.5 + 0.25 * 2 / 3, accuracy=1.0, format=1.0, grounding=1.0, distinct=2 / 3, end="answer",
            turns=4, zooms=3),
    3: dict(total=0.0, accuracy=0.0, format=0.0, grounding=0.0, distinct=0.0, end="out_of_frame", turns=1, zooms=0),
    4: dict(total=0.5, accuracy=0.0, format=1.0, grounding=0.0, distinct=0.0, end="answer", turns=1, zooms=0),
    5: dict(total=0.0, accuracy=0.0, format=0.0, grounding=0.0, distinct=0.0, end="truncated", turns=1, zooms=0),
}


def turn_text(tok, text: str, limit: int = 160) -> str:
    """What the policy's turn holds once generate stopped at max_new_tokens (the text itself when shorter)."""
    ids = tok.encode(text, add_special_tokens=False)
    return text if len(ids) <= limit else tok.decode(ids[:limit])


def script(context: str, k: int) -> str:
    """The plan is chosen by the sample index on the first turn, then read back from the context."""
    plan = re.findall(r"Plan (\d)", context)
    return PLANS[int(plan[0]) if plan else k][context.count("Zoomed view around")]


@pytest.fixture(scope="module")
def mt_prompts(processor, tmp_path_factory):
    from mcts_engine.train.data import GRPO_REQUIRED, RowSource, frames_of
    from mcts_engine.train.grpo import PromptSet
    from mcts_engine.train.model import fit_processor_to_frames
    from mcts_engine.train.multiturn import crop_frames, row_settings

    path = write_mt_parquet(mt_grpo_rows(2, frame=FRAME), tmp_path_factory.mktemp("mt") / "grpo.parquet")
    src = RowSource(path, GRPO_REQUIRED, "GRPO")
    zoom = row_settings(src, "auto", {}, 0, 0)
    assert set(zoom) == {0, 1} and zoom[0].max_turns == 4 and zoom[0].env.crop_size == 56
    assert crop_frames(src, zoom) == [(56, 56)]
    fit_processor_to_frames(processor, frames_of(src) + crop_frames(src, zoom))
    return path, PromptSet(src, [0, 1], processor, zoom)


def scripted_rollout(processor, prompts, group: int):
    from mcts_engine.train.data import SpecialIds
    from mcts_engine.train.multiturn import ZoomEnvironment
    from mcts_engine.train.rollout import Sampling, rollout

    ids = SpecialIds.from_processor(processor)
    encoded, metas = zip(*(prompts.get(i) for i in (0, 1)))
    env = ZoomEnvironment(processor, ids, [m["zoom"] for m in metas])
    policy = SimpleNamespace(generate=ScriptedGenerate(processor.tokenizer, script))
    eps = rollout(policy, list(encoded), group, Sampling(160, 1.0), ids, processor.tokenizer, torch.device("cpu"),
                  contextlib.nullcontext(), env=env, max_turns=env.max_turns)
    return eps, metas, ids


def test_rollout_loop_zooms_ends_on_bad_calls_and_forces_the_last_turn(processor, mt_prompts):
    from mcts_engine.train.data import encode, normalize_messages, render
    from mcts_engine.train.multiturn import episode_stats, turn_record
    from mcts_engine.train.rewards import score_turns, task_for
    from mcts_engine.zoom.environment import zoom

    _, prompts = mt_prompts
    eps, metas, ids = scripted_rollout(processor, prompts, group=len(PLANS))
    tok = processor.tokenizer
    assert [e.prompt_index for e in eps] == [0] * 6 + [1] * 6
    task = task_for("sat2")
    for e in eps:
        k = eps.index(e) % len(PLANS)
        want = EXPECTED[k]
        meta = metas[e.prompt_index]
        rec = turn_record(e, meta["zoom"])
        assert rec.end == want["end"] and len(e.turns) == want["turns"] and len(rec.points) == want["zooms"], k
        s = score_turns(rec, task, meta["truth"], RewardWeights())
        got = dict(total=s.total, accuracy=s.accuracy, format=s.format, grounding=s.grounding, distinct=s.distinct)
        assert got == pytest.approx({key: want[key] for key in got}), k
        stats = episode_stats(rec, e.observation_tokens)
        assert stats["malformed_calls"] == (1.0 if k == 1 else 0.0) and stats["answered"] == float(want["end"] == "answer")
        assert stats["forced"] == (1.0 if k == 2 else 0.0)
        # segments: policy turns alternate with observations; one observation per valid zoom
        assert [s.trainable for s in e.segments] == [True, False] * want["zooms"] + [True], k
        row = e.training_row()
        mask = row["target_mask"]
        n_prompt = len(e.prompt["input_ids"])
        trained = [tok.decode(row["input_ids"][a:b].tolist()) for a, b in runs(mask.tolist())]
        assert trained == [turn_text(tok, PLANS[k][i]) for i in range(want["turns"])], k  # the policy's tokens
        image = row["mm_token_type_ids"].bool()
        assert int(image[n_prompt:].sum()) == 4 * want["zooms"]  # each 56x56 crop: 4 image tokens
        assert torch.equal(image, row["input_ids"] == ids.image) and not mask[image].any()
        assert row["image_grid_thw"].tolist() == [[1, 6, 8]] + [[1, 4, 4]] * want["zooms"]
        if k == 2:  # the forced turn: "<answer>" pre-filled by the environment (not trained), the rest by the policy
            assert e.turns[-1] == "<answer> left </answer>" and trained[-1] == " left </answer>"
            last_obs = tok.decode(e.segments[-2].ids)
            assert last_obs.endswith("<|im_start|>assistant\n<answer>") and last_obs.startswith("<|im_end|>\n<|im_start|>user\n")
        if k == 0 and e.prompt_index == 0:
            # the incremental episode equals the processor's encoding of the whole conversation (same tokens, same
            # pixels): observations are encoded once, never re-tokenized, and crops come from environment.zoom
            row_msgs = prompts.source.row(0, ("prompt",))["prompt"]
            msgs = normalize_messages(row_msgs, "prompt")
            frame_image = meta["zoom"].image
            images = [frame_image]
            for i, p in enumerate([(20, 30), (70, 40)]):
                msgs += [{"role": "assistant", "content": [{"type": "text", "text": PLANS[0][i]}]}]
                msgs += normalize_messages([observation_user(p)], "obs")
                images.append(zoom(frame_image, p, meta["zoom"].settings.env)[0])
            msgs.append({"role": "assistant", "content": [{"type": "text", "text": PLANS[0][2]}]})
            full = encode(processor, render(processor, msgs), images)
            n = len(row["input_ids"])
            assert torch.equal(full["input_ids"][:n], row["input_ids"])
            assert tok.decode(full["input_ids"][n:].tolist()) == "<|im_end|>\n"
            assert torch.equal(full["pixel_values"], row["pixel_values"])
            assert torch.equal(full["mm_token_type_ids"][:n], row["mm_token_type_ids"])


def test_cut_turn_at_a_stop_string_spanning_tokens_and_a_turn_closed_by_its_end_token(processor, mt_prompts):
    from mcts_engine.train.data import SpecialIds
    from mcts_engine.train.multiturn import ZoomEnvironment, turn_record
    from mcts_engine.train.rollout import Sampling, cut_turn, rollout

    tok = processor.tokenizer
    ids = SpecialIds.from_processor(processor)
    text = tool_turn((20, 30)) + "\nmore text"
    tokens = tok.encode(text, add_special_tokens=False) + [ids.end, ids.pad]
    cut, truncated = cut_turn(tokens, ids.eos, ids.pad, ("</tool_call>", "</answer>"), tok)
    assert not truncated and tok.decode(cut).rstrip("\n").endswith("</tool_call>")
    assert "</tool_call>" not in tok.decode(cut[:-1])  # the first token that completes the stop string
    assert cut_turn(tokens, ids.eos, ids.pad, (), tok) == (tokens[:-1], False)  # no stops: through <|im_end|>
    assert cut_turn(tokens[:5], ids.eos, ids.pad, ("</answer>",), tok) == (tokens[:5], True)

    # a tool call left unclosed, then <|im_end|>: still a valid call; the observation does not close the turn twice
    unclosed = tool_turn((20, 30)).replace("\n</tool_call>", "") + "<|im_end|>"
    replies = iter([unclosed, "<answer> left </answer>"])
    _, prompts = mt_prompts
    encoded, meta = prompts.get(0)
    policy = SimpleNamespace(generate=ScriptedGenerate(tok, lambda ctx, k: next(replies)))
    env = ZoomEnvironment(processor, ids, [meta["zoom"]])
    (ep,) = rollout(policy, [encoded], 1, Sampling(160, 1.0), ids, tok, torch.device("cpu"), contextlib.nullcontext(),
                    env=env, max_turns=env.max_turns)
    assert turn_record(ep, meta["zoom"]).end == "answer" and [s.trainable for s in ep.segments] == [True, False, True]
    text = tok.decode(ep.training_row()["input_ids"].tolist())
    assert "}}<|im_end|>\n<|im_start|>user\n<observation>" in text and "<|im_end|><|im_end|>" not in text


def test_observation_tokens_get_zero_loss_weight(processor, mt_prompts):
    from mcts_engine.train.data import collate
    from mcts_engine.train.grpo import token_weights

    _, prompts = mt_prompts
    eps, _, ids = scripted_rollout(processor, prompts, group=len(PLANS))
    rows = [e.training_row() for e in eps]
    batch = collate(rows, ids.pad)
    select = batch["target_mask"][:, 1:]
    seq_index = select.nonzero()[:, 0]
    lengths = torch.tensor([float(e.completion_tokens) for e in eps])
    for mode in ("token", "sequence"):
        w = token_weights(seq_index, lengths, mode, float(lengths.sum()), float(len(eps)))
        dense = torch.zeros(select.shape)
        dense[select] = w  # the weight of predicting token t+1 at position t
        weight_of_token = torch.cat([torch.zeros(len(eps), 1), dense], dim=1)
        env_tokens = torch.zeros_like(batch["target_mask"])
        for r, e in enumerate(eps):
            at = len(e.prompt["input_ids"])
            for s in e.segments:
                if not s.trainable:
                    env_tokens[r, at:at + len(s.ids)] = True
                at += len(s.ids)
        crop_tokens = env_tokens & batch["mm_token_type_ids"].bool()
        assert int(crop_tokens.sum()) == 4 * sum(EXPECTED[k]["zooms"] for k in PLANS) * 2
        assert weight_of_token[env_tokens].abs().sum() == 0  # observation text, crop image tokens, pre-fills
        assert weight_of_token[batch["mm_token_type_ids"].bool()].abs().sum() == 0  # every image token
        assert (weight_of_token[batch["target_mask"]] > 0).all()  # every policy token is trained
        assert float(dense.sum()) == pytest.approx(1.0, rel=1e-5)


def test_settings_come_from_the_row_and_bad_settings_are_one_line_errors(tmp_path):
    from mcts_engine.train.data import GRPO_REQUIRED, RowSource
    from mcts_engine.train.model import TrainSetupError
    from mcts_engine.train.multiturn import row_settings, settings_from

    s = settings_from({"max_turns": 3, "crop_offset": 50, "crop_size": 112, "draw_dot": True, "dot_radius": 4},
                      {"crop_size": 999}, 0, 9, "row 0")
    assert (s.max_turns, s.env.crop_offset, s.env.crop_size, s.env.draw_dot) == (3, 50, 112, True)  # the row wins
    assert settings_from(None, {"crop_size": 224}, 0, 5, "r").env.crop_size == 224  # recipe fallback (mode on)
    assert settings_from({"max_turns": 3}, {}, 7, 0, "r").max_turns == 7  # train.grpo.max_turns overrides
    with pytest.raises(TrainSetupError, match="max_turns is missing"):
        settings_from(None, {}, 0, 0, "row 2")
    rows = mt_grpo_rows(1, frame=(112, 84))
    rows[0]["frame_width"] = 224  # the image is not the frame the points live in
    src = RowSource(write_mt_parquet(rows, tmp_path / "bad.parquet"), GRPO_REQUIRED, "GRPO")
    with pytest.raises(TrainSetupError, match="row 0.*112x84 but frame_width x frame_height is 224x84"):
        row_settings(src, "auto", {}, 0, 0)
    assert row_settings(src, "off", {}, 0, 0) == {}
    # single-turn rows: multi-turn only when the recipe says so (multiturn.enabled, or train.grpo.multiturn=on)
    from mcts_engine.testing.tiny_model import grpo_rows, write_parquet

    plain = RowSource(write_parquet(grpo_rows(2), tmp_path / "plain.parquet"), GRPO_REQUIRED, "GRPO")
    assert row_settings(plain, "auto", {}, 0, 6) == {}
    on = row_settings(plain, "auto", {"enabled": True, "crop_offset": 28, "crop_size": 56}, 0, 6)
    assert set(on) == {0, 1} and on[1].max_turns == 6 and on[1].env.crop_size == 56  # search.max_depth fallback
    assert set(row_settings(plain, "on", {}, 2, 0)) == {0, 1}
    cfg = train_config_from_recipe({"train": {"grpo": {"multiturn": True}}})  # YAML's bare `on`
    assert cfg.grpo.multiturn == "on" and cfg.grpo.rewards.distinct == 0.25


# --- a GRPO step on the tiny model ----------------------------------------------------------------


def test_multiturn_grpo_step_trains_only_the_policy_turns(tiny, mt_prompts, tmp_path, monkeypatch):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from mcts_engine.train import logprobs
    from mcts_engine.train.grpo import run_grpo
    from mcts_engine.train.model import load_processor

    path, _ = mt_prompts
    tok = load_processor(str(tiny)).tokenizer
    scripted = ScriptedGenerate(tok, script)
    monkeypatch.setattr(Qwen2_5_VLForConditionalGeneration, "generate", lambda self, **kw: scripted(**kw))
    seen = []
    forward = logprobs.TokenScorer.forward

    def spy(self, **kw):
        if torch.is_grad_enabled():
            seen.append({k: kw[k].detach().clone() for k in ("input_ids", "target_mask", "mm_token_type_ids")})
        return forward(self, **kw)

    monkeypatch.setattr(logprobs.TokenScorer, "forward", spy)
    cfg = train_config_from_recipe({"train": {
        "lr": 1e-3, "max_steps": 1, "batch_size": 12, "num_workers": 0, "warmup_ratio": 0.0, "shuffle": False,
        "grpo": {"group_size": 6, "prompts_per_step": 2, "max_new_tokens": 160}}})
    out = tmp_path / "grpo"
    run_grpo(RunArgs("grpo", str(tiny), str(path), str(out)), cfg)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    step = next(r for r in recs if r.get("step") == 1 and "reward" in r)
    assert step["reward"] == pytest.approx(sum(EXPECTED[k]["total"] for k in PLANS) / 6, rel=1e-5)
    assert step["reward_distinct"] == pytest.approx((1.0 + 2 / 3) / 6, rel=1e-5)
    assert step["turns"] == pytest.approx(11 / 6) and step["zooms"] == pytest.approx(5 / 6)
    assert step["answered_rate"] == pytest.approx(0.5) and step["malformed_rate"] == pytest.approx(1 / 6)
    assert step["malformed_calls"] == pytest.approx(1 / 6) and step["forced_rate"] == pytest.approx(1 / 6)
    assert step["out_of_frame_rate"] == pytest.approx(1 / 6) and step["accuracy"] == pytest.approx(2 / 6)
    assert step["observation_len"] > 0 and step["grad_norm"] > 0
    assert next(r for r in recs if r.get("event") == "start")["multiturn_rows"] == 2

    assert len(seen) == 1 and seen[0]["input_ids"].shape[0] == 12  # one micro-batch: every episode of the step
    batch = seen[0]
    expected_turns = [turn_text(tok, PLANS[k][i]) for k in PLANS for i in range(EXPECTED[k]["turns"])] * 2
    got_turns = []
    for r in range(12):
        ids_r, mask_r, mm_r = batch["input_ids"][r], batch["target_mask"][r], batch["mm_token_type_ids"][r].bool()
        got_turns += [tok.decode(ids_r[a:b].tolist()) for a, b in runs(mask_r.tolist())]
        assert not mask_r[mm_r].any()  # no image token (frame or crop) is ever a target
        untrained = tok.decode(ids_r[~mask_r & (ids_r != tok.pad_token_id)].tolist())
        k = r % 6
        assert untrained.count("Zoomed view around") == EXPECTED[k]["zooms"]  # observations present, never trained
        assert int(mm_r.sum()) == 12 + 4 * EXPECTED[k]["zooms"]
    assert got_turns == expected_turns


# --- the CLI end to end -----------------------------------------------------------------------------


def test_generate_export_sft_grpo_multiturn_from_the_cli(tiny, tmp_path, monkeypatch):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from mcts_engine.cli import app
    from mcts_engine.train.model import load_processor

    runner = CliRunner()

    def cli(*args: str):
        res = runner.invoke(app, list(args))
        assert res.exit_code == 0, f"{args[0]} failed ({res.exit_code}):\n{res.output}\n{res.exception!r}"
        return res

    run, exp = tmp_path / "run", tmp_path / "export"
    cli("generate", "--recipe", "vstar_multiturn", "--limit", "3", "--out", str(run), "--seed", "1", "--no-progress",
        "--set", "teacher.max_pixels=50176", "--set", "multiturn.crop_offset=28", "--set", "multiturn.crop_size=56",
        "--set", "search.max_depth=4", "--set", "search.simulations=6")  # enough for correct chains in both splits
    cli("export", "--run", str(run), "--out", str(exp), "--quiet")
    sft_train, grpo_train = exp / "sft_train.parquet", exp / "grpo_train.parquet"

    sft_out = tmp_path / "sft"
    res = cli("train", "--method", "sft", "--model", str(tiny), "--data", str(sft_train), "--out", str(sft_out),
              "--set", "train.max_steps=2", "--set", "train.num_workers=0", "--set", "train.lr=1e-3")
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["rows"] > 0 and summary["skipped"] == {}

    # turn 1 is scripted (a valid zoom inside every frame); later turns are the real model's sampling, on a context
    # that holds the frame and the crop (left-padded, several images per row)
    tok = load_processor(str(sft_out / "final")).tokenizer
    real = Qwen2_5_VLForConditionalGeneration.generate
    state = {}

    def first_turn(context: str, k: int):
        return None if "Zoomed view around" in context else tool_turn((20, 20))

    def fake(self, **kw):
        state["calls"] = state.get("calls", 0) + 1
        return ScriptedGenerate(tok, first_turn, fallback=lambda **a: real(self, **a))(**kw)

    monkeypatch.setattr(Qwen2_5_VLForConditionalGeneration, "generate", fake)
    grpo_out = tmp_path / "grpo"
    res = cli("train", "--method", "grpo", "--model", str(sft_out / "final"), "--data", str(grpo_train),
              "--out", str(grpo_out), "--set", "train.max_steps=2", "--set", "train.grpo.group_size=2",
              "--set", "train.grpo.prompts_per_step=2", "--set", "train.grpo.max_new_tokens=100",
              "--set", "train.batch_size=4")
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["method"] == "grpo" and summary["steps"] == 2 and summary["skipped"] == {}
    steps = [json.loads(x) for x in (grpo_out / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "reward" in s and "event" not in s]
    assert len(steps) == 2 and state["calls"] >= 4  # per step: the scripted turn + at least one real one
    for s in steps:
        assert s["zooms"] == 1.0 and s["turns"] >= 2.0 and s["observation_len"] > 0
        assert 0.0 <= s["answered_rate"] <= 1.0 and s["grounding_rate"] == 1.0
    assert (grpo_out / "final" / "config.json").exists()
