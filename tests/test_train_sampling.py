"""Rollouts sample exactly what the loss scores (issue 13 items 1, 2 and 7): an explicit sampling configuration
with nothing inherited from the checkpoint's generation_config, the eval's stop strings, the model's EOS list."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from mcts_engine.testing.tiny_model import build_tiny_model, grpo_rows, write_parquet


@pytest.fixture(scope="module")
def penalized(tmp_path_factory):
    """The tiny model whose generation_config carries Qwen2.5-VL-Instruct's decoding defaults."""
    d = build_tiny_model(tmp_path_factory.mktemp("pen") / "tiny")
    path = d / "generation_config.json"
    cfg = json.loads(path.read_text())
    cfg.update({"repetition_penalty": 1.05, "top_k": 1, "top_p": 0.001, "temperature": 0.1, "do_sample": True})
    path.write_text(json.dumps(cfg))
    rows = write_parquet(grpo_rows(2), d.parent / "grpo.parquet")
    return d, rows


def _prompt(model_dir, rows):
    from mcts_engine.train.data import GRPO_REQUIRED, RowSource, SpecialIds
    from mcts_engine.train.grpo import PromptSet
    from mcts_engine.train.model import load_model, load_processor

    processor = load_processor(str(model_dir))
    model = load_model(str(model_dir), torch.float32).eval()
    ps = PromptSet(RowSource(rows, GRPO_REQUIRED, "GRPO"), [0, 1], processor)
    encoded, meta = ps.get(0)
    return model, processor, SpecialIds.from_processor(processor), encoded


def test_sampling_logprobs_equal_the_trainers_scoring_logprobs(penalized):
    # Guards item 1: generate() filled every unset field from the checkpoint's generation_config (repetition
    # penalty 1.05, top_k 1, …), so rollouts came from a distribution the loss never scores.
    from mcts_engine.train.data import collate
    from mcts_engine.train.logprobs import TokenScorer, model_inputs
    from mcts_engine.train.rollout import rollout
    from mcts_engine.train.sampling import Sampling

    model, processor, ids, encoded = _prompt(*penalized)
    assert model.generation_config.repetition_penalty == 1.05  # the checkpoint's defaults are really there
    captured = {}
    original = model.generate

    def spy(*args, **kwargs):  # the real generate, also returning the processed scores it sampled from
        captured["config"] = kwargs.get("generation_config")
        captured["model_config"] = model.generation_config
        out = original(*args, **kwargs, output_scores=True, return_dict_in_generate=True)
        captured["scores"] = out.scores
        return out.sequences

    model.generate = spy
    torch.manual_seed(0)
    temperature = 0.7
    eps = rollout(model, [encoded], 3, Sampling(10, temperature), ids, processor.tokenizer, torch.device("cpu"),
                  contextlib.nullcontext())
    worst = 0.0
    for i, ep in enumerate(eps):
        tokens = ep.segments[0].ids
        sampled = torch.stack([torch.log_softmax(captured["scores"][j][i].float(), -1)[t] for j, t in enumerate(tokens)])
        batch = collate([ep.training_row()], ids.pad)
        with torch.no_grad():
            scored = TokenScorer(model)(**model_inputs(batch), temperature=temperature, suppress=ids.vision)
        assert scored.shape == sampled.shape
        worst = max(worst, float((scored - sampled).abs().max()))
    assert worst < 1e-4, worst
    assert captured["config"].repetition_penalty == 1.0 and captured["model_config"] is captured["config"]
    assert model.generation_config.repetition_penalty == 1.05  # restored after the call


def test_sampling_config_is_explicit_and_recorded():
    from mcts_engine.train.sampling import Sampling, describe, generation_config

    cfg = generation_config(Sampling(32, 0.9, 0.95, 20, 0.05), (5, 6), 0, (9,), num_return_sequences=4)
    assert (cfg.do_sample, cfg.temperature, cfg.top_p, cfg.top_k, cfg.min_p) == (True, 0.9, 0.95, 20, 0.05)
    assert (cfg.repetition_penalty, cfg.no_repeat_ngram_size, cfg.typical_p, cfg.max_new_tokens) == (1.0, 0, 1.0, 32)
    assert cfg.eos_token_id == [5, 6] and cfg.pad_token_id == 0 and cfg.suppress_tokens == [9]
    rec = describe(Sampling(32, 0.9), (5, 6), 0, ("</answer>",))
    assert rec["repetition_penalty"] == 1.0 and rec["stop_strings"] == ["</answer>"]
    assert rec["from_checkpoint_generation_config"] is False


