"""The knob reference (``docs/config.md``) rendered from the config dataclasses, so it cannot drift from them.

One table per recipe section: key, type (an enum-like field's allowed values, a bounded knob's range from
``config_checks._RANGES``), default, and meaning. The meaning is the field's comment in the source: the full-line
comments directly above the field plus the comment at the end of its line (the source stays the one place
a knob is described; no ``field(metadata=...)`` copy). A section's intro is its class docstring.

``scripts/gen_config_docs.py`` writes the page; ``tests/test_config_docs.py`` fails when it is stale.
Pure: reads source text and dataclass fields, writes nothing.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import tokenize
from typing import Any, get_type_hints

from . import config as C
from . import config_checks as V

HEADER = """# Configuration reference

Generated from the config dataclasses by `scripts/gen_config_docs.py` (do not edit by hand: `tests/test_config_docs.py`
fails when this page and the code disagree). A recipe (`mcts_engine/recipes/<task>.yaml`, or your own file via
`--recipe`) sets any of these keys by section; `--set section.key=value` overrides one on the command line. An unknown
key, a value outside its allowed words, or a number outside its range is a one-line error before any work.

Adding a knob: a field with a default and a comment (its meaning here) in its section's dataclass; an enum-like one
typed `Literal[...]`, a bounded number given a row in `_RANGES` (`mcts_engine/config_checks.py`); then run the script.
"""


def _sections() -> list[tuple[str, type, str]]:
    """(key prefix, dataclass, heading) for every section, top level first."""
    from .export.linearize import ExportConfig
    from .train.config import GRPOConfig, RewardWeights, TrainConfig

    return [("", C.RunConfig, "Top level"), ("teacher", C.TeacherConfig, "teacher"), ("search", C.SearchConfig, "search"),
            ("multiturn", C.MultiTurnConfig, "multiturn"), ("eval", C.EvalConfig, "eval"),
            ("inputs", C.InputConfig, "inputs"), ("store", C.StoreConfig, "store"), ("export", ExportConfig, "export"),
            ("train", TrainConfig, "train"), ("train.grpo", GRPOConfig, "train.grpo"),
            ("train.grpo.rewards", RewardWeights, "train.grpo.rewards")]


def field_comments(cls: type) -> dict[str, str]:
    """Each field's comment text: the full-line comments right above it, then its end-of-line comment."""
    source = inspect.getsource(cls)
    comments: dict[int, tuple[str, bool]] = {}  # line → (text, whole line)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            whole = tok.line.strip().startswith("#")
            comments[tok.start[0]] = (tok.string.lstrip("#").strip(), whole)
    out: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        line = node.lineno - 1
        while line in comments and comments[line][1]:
            above.insert(0, comments[line][0])
            line -= 1
        tail = [comments[node.end_lineno][0]] if node.end_lineno in comments and not comments[node.end_lineno][1] else []
        out[node.target.id] = ": ".join(x for x in (" ".join(above), " ".join(tail)) if x)
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "\\n")


def _default(f: dataclasses.Field) -> str:
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'`"{_cell(value)}"`' if value else '`""`'
    return f"`{_cell(repr(value))}`"


def _type(prefix: str, f: dataclasses.Field, hint: Any) -> str:
    if V.choices_of(hint) is not None:
        return _cell(V.choice_text(hint))
    text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    key = f"{prefix}.{f.name}" if prefix else f.name
    if key in V._RANGES:
        low, high, open_low = V._RANGES[key]
        text += f", {V.range_text(low, high, open_low, key in V._OPEN_HIGH)}"
    return _cell(text)


def section_table(prefix: str, cls: type, heading: str, nested: set[str]) -> str:
    """One section's heading, intro and table; fields that are sections of their own are left out."""
    hints = get_type_hints(cls)
    notes = field_comments(cls)
    doc = inspect.getdoc(cls)
    own = not (doc or "").startswith(cls.__name__ + "(")  # a dataclass without a docstring gets its signature
    lines = [f"## {heading}", ""]
    if doc and own:
        lines += [" ".join(doc.split()), ""]
    lines += ["| key | type / allowed | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if key in nested:
            continue
        lines.append(f"| `{key}` | {_type(prefix, f, hints[f.name])} | {_default(f)} | {_cell(notes.get(f.name, ''))} |")
    return "\n".join(lines) + "\n"


def render() -> str:
    """The whole ``docs/config.md`` text."""
    sections = _sections()
    nested = {p for p, _, _ in sections if p}
    return HEADER + "".join("\n" + section_table(p, cls, h, nested) for p, cls, h in sections)
