"""Task contracts: each task's sample checks, ground truth in the model's frame, prompts, sim answers and
verifier wiring (web actions, points, choices). The verifier functions themselves: test_verifiers.py."""

from __future__ import annotations

import random

import pytest

from mcts_engine.frame import Frame, frame_for
from mcts_engine.samples import Sample
from mcts_engine.tasks import get_task

# --------------------------------------------------------------------------------------------
# Web actions (the verifier itself is tested in test_verifiers.py)
# --------------------------------------------------------------------------------------------


def test_web_action_task_contract():
    task = get_task("web_action")
    s = Sample(id="w", images=["x.png"], question="Search for a sofa", answer="type [4] [blue sofa] [1]",
               metadata={"url": "http://shop", "previous_actions": ["click [2]"],
                         "elements": [{"id": "4", "role": "textbox", "text": "Search"}, {"id": "2", "role": "link", "text": "Home"}]})
    task.check_sample(s)
    truth = task.ground_truth(s, None)
    assert truth["answer"] == "type [4] [blue sofa]" and truth["element_ids"] == ["4", "2"]
    text = task.user_text(s)
    assert "Objective: Search for a sofa" in text and "Previous actions: click [2]" in text and "[4] [textbox] [Search]" in text
    assert task.verify("type [4] [Blue Sofa]", truth).correct
    rng = random.Random(0)
    for _ in range(30):
        assert task.verify(task.sim_answer(truth, True, rng), truth).correct
        assert not task.verify(task.sim_answer(truth, False, rng), truth).correct
    with pytest.raises(ValueError, match="not a web action"):
        task.check_sample(Sample(id="b", images=["x"], question="q", answer="click here"))


# --------------------------------------------------------------------------------------------
# Grounding to a point: the box is checked in the frame the model saw
# --------------------------------------------------------------------------------------------


def point_sample(box, w=2000, h=1000, task="screenspot"):
    return Sample(id="p", images=["x.png"], question="the OK button", answer="(0, 0)",
                  boxes=[{"label": "target", "bbox": box}], task=task)


@pytest.mark.parametrize("name", ["screenspot", "osatlas"])
def test_point_verifier_uses_the_frame(name):
    task = get_task(name)
    s = point_sample([1000, 500, 1100, 600])
    frame = Frame(width=1000, height=500, orig_width=2000, orig_height=1000)  # half size
    truth = task.ground_truth(s, frame)
    assert truth["bbox"] == [500, 250, 550, 300] and truth["answer"] == "(525, 275)"
    assert task.verify("(525, 275)", truth).correct
    assert task.verify("(500, 250)", truth).correct and task.verify("500, 250", truth).correct
    assert task.verify("(550, 300)", truth).correct  # edges inclusive
    # The ORIGINAL-pixel center is outside the box in the model's frame: never accepted.
    assert not task.verify("(1050, 550)", truth).correct
    assert not task.verify("(551, 275)", truth).correct
    assert task.verify("no idea", truth).reason == "no point in the answer"
    assert task.reference(s) == "(1050, 550)"
    hb = task.hint_boxes(s, frame)
    assert hb[0]["bbox"] == [500, 250, 550, 300]


def test_point_sim_answers_land_in_and_out_of_the_box():
    task = get_task("screenspot")
    s = point_sample([10, 10, 14, 13])  # a tiny box
    frame = frame_for(2000, 1000, max_pixels=1280 * 28 * 28)
    truth = task.ground_truth(s, frame)
    rng = random.Random(1)
    for _ in range(50):
        good, bad = task.sim_answer(truth, True, rng), task.sim_answer(truth, False, rng)
        assert task.verify(good, truth).correct, (good, truth)
        assert not task.verify(bad, truth).correct
        x, y = (int(v) for v in bad.strip("()").split(","))
        assert frame.contains((x, y))


def test_point_task_reads_a_vigorl_box_answer_and_rejects_empty_boxes():
    task = get_task("osatlas")
    s = Sample(id="v", images=["x"], question="q", answer="(40, 10, 20, 30)")
    task.check_sample(s)
    assert task.ground_truth(s, None)["bbox"] == [20.0, 10.0, 40.0, 30.0]
    with pytest.raises(ValueError, match="no target box"):
        task.check_sample(Sample(id="n", images=["x"], question="q", answer="left"))
    with pytest.raises(ValueError, match="empty"):
        task.check_sample(point_sample([5, 5, 5, 9]))


# --------------------------------------------------------------------------------------------
# Multiple choice (BLINK, V*): letters resolve against the options as shown
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["blink", "vstar"])
def test_choice_tasks(name):
    task = get_task(name)
    s = Sample(id="c", images=["x"], question="Which point is closer?", answer="B", choices=["A", "B"])
    task.check_sample(s)
    truth = task.ground_truth(s, None)
    assert truth == {"answer": "B", "choices": ["A", "B"]}
    assert task.verify("(B)", truth).correct and task.verify("b", truth).correct and not task.verify("A", truth).correct
    s2 = Sample(id="d", images=["x"], question="Color?", answer="red", choices=["blue", "red", "light red"])
    t2 = task.ground_truth(s2, None)
    assert task.verify("B", t2).correct and not task.verify("light red", t2).correct and not task.verify("C", t2).correct
    assert "(A) blue" in task.user_text(s2) and "(C) light red" in task.user_text(s2)
    rng = random.Random(2)
    for _ in range(20):
        assert not task.verify(task.sim_answer(t2, False, rng), t2).correct
        assert task.verify(task.sim_answer(t2, True, rng), t2).correct


def test_blink_composite_is_named_in_the_question():
    task = get_task("blink")
    s = Sample(id="m", images=[b"x"], question="Which image is more similar to the first?", answer="The second image",
               choices=["The second image", "The third image"],
               metadata={"composite": {"layout": "side_by_side", "n": 3, "panels": [[0, 0, 1, 1]] * 3}})
    text = task.user_text(s)
    assert text.startswith("The picture shows 3 images side by side") and "Image 1, Image 2, Image 3" in text


def test_every_task_has_prompts_and_an_eval_spec():
    from mcts_engine.evaluation.scoring import EvalSpec
    from mcts_engine.tasks import task_names

    for name in ("sat2", "blink", "vstar", "screenspot", "osatlas", "web_action"):
        assert name in task_names()
        task = get_task(name)
        assert "(x, y)" in task.teacher_prompt and "<answer>" in task.student_prompt
        assert isinstance(task.eval_spec, EvalSpec)
    assert get_task("blink").eval_spec.headline == "macro:sub_task" and get_task("sat2").eval_spec.circular
