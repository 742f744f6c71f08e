"""A 10,000-tree report stays small and opens fast: an index row and one compact JSON line per tree, no card
pre-rendered as HTML, images linked from the run directory (not inlined). Load time itself is measured in a
browser by ``scripts/check_report.py`` (README), never asserted here."""

from __future__ import annotations

import json
from pathlib import Path

from mcts_engine.export.report import INLINE_MAX_TREES, build_report, read_page_data
from mcts_engine.testing.synthetic_runs import add_cache, make_image, make_run, rich_tree

N = 10_000
MAX_BYTES_PER_TREE = 1_600  # a 10-node tree: ~1.1 KB measured (index row + card line)


def _big_run(tmp: Path, n: int) -> Path:
    src = make_image(tmp / "data" / "a.png")
    t = rich_tree("t", "a.png")
    add_cache(t, tmp / "run", src)
    run = make_run(tmp, [])
    d = t.to_dict()
    with (run / "trees.jsonl").open("w") as fh:  # written directly: building 10,000 Tree objects is not the point
        for i in range(n):
            d["sample_id"] = d["sample"]["id"] = f"s{i:05d}"
            d["sample"]["metadata"] = {"question_type": ("depth", "position", "count")[i % 3]}
            fh.write(json.dumps(d) + "\n")
    return run


def test_ten_thousand_trees_make_a_small_page_of_data_not_markup(tmp_path: Path) -> None:
    run = _big_run(tmp_path, N)
    res = build_report(run)
    html = Path(res.path).read_text(encoding="utf-8")
    assert res.trees == N and res.samples_shown == N and not res.self_contained
    assert res.bytes < N * MAX_BYTES_PER_TREE  # ≈ 11 MB measured
    index, cards = read_page_data(html)
    assert len(index) == len(cards) == N
    assert all(c["img"] == cards["s00000"]["img"] == "images/" + Path(cards["s00000"]["img"]).name for c in cards.values())
    assert "data:image" not in html  # linked, not inlined
    assert html.count("<details") < 10 and "class=card" not in html.split("<script")[0]  # no card pre-rendered
    assert "<td>depth</td><td class=num>3334</td>" in html  # solve rate per question type covers every tree


def test_small_runs_inline_and_the_threshold_is_the_default(tmp_path: Path) -> None:
    run = _big_run(tmp_path, INLINE_MAX_TREES + 1)
    assert not build_report(run, tmp_path / "a.html").self_contained
    assert build_report(run, tmp_path / "b.html", self_contained=True).self_contained
    assert "data:image/jpeg" in (tmp_path / "b.html").read_text()
