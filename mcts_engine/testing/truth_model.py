"""A truth model for the stand-in server: a simulated grounded teacher with a known right answer.

NOT a model. It answers the stand-in server's chat requests (``StubConfig.replies``) for the search
benchmark (``scripts/bench_search.py``), so that what the search finds can be scored against a known
truth: whether a correct answer was *grounded* (its path looked at the region the question is about).

Per sample (found by the question text of the request's first user turn) it knows the right answer and
one annotated *key box*. Each reply is, like a real teacher's, a grounded step or a final answer:

- answer with probability ``min(p_answer_cap, p_answer_first + p_answer_step · steps)`` (always when the
  request forces the answer); the answer is right with ``p_good`` when the path visited the key box,
  with ``p_bad`` otherwise (a wrong answer is another option);
- a step lands in the key box with ``p_key``; else within ``jitter`` (a fraction of the frame's
  diagonal) of a point already on its path with ``p_repeat`` (the repeats a real teacher writes);
  else near one of three regions the prompt "prefers" with ``p_mode`` (siblings of one prompt
  cluster: (599, 191), (602, 191), (599, 196)); else anywhere in the frame.
- with ``logprobs`` each reply carries a mean token log-prob: ``-0.9`` plus ``prior_signal`` for a step
  into the key box (a teacher a little more sure of the step that matters), ``-0.7`` plus
  ``prior_signal / 2`` for a right answer, ``-1.1`` for a step anywhere, ``-0.9`` for the rest, each
  with Gaussian noise (σ = ``logprob_noise``). The server sends it in the OpenAI format when asked.

:class:`TruthTeacher` runs the same replies in process (no HTTP), behind the teacher protocol, for
benchmarks on a client that does not read log-probs yet.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..grounding import find_points
from ..teachers.base import Continuation, PromptState, TeacherReply, build_messages
from .stub_server import read_prompt


@dataclass
class TruthConfig:
    p_good: float = 0.85  # P(right answer) on a path that visited the key box
    p_bad: float = 0.35  # P(right answer) otherwise
    p_key: float = 0.1  # P(a step lands in the key box)
    p_repeat: float = 0.1  # P(a step lands next to a point already on its path)
    p_mode: float = 0.4  # P(a step lands near one of the prompt's three favourite regions)
    jitter: float = 0.01  # repeats and favourite regions: spread, as a fraction of the frame's diagonal
    p_answer_first: float = 0.05  # P(answer) with no step yet
    p_answer_step: float = 0.2  # + this per step on the path (≈ 2.4 steps a path, like the sim teacher)
    p_answer_cap: float = 0.85
    logprobs: bool = True  # give log-probs (the server sends them only when the request asks)
    prior_signal: float = 0.3  # mean token log-prob advantage of a key-box step (half of it for a right answer)
    logprob_noise: float = 0.1


@dataclass(frozen=True)
class Key:
    """What the truth model knows about one sample: the right option and the key box (original image
    pixels) with the original image's size."""

    answer: str
    box: tuple[float, float, float, float]
    width: int
    height: int


def user_text(body: dict[str, Any]) -> str:
    """The text of the request's first user turn (the question, options included)."""
    for m in body.get("messages") or []:
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                return content
            return "".join(str(p.get("text", "")) for p in content or [] if isinstance(p, dict) and p.get("type") == "text")
    return ""


def path_points(body: dict[str, Any]) -> list[tuple[int, int]]:
    """Every point the assistant turns of the request have written (the path so far)."""
    out: list[tuple[int, int]] = []
    for m in body.get("messages") or []:
        if m.get("role") == "assistant" and isinstance(m.get("content"), str):
            out.extend(find_points(m["content"])[0])
    return out


def in_box(p: tuple[int, int], box: tuple[float, float, float, float]) -> bool:
    return box[0] <= p[0] <= box[2] and box[1] <= p[1] <= box[3]