def test_single_turn_rollouts_stop_where_the_eval_stops():
    # Guards item 2: single-turn rollouts had no stop string, so a second answer block could follow the first.
    import dataclasses

    from mcts_engine.grounding import CHAIN_STOPS
    from mcts_engine.teachers.base import PromptContext, PromptState, stop_sequences
    from mcts_engine.train.rollout import SingleTurn, _cut_text

    fields = {f.name: None for f in dataclasses.fields(PromptContext)
              if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    ctx = PromptContext(**fields)
    assert SingleTurn.stop == CHAIN_STOPS == stop_sequences(PromptState(ctx, one_shot=True))
    assert _cut_text("<think> a </think><answer> x </answer>\n<answer> y", SingleTurn.stop) == (
        "<think> a </think><answer> x </answer>")


def test_double_answer_completion_scores_zero():
    # Guards item 2: the chain grammar accepted a second answer block as well formed and the reward read the last.
    from mcts_engine.grounding import check_chain
    from mcts_engine.train.config import RewardWeights
    from mcts_engine.train.rewards import frame_of, score_completion, task_for

    truth = {"answer": "left", "choices": ["left", "right"]}
    gamed = "<think> The cup (10, 20). </think><answer> right </answer>\n<answer> left </answer>"
    assert not check_chain(gamed).well_formed
    r = score_completion(gamed, task_for("sat2"), truth, frame_of(56, 56), RewardWeights())
    assert (r.accuracy, r.format, r.correct) == (0.0, 0.0, False)
    other = "<think> The cup (10, 20). </think><answer> left </answer>\n<answer> right </answer>"
    assert score_completion(other, task_for("sat2"), truth, frame_of(56, 56), RewardWeights()).accuracy == 0.0
    good = "<think> The cup (10, 20). </think>\n<answer> left </answer>\n"
    assert check_chain(good).well_formed and check_chain(good).answer == "left"


def test_stop_tokens_are_the_models_eos_list_and_im_end(penalized):
    # Guards item 7: only <|im_end|> and the tokenizer's eos stopped a turn; <|endoftext|> (in the model's EOS list)
    # did not, so tokens after it were trained on.
    from mcts_engine.train.rollout import cut_turn
    from mcts_engine.train.sampling import model_eos

    model, processor, ids, _ = _prompt(*penalized)
    tok = processor.tokenizer
    endoftext = tok.convert_tokens_to_ids("<|endoftext|>")
    assert endoftext not in ids.eos
    full = ids.with_eos(model_eos(model))
    assert endoftext in full.eos and ids.end in full.eos
    a = tok.encode("left", add_special_tokens=False)
    tokens, truncated = cut_turn([*a, endoftext, *a, *a], full.eos, full.pad, (), tok)
    assert tokens == [*a, endoftext] and not truncated


def test_stop_string_criterion_stops_exactly_when_the_text_holds_a_stop(penalized):
    # the cheap criterion (newest token holds the stop's last character → decode the tail) fires exactly at the
    # token that completes a stop string (generation ends there, so later lengths never reach it)
    from mcts_engine.train.sampling import stop_string_criteria

    model, processor, ids, _ = _prompt(*penalized)
    tok = processor.tokenizer
    prompt = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    texts = ["<think> The cup (10, 20). </think><answer> left </answer> and more",
             "<think> a > b </think> <answer>right</answer>", "no stop here > at all", "</tool_call> x </answer>"]
    stops = ("</answer>", "</tool_call>")
    crit = stop_string_criteria(tok, stops, len(prompt))
    for text in texts:
        gen = tok.encode(text, add_special_tokens=False)
        for n in range(len(gen) + 1):
            row = torch.tensor([prompt + gen[:n]])
            def holds(k, s, gen=gen):
                return s in tok.decode(gen[:k], skip_special_tokens=False)

            want = n > 0 and any(holds(n, s) and not holds(n - 1, s) for s in stops)
            assert bool(crit(row, None)[0]) == want, (text, n)
