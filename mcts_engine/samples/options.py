"""The one parser of answer options written into a question's text (pure).

Every loader that reads options out of a question (ViGoRL JSONL, V*'s ``text``, the SAT task deciding
whether a question already lists its options) calls :func:`parse_options`. Recognised layouts, tried in
this order (the first that yields at least two options wins):

1. Lettered lines — ``(A) x``, ``A. x``, ``A) x`` or ``A: x``, one per line, letters consecutive from ``A``;
   an ``Options:`` / ``Choices:`` / ``Answer Choices:`` heading line above them is part of the block.
2. A heading — ``Options:``, ``Choices:``, ``Answer Choices:`` (any case) — followed on its line by
   inline ``A. x B. y`` / ``A) x B) y`` items, by a bracketed list of quoted items (``Choices: ['left',
   'right']``, as Python or JSON writes it), or by a list separated by commas, semicolons or "or"
   (``Choices: left, right``); or followed by bullet lines (``- x``, ``* x``, ``• x``).
3. Inline parenthesised letters anywhere — ``Where? (A) left (B) right``.
4. Inline ``A. x B. y`` / ``A) x B) y`` at the start of a line (without a heading a letter followed
   by a dot only counts where a line begins with ``A``, so "vitamin A. Then B. …" mid-sentence is
   not taken for options).

Letters are capitals, consecutive from ``A`` (``A, B, C``); a sequence that skips or repeats a letter
ends there. Fewer than two options means "no options" (``[]``): a lone ``(A)`` is not a list.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

_HEADING = r"(?:answer\s+)?(?:options|choices)\s*:"
_HEADING_LINE = re.compile(rf"^\s*{_HEADING}\s*$", re.I)
_HEADING_ANY = re.compile(rf"(?<![\w])({_HEADING})[ \t]*(.*)$", re.I | re.M)
_LETTER_LINE = re.compile(r"^\s*(?:\(([A-Z])\)|([A-Z])[.):])\s+(\S.*?)\s*$")
_BRACKETED = re.compile(r"\s*(\[.*?\])", re.S)
_PAREN_MARK = re.compile(r"\(([A-Z])\)[ \t]*")
_DOT_MARK = re.compile(r"(?:(?<=\s)|^)([A-Z])[.)][ \t]+", re.M)
_BULLET_LINE = re.compile(r"^\s*[-*•]\s+(\S.*?)\s*$")
_LIST_SPLIT = re.compile(r",|;|\bor\b")
_TRAILING = ",;."


@dataclass(frozen=True)
class OptionBlock:
    """Options found in a text: their texts in order, and where the block starts in the text
    (the heading, or the first option's marker) so a caller can keep only the question before it."""

    options: list[str]
    start: int


def _clean(text: str) -> str:
    return text.strip().rstrip(_TRAILING).strip()


def _consecutive(letters: list[str]) -> int:
    """How many of ``letters`` run A, B, C, ... from the first one (which must be A)."""
    n = 0
    for i, letter in enumerate(letters):
        if letter != chr(ord("A") + i):
            break
        n += 1
    return n


def _lettered_lines(text: str) -> OptionBlock | None:
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    i = 0
    while i < len(lines):
        m = _LETTER_LINE.match(lines[i])
        if not m or (m.group(1) or m.group(2)) != "A":
            i += 1
            continue
        options: list[str] = []
        j = i
        while j < len(lines):
            mj = _LETTER_LINE.match(lines[j])
            if not mj or (mj.group(1) or mj.group(2)) != chr(ord("A") + len(options)):
                break
            options.append(_clean(mj.group(3)))
            j += 1
        if len(options) >= 2 and all(options):
            return OptionBlock(options, offsets[i - 1] if i > 0 and _HEADING_LINE.match(lines[i - 1]) else offsets[i])
        i = max(j, i + 1)
    return None


def _inline(text: str, marks: re.Pattern[str], line_start_only: bool) -> OptionBlock | None:
    """Markers with letters consecutive from A: option i is the text after marker i up to the next marker
    or the end of its line (so ``Options: (A) x`` then ``(B) y`` on the next line works too)."""
    found = list(marks.finditer(text))
    for k, first in enumerate(found):
        if first.group(1) != "A":
            continue
        if line_start_only and text[text.rfind("\n", 0, first.start()) + 1 : first.start()].strip():
            continue
        n = _consecutive([m.group(1) for m in found[k:]])
        if n < 2:
            continue
        seq = found[k : k + n]
        ends = [m.start() for m in seq[1:]] + [len(text)]
        options = []
        for m, end in zip(seq, ends):
            newline = text.find("\n", m.end(), end)
            options.append(_clean(text[m.end() : newline if newline != -1 else end]))
        if all(options):
            return OptionBlock(options, first.start())
    return None


def _bracketed(text: str) -> list[str] | None:
    """A list literal at the start of ``text`` (``['left', 'right']``; it may span lines), as its items."""
    m = _BRACKETED.match(text)
    if not m:
        return None
    try:
        value = ast.literal_eval(m.group(1))
    except (ValueError, SyntaxError):
        return None
    if isinstance(value, (list, tuple)) and len(value) >= 2 and all(isinstance(v, (str, int, float)) for v in value):
        items = [_clean(str(v)) for v in value]
        return items if all(items) else None
    return None


def _after_heading(text: str) -> OptionBlock | None:
    for m in _HEADING_ANY.finditer(text):
        rest = m.group(2)
        if rest.strip():
            tail = text[m.start(2) :]  # lettered items right after the heading (they may go on below)
            listed = _bracketed(tail)
            if listed is not None:
                return OptionBlock(listed, m.start(1))
            for marks in (_DOT_MARK, _PAREN_MARK):
                inline = _inline(tail, marks, line_start_only=False)
                if inline is not None and inline.start == 0:
                    return OptionBlock(inline.options, m.start(1))
            body = rest.strip()
            if body.startswith("[") and body.endswith("]"):  # an unquoted bracketed list: [x, y]
                body = body[1:-1]
            parts = [_clean(p) for p in _LIST_SPLIT.split(body)]
            parts = [p for p in parts if p]
            if len(parts) >= 2:
                return OptionBlock(parts, m.start(1))
            continue
        following = text[m.end() :].lstrip("\r\n").splitlines()
        bullets = []
        for line in following:
            b = _BULLET_LINE.match(line)
            if not b:
                break
            bullets.append(_clean(b.group(1)))
        if len(bullets) >= 2 and all(bullets):
            return OptionBlock(bullets, m.start(1))
    return None


def parse_options(text: str) -> OptionBlock | None:
    """The options listed in ``text`` (see the module docstring for the layouts), or None."""
    return (
        _lettered_lines(text)
        or _after_heading(text)
        or _inline(text, _PAREN_MARK, line_start_only=False)
        or _inline(text, _DOT_MARK, line_start_only=True)
    )


def split_options(text: str) -> list[str]:
    """The option texts listed in ``text``; ``[]`` if it lists fewer than two."""
    block = parse_options(text)
    return block.options if block is not None else []


def question_stem(text: str) -> str:
    """``text`` without its options block (and whatever follows it), stripped."""
    block = parse_options(text)
    return (text[: block.start] if block is not None else text).strip()


__all__ = ["OptionBlock", "parse_options", "split_options", "question_stem"]
