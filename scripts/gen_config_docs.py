#!/usr/bin/env python
"""Write ``docs/config.md``, the knob reference, from the config dataclasses (``mcts_engine/config_docs.py``).

Usage: ``python scripts/gen_config_docs.py`` (writes the page) or ``--check`` (exit 1 when the page is stale).
Run it after adding or changing a config field or its comment; ``tests/test_config_docs.py`` fails until you do.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcts_engine.config_docs import render  # noqa: E402

PAGE = ROOT / "docs" / "config.md"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = PAGE.read_text() if PAGE.exists() else ""
        if current != text:
            print(f"{PAGE.relative_to(ROOT)} is stale: run python scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
