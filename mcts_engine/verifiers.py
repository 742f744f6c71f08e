"""Answer verifiers: pure functions the search, the exporter, eval and the trainer's rewards all share.

Each returns a :class:`Verdict` (``score`` in [0, 1]; ``correct`` when the score is 1). They are strict
on purpose: a prediction never matches because the ground truth is a *substring* of it ("1" is not
"10", "left" is not "left and right").
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Verdict:
    score: float
    reason: str = ""

    @property
    def correct(self) -> bool:
        return self.score >= 1.0

    def to_dict(self) -> dict:
        return {"score": self.score, "correct": self.correct, "reason": self.reason}


CORRECT = Verdict(1.0, "match")

_PUNCT = str.maketrans({c: " " for c in string.punctuation})
_WS = re.compile(r"\s+")
# A letter, then a separator (")", ".", ":", whitespace) or the end: "B", "(B)", "B.", "B) text";
# never a word that merely starts with a letter ("Bright" does not name option B "right").
_LETTER = re.compile(r"^\(?\s*([A-Za-z])(?:\s*\)\s*[.:]?|\s*[.:]|\s+|$)\s*(.*)$", re.S)


@functools.lru_cache(maxsize=4096)  # pure; the same options and answers are compared over and over
def normalize_text(text: str) -> str:
    """Lower-case, punctuation to spaces, whitespace collapsed: 'The Left.' -> 'the left'."""
    return _WS.sub(" ", text.lower().translate(_PUNCT)).strip()


def option_letter(index: int) -> str:
    return string.ascii_uppercase[index]


def resolve_choice(text: str, choices: Sequence[str]) -> int | None:
    """Which option does ``text`` name? By its full text or its letter ("B", "(B)", "B.", "B) text").

    Returns the option index or None. A letter followed by text counts only if that text is the
    letter's option (or empty); text must equal an option after normalization, never contain it.
    """
    norm = normalize_text(text)
    if not norm:
        return None
    normed = [normalize_text(c) for c in choices]
    if norm in normed:
        # Ambiguous duplicates resolve to the first; the ground truth resolves the same way.
        return normed.index(norm)
    m = _LETTER.match(text.strip())
    if m:
        idx = string.ascii_uppercase.find(m.group(1).upper())
        rest = normalize_text(m.group(2))
        if 0 <= idx < len(choices) and (not rest or rest == normed[idx]):
            return idx
    return None


def match_choice(prediction: str | None, answer: str, choices: Sequence[str] = ()) -> Verdict:
    """Multiple choice: the prediction names the same option as the answer (text or letter)."""
    if prediction is None or not prediction.strip():
        return Verdict(0.0, "no answer")
    if choices:
        gold = resolve_choice(answer, choices)
        if gold is None:
            return Verdict(0.0, f"ground truth {answer!r} is not one of the options")
        pred = resolve_choice(prediction, choices)
        if pred is None:
            return Verdict(0.0, "prediction names no option")
        return CORRECT if pred == gold else Verdict(0.0, f"chose option {option_letter(pred)}")
    return match_text(prediction, answer)


def match_text(prediction: str | None, answer: str) -> Verdict:
    """Exact match after normalization (case, punctuation and spacing insensitive)."""
    if prediction is None:
        return Verdict(0.0, "no answer")
    return CORRECT if normalize_text(prediction) == normalize_text(answer) else Verdict(0.0, "text differs")


_NUM = re.compile(r"[-+]?(?:\d+(?:,\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def parse_number(text: str) -> float | None:
    """The single number in ``text`` ("1,024", "3.5 m", "-2"); None if there is none or several."""
    found = _NUM.findall(text)
    if len(found) != 1:
        return None
    try:
        return float(found[0].replace(",", ""))
    except ValueError:
        return None


def match_numeric(prediction: str | None, answer: str | float, rel_tol: float = 0.0, abs_tol: float = 1e-9) -> Verdict:
    if prediction is None:
        return Verdict(0.0, "no answer")
    p = parse_number(prediction)
    a = answer if isinstance(answer, (int, float)) else parse_number(answer)
    if p is None:
        return Verdict(0.0, "prediction is not a single number")
    if a is None:
        return Verdict(0.0, f"ground truth {answer!r} is not a number")
    return CORRECT if math.isclose(p, a, rel_tol=rel_tol, abs_tol=abs_tol) else Verdict(0.0, f"{p:g} != {a:g}")


def point_in_box(point: tuple[float, float] | None, box: Box) -> Verdict:
    """Point inside an xyxy box, edges inclusive. Point and box must be in the same frame."""
    if point is None:
        return Verdict(0.0, "no point")
    x, y = point
    x1, y1, x2, y2 = box
    inside = min(x1, x2) <= x <= max(x1, x2) and min(y1, y2) <= y <= max(y1, y2)
    return CORRECT if inside else Verdict(0.0, "point outside box")


def point_distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def point_near(point: tuple[float, float] | None, target: tuple[float, float], radius: float) -> Verdict:
    """Point within ``radius`` pixels (Euclidean) of the target, same frame."""
    if point is None:
        return Verdict(0.0, "no point")
    d = point_distance(point, target)
    return CORRECT if d <= radius else Verdict(0.0, f"{d:.1f}px from target")


_POINT_ANSWER = re.compile(r"\(?\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)?")


def parse_point_answer(text: str | None) -> tuple[float, float] | None:
    """A point answer such as "(120, 45)" or "120, 45"; None when absent."""
    if not text:
        return None
    m = _POINT_ANSWER.search(text)
    return (float(m.group(1)), float(m.group(2))) if m else None


# --------------------------------------------------------------------------------------------
# Web actions (VisualWebArena-style, set-of-marks element ids)
# --------------------------------------------------------------------------------------------

# Actions whose first argument is an element id (the set-of-marks label drawn on the screenshot).
ELEMENT_ACTIONS = frozenset({"click", "hover", "type"})
# Actions with no argument.
BARE_ACTIONS = frozenset({"go_back", "go_forward", "new_tab", "close_tab"})
# Actions with one free argument (compared after normalization).
ARG_ACTIONS = frozenset({"scroll", "stop", "press", "goto", "tab_focus"})
WEB_ACTIONS = ELEMENT_ACTIONS | BARE_ACTIONS | ARG_ACTIONS

_ACTION_HEAD = re.compile(r"^([a-z_]+)\s*(.*)$", re.S | re.I)
_ELEMENT_ARG = re.compile(r"^\[\s*(\d+)\s*\]\s*(.*)$", re.S)
_ENTER_FLAG = re.compile(r"^(.*)\]\s*\[\s*([01])\s*$", re.S)
_FENCE = re.compile(r"```(?:[a-z]*\n)?(.*?)```", re.S)


@dataclass(frozen=True)
class ParsedWebAction:
    """A parsed action. ``element`` is the set-of-marks id (as an int string, leading zeros dropped),
    ``text`` the typed text / scroll direction / stop answer / key / url, ``enter`` the optional
    ``press_enter_after`` flag of ``type`` (recorded, never scored)."""

    kind: str
    element: str | None = None
    text: str | None = None
    enter: bool | None = None

    def format(self) -> str:
        parts = [self.kind]
        if self.element is not None:
            parts.append(f"[{self.element}]")
        if self.text is not None:
            parts.append(f"[{self.text}]")
        return " ".join(parts)


def _strip_action_text(text: str) -> str:
    t = text.strip()
    fenced = _FENCE.findall(t)
    if fenced:
        t = fenced[-1].strip()
    for _ in range(2):  # `click [3]`.  →  click [3]
        t = t.strip("`'\" \n\t")
        if t.endswith(".") and not t.endswith(".."):
            t = t[:-1]
    return t.strip()


def parse_web_action(text: str | None) -> ParsedWebAction | None:
    """Parse ``click [12]``, ``type [7] [new york city] [1]``, ``scroll [down]`` (or ``[direction=down]``),
    ``go_back``, ``stop [answer]``, ``hover [id]``, ``press [key]``, ``goto [url]``; None if not an action.

    The whole text (after removing a code fence, backticks/quotes and a final period) must be ONE
    action: free text around it is rejected rather than searched. Typed text may contain spaces and
    brackets: it is everything between the bracket after the id and the last ``]`` (minus an optional
    trailing ``[0]``/``[1]`` enter flag).
    """
    if not text:
        return None
    t = _strip_action_text(text)
    m = _ACTION_HEAD.match(t)
    if not m:
        return None
    kind, rest = m.group(1).lower(), m.group(2).strip()
    if kind not in WEB_ACTIONS:
        return None
    if kind in BARE_ACTIONS:
        return ParsedWebAction(kind) if rest in {"", "[]"} else None
    if kind in ELEMENT_ACTIONS:
        em = _ELEMENT_ARG.match(rest)
        if not em:
            return None
        element, rest = str(int(em.group(1))), em.group(2).strip()
        if kind != "type":
            return ParsedWebAction(kind, element) if rest == "" else None
        if not (rest.startswith("[") and rest.endswith("]")):
            return None
        body = rest[1:-1]  # between the first "[" and the last "]"
        enter = None
        fm = _ENTER_FLAG.match(body)
        if fm:
            body, enter = fm.group(1), fm.group(2) == "1"
        return ParsedWebAction(kind, element, body.strip(), enter)
    if not (rest.startswith("[") and rest.endswith("]")):
        return None
    arg = rest[1:-1].strip()
    if kind == "scroll":
        arg = arg.lower().removeprefix("direction=").strip()
        if arg not in {"up", "down"}:
            return None
    return ParsedWebAction(kind, None, arg)


def match_web_action(prediction: str | None, answer: str) -> Verdict:
    """Score a predicted web action against the gold one, with partial credit.

    - Wrong action type (or not an action): 0.
    - Bare actions (``go_back``, …): the type is everything: 1.
    - ``click``/``hover`` [id]: 0.5 for the type + 0.5 for the element id.
    - ``type`` [id] [text]: 1/3 type + 1/3 element id + 1/3 typed text; the text is compared after
      normalization (case, punctuation and spacing), exactly — never as a substring. The enter flag
      is ignored.
    - ``scroll``/``stop``/``press``/``goto``/``tab_focus`` [arg]: 0.5 type + 0.5 argument (normalized).
    Only a full match scores 1.0 (``Verdict.correct``).
    """
    gold = parse_web_action(answer)
    if gold is None:
        return Verdict(0.0, f"ground truth {answer!r} is not a web action")
    if prediction is None or not prediction.strip():
        return Verdict(0.0, "no answer")
    pred = parse_web_action(prediction)
    if pred is None:
        return Verdict(0.0, "prediction is not a web action")
    if pred.kind != gold.kind:
        return Verdict(0.0, f"action {pred.kind} != {gold.kind}")
    if gold.kind in BARE_ACTIONS:
        return CORRECT
    if gold.kind in ELEMENT_ACTIONS:
        id_ok = pred.element == gold.element
        if gold.kind != "type":
            return CORRECT if id_ok else Verdict(0.5, f"element {pred.element} != {gold.element}")
        text_ok = normalize_text(pred.text or "") == normalize_text(gold.text or "")
        score = (1 + int(id_ok) + int(text_ok)) / 3
        if id_ok and text_ok:
            return CORRECT
        wrong = [w for w, ok in (("element", id_ok), ("typed text", text_ok)) if not ok]
        return Verdict(score, f"{' and '.join(wrong)} differ{'s' if len(wrong) == 1 else ''}")
    arg_ok = normalize_text(pred.text or "") == normalize_text(gold.text or "")
    return CORRECT if arg_ok else Verdict(0.5, f"{gold.kind} argument differs")
