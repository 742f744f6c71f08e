"""The step protocol: the one place that knows what a grounded step looks like.

A reasoning step is ``<think> {one step about one region} (x, y). </think>`` with integer pixel
coordinates in the *frame* the model saw (the image after resizing to the teacher's max_pixels).
A final answer is ``<answer> {text} </answer>``. A multi-turn step may end with a
``<tool_call>{json}</tool_call>`` that asks the environment for a crop around a point.

Everything here is pure: strings and numbers in, dataclasses out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .frame import Point

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
IMAGE_MARKER = "<image>"  # where an image sits in a text that carries images (observations, sharegpt)

# The stop sequences that end one teacher response (a step, an answer or a tool call).
STEP_STOPS: tuple[str, ...] = (THINK_CLOSE, ANSWER_CLOSE)
# What ends a whole one-shot chain (eval's single pass, GRPO's single-turn rollouts): the first </answer>.
CHAIN_STOPS: tuple[str, ...] = (ANSWER_CLOSE,)

# "(x, y)" with integer pixels. Decimals are accepted by the parser and rounded, but flagged.
_POINT_RE = re.compile(r"\(\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)")
_THINK_RE = re.compile(r"<think>(.*?)(?:</think>|$)", re.S)
_ANSWER_RE = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S)
_TOOL_RE = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)


# --------------------------------------------------------------------------------------------
# Parsing teacher / student output
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict
    point: Point | None = None


@dataclass(frozen=True)
class ParsedStep:
    """One teacher response, classified.

    kind: ``"think"`` (a reasoning step), ``"answer"`` (a final answer, possibly after a thought),
    or ``"invalid"`` (neither tag present / empty). ``thought`` is the text inside ``<think>``,
    ``points`` every ``(x, y)`` found in it, ``answer`` the text inside ``<answer>``.
    """

    kind: str
    thought: str = ""
    points: tuple[Point, ...] = ()
    answer: str | None = None
    tool_call: ToolCall | None = None
    tool_error: str | None = None
    non_integer: bool = False
    raw: str = ""

    @property
    def point(self) -> Point | None:
        """The step's grounding point: the last point it mentions (a step ends on its region)."""
        return self.points[-1] if self.points else None


def find_points(text: str) -> tuple[tuple[Point, ...], bool]:
    """All ``(x, y)`` in ``text`` as integer points, and whether any was non-integer."""
    pts: list[Point] = []
    non_int = False
    for m in _POINT_RE.finditer(text):
        xs, ys = m.group(1), m.group(2)
        if "." in xs or "." in ys:
            non_int = True
        pts.append((round(float(xs)), round(float(ys))))
    return tuple(pts), non_int


def parse_tool_call(body: str) -> tuple[ToolCall | None, str | None]:
    """Strict JSON tool call ``{"name": ..., "arguments": {"coordinate": [x, y]}}``.

    Returns ``(call, None)`` or ``(None, reason)``.
    """
    try:
        obj = json.loads(body.strip())
    except json.JSONDecodeError as exc:
        return None, f"tool call is not valid JSON: {exc.msg}"
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None, "tool call needs a string 'name'"
    args = obj.get("arguments", {})
    if not isinstance(args, dict):
        return None, "tool call 'arguments' must be an object"
    point = None
    if "coordinate" in args:
        c = args["coordinate"]
        if not (isinstance(c, list) and len(c) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in c)):
            return None, "tool call 'coordinate' must be two integers [x, y]"
        point = (c[0], c[1])
    return ToolCall(name=obj["name"], arguments=args, point=point), None


def parse_step(text: str) -> ParsedStep:
    """Classify one teacher response. Tolerates a missing closing tag (servers strip stop strings)."""
    raw = text
    answer = None
    am = _ANSWER_RE.search(text)
    if am:
        answer = am.group(1).strip()
    tm = _THINK_RE.search(text)
    thought = tm.group(1).strip() if tm else ""
    tool_call = tool_error = None
    tc = _TOOL_RE.search(text)
    if tc:
        tool_call, tool_error = parse_tool_call(tc.group(1))
    points, non_int = find_points(thought)
    if answer is not None and answer != "":
        kind = "answer"
    elif thought:
        kind = "think"
    else:
        kind = "invalid"
    return ParsedStep(
        kind=kind,
        thought=thought,
        points=points,
        answer=answer,
        tool_call=tool_call,
        tool_error=tool_error,
        non_integer=non_int,
        raw=raw,
    )


def complete_response(text: str, stop: str | None = None) -> str:
    """Re-attach the closing tag a server stripped as a stop string, so stored text is well formed."""
    t = text.rstrip()
    if stop and not t.endswith(stop):
        return t + " " + stop if not t.endswith(" ") else t + stop
    for open_tag, close_tag in ((ANSWER_OPEN, ANSWER_CLOSE), (TOOL_OPEN, TOOL_CLOSE), (THINK_OPEN, THINK_CLOSE)):
        if t.rfind(open_tag) > t.rfind(close_tag):
            return f"{t} {close_tag}"
    return t


def extract_answer(text: str) -> str | None:
    """The final answer in a full completion (the last ``<answer>`` block), or None."""
    found = _ANSWER_RE.findall(text)
    if not found:
        return None
    ans = found[-1].strip()
    return ans or None


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def format_point(point: Point) -> str:
    return f"({point[0]}, {point[1]})"


def format_step(thought: str) -> str:
    return f"{THINK_OPEN} {thought.strip()} {THINK_CLOSE}"


def format_answer(answer: str) -> str:
    return f"{ANSWER_OPEN} {answer.strip()} {ANSWER_CLOSE}"


def _as_sentence(thought: str) -> str:
    t = thought.strip()
    return t if t.endswith((".", "!", "?")) else t + "."


def format_chain(thoughts: list[str], answer: str) -> str:
    """Single-turn SFT target: ``<think>\\n s1 (x1, y1). s2 (x2, y2). …\\n</think>\\n<answer> X </answer>``."""
    body = " ".join(_as_sentence(t) for t in thoughts if t.strip())
    return f"{THINK_OPEN}\n{body}\n{THINK_CLOSE}\n{format_answer(answer)}"


# Grammar of a full single-turn completion (what a student writes and the format reward checks).
# Exactly one think block, then exactly one answer block, then nothing: neither body may hold a think/answer tag
# (a second <answer> block after the first would otherwise be swallowed into a "well formed" answer).
_BODY = r"((?:(?!</?think>|</?answer>).)+)"
_CHAIN_RE = re.compile(rf"^\s*<think>{_BODY}</think>\s*<answer>{_BODY}</answer>\s*$", re.S)


@dataclass(frozen=True)
class ChainCheck:
    well_formed: bool
    thought: str
    answer: str | None
    points: tuple[Point, ...]


def check_chain(text: str) -> ChainCheck:
    """Does a full completion follow ``<think> … </think><answer> … </answer>``? Points inside the thought."""
    m = _CHAIN_RE.match(text)
    if not m:
        return ChainCheck(False, "", extract_answer(text), find_points(text)[0])
    thought = m.group(1).strip()
    return ChainCheck(True, thought, m.group(2).strip() or None, find_points(thought)[0])
