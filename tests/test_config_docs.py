"""docs/config.md is generated from the config dataclasses and must match them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mcts_engine.config import RunConfig, SearchConfig
from mcts_engine.config_docs import field_comments, render

ROOT = Path(__file__).resolve().parent.parent


def test_docs_config_md_is_current() -> None:
    page = (ROOT / "docs" / "config.md").read_text()
    assert page == render(), "docs/config.md is stale: run python scripts/gen_config_docs.py"


def test_every_section_and_field_is_in_the_page() -> None:
    page = render()
    for name in ("teacher", "search", "multiturn", "inputs", "store", "eval", "export", "train", "train.grpo"):
        assert f"\n## {name}\n" in page
    assert "| `search.early_stop` | none, solved, enough | `\"none\"` |" in page
    assert "| `teacher.system_prompt` | task, model, none or @FILE |" in page
    assert "| `teacher.top_p` | float, (0, 1] | `1.0` |" in page
    for f in SearchConfig.__dataclass_fields__:
        assert f"| `search.{f}` |" in page
    assert "| `task` |" in page and "| `teacher` |" not in page  # a section is a table, not a row


@dataclass
class _Documented:
    # two lines above,
    # joined
    a: int = 1  # and its own
    b: str = "x"
    c: float = 0.0  # only its own: a '#' inside "quotes" is not a comment start


def test_field_comments_read_the_lines_above_and_the_line_end() -> None:
    notes = field_comments(_Documented)
    assert notes == {"a": "two lines above, joined: and its own", "b": "",
                     "c": "only its own: a '#' inside \"quotes\" is not a comment start"}
    assert field_comments(RunConfig)["protocol"] == "the preset applied (--protocol), for the record"