class TruthModel:
    """``reply(body, index, rng) -> (text, mean token log-prob | None)``: a ``StubConfig.replies``."""

    def __init__(self, keys: dict[str, Key], cfg: TruthConfig | None = None) -> None:
        self.keys = keys
        self.cfg = cfg or TruthConfig()

    def __call__(self, body: dict[str, Any], index: int, rng: random.Random) -> tuple[str, float | None]:
        return self.reply(body, index, rng)

    def reply(self, body: dict[str, Any], index: int, rng: random.Random) -> tuple[str, float | None]:
        c = self.cfg
        view = read_prompt(body)
        key = self.keys.get(user_text(body))
        w, h = view.frame
        if key is None:  # a question it does not know: an unknowable answer, no grounding
            return (" unknown </answer>" if view.continuing else "<answer> unknown </answer>") if view.forced else \
                "<answer> unknown </answer>", None
        sx, sy = w / key.width, h / key.height
        box = (key.box[0] * sx, key.box[1] * sy, key.box[2] * sx, key.box[3] * sy)
        visited = path_points(body)
        p_answer = min(c.p_answer_cap, c.p_answer_first + c.p_answer_step * view.steps)
        if view.forced or rng.random() < p_answer:
            right = rng.random() < (c.p_good if any(in_box(p, box) for p in visited) else c.p_bad)
            wrong = [o for o in view.options if o.strip().lower() != key.answer.strip().lower()]
            option = key.answer if right or not wrong else rng.choice(wrong)
            text = f" {option} </answer>" if (view.forced and view.continuing) else f"<answer> {option} </answer>"
            return text, self._logprob(-0.7 + (c.prior_signal / 2 if right else 0.0), rng)
        diag = math.hypot(w, h)
        r = rng.random()
        if r < c.p_key:
            x, y = rng.uniform(box[0], box[2]), rng.uniform(box[1], box[3])
            base = -0.9 + c.prior_signal
        elif r < c.p_key + c.p_repeat and visited:
            px, py = rng.choice(visited)
            x, y, base = px + rng.gauss(0, c.jitter * diag / 2), py + rng.gauss(0, c.jitter * diag / 2), -0.9
        elif r < c.p_key + c.p_repeat + c.p_mode:
            mx, my = self._modes(body, w, h)[rng.randrange(3)]
            x, y, base = mx + rng.gauss(0, c.jitter * diag / 2), my + rng.gauss(0, c.jitter * diag / 2), -0.9
        else:
            x, y, base = rng.uniform(0, w), rng.uniform(0, h), -1.1
        x, y = min(w - 1, max(0, round(x))), min(h - 1, max(0, round(y)))
        text = f"<think> Step {view.steps + 1}: the region around ({x}, {y}) bears on the question. </think>"
        return text, self._logprob(base, rng)

    def _logprob(self, mean: float, rng: random.Random) -> float | None:
        if not self.cfg.logprobs:
            return None
        return min(-0.01, mean + rng.gauss(0, self.cfg.logprob_noise))

    @staticmethod
    def _modes(body: dict[str, Any], w: int, h: int) -> list[tuple[float, float]]:
        """Three regions this prompt prefers: fixed per prompt text (images aside), so siblings and
        repeated asks of one prompt cluster around them."""
        parts = [user_text(body)] + [str(m.get("content")) for m in body.get("messages") or [] if m.get("role") == "assistant"]
        seed = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
        r = random.Random(seed)
        return [(r.uniform(0, w), r.uniform(0, h)) for _ in range(3)]


class TruthTeacher:
    """The truth model behind the teacher protocol, in process (no HTTP): the same replies, with
    ``Continuation.logprob`` filled (mean × tokens, ≈ 4 characters a token like the stand-in server)."""

    name = "truth"

    def __init__(self, model: TruthModel, seed: int = 0, prompt_style: str = "continue") -> None:
        self.model = model
        self.seed = seed
        self.prompt_style = prompt_style
        self.requests = 0

    async def complete(self, state: PromptState, n: int) -> TeacherReply:
        messages, cont, prefill = build_messages(state, self.prompt_style)
        body = {"messages": messages, "n": n, "continue_final_message": cont}
        rng = random.Random(f"{self.seed}:{self.requests}")
        self.requests += 1
        choices = []
        for i in range(n):
            text, mean = self.model.reply(body, i, rng)
            text = prefill + text if prefill and not text.lstrip().startswith(prefill) else text
            tokens = max(1, math.ceil(len(text) / 4))
            choices.append(Continuation(text, "stop", tokens, None if mean is None else mean * tokens))
        return TeacherReply(choices=choices, prompt_tokens=100)

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"kind": "truth", "note": "benchmark truth model in process (NOT a model)", "seed": self.seed}


def keys_from_jsonl(path: Path, task_name: str = "sat2", image_root: str | None = None) -> dict[str, Key]:
    """The truth of every sample of a JSONL file: its question text (as the task shows it) → right
    answer and key box (the first annotated box). Samples without a box are left out."""
    from PIL import Image

    from ..samples import Sample, load_samples, resolve_image_path
    from ..tasks import get_task

    task = get_task(task_name)
    keys: dict[str, Key] = {}
    for s in load_samples(path, image_root, task_name):
        if not isinstance(s, Sample) or not s.boxes or not s.images or not isinstance(s.images[0], str):
            continue
        with Image.open(resolve_image_path(s.images[0], s.image_root)) as im:
            width, height = im.size
        x1, y1, x2, y2 = (float(v) for v in s.boxes[0]["bbox"])
        keys[task.user_text(s)] = Key(task.reference(s), (x1, y1, x2, y2), width, height)
    return keys


def main(argv: list[str] | None = None) -> None:
    """``python -m mcts_engine.testing.truth_model --data samples.jsonl``: the stand-in server with the
    truth model of those samples (latency 0)."""
    import argparse

    from .stub_server import StubConfig, StubServer, serve_forever

    ap = argparse.ArgumentParser(description="Stand-in OpenAI server answering with the truth model (benchmarks).")
    ap.add_argument("--data", required=True, help="samples JSONL (the truth: answers and key boxes)")
    ap.add_argument("--task", default="sat2")
    ap.add_argument("--image-root", default=None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ready-file", default=None, help="write the bound port here once listening")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--p-key", type=float, default=TruthConfig.p_key)
    ap.add_argument("--p-good", type=float, default=TruthConfig.p_good)
    ap.add_argument("--p-bad", type=float, default=TruthConfig.p_bad)
    ap.add_argument("--no-logprobs", action="store_true")
    args = ap.parse_args(argv)
    tc = TruthConfig(p_key=args.p_key, p_good=args.p_good, p_bad=args.p_bad, logprobs=not args.no_logprobs)
    model = TruthModel(keys_from_jsonl(Path(args.data), args.task, args.image_root), tc)
    server = StubServer(StubConfig(seed=args.seed, replies=model), host=args.host, port=args.port)

    serve_forever(server, args.ready_file, "(truth model)")


if __name__ == "__main__":
    main()
