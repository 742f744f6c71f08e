"""Open a report page in headless Chromium: how long until it is usable, and a screenshot.

    python scripts/check_report.py runs/NAME/report.html [--screenshot report.png]
    python scripts/check_report.py --synthetic 10000          # builds a run of N synthetic trees first

"Usable" = the page's script has parsed the index, drawn the first page of the table and rendered the first
card; the page stamps ``performance.now()`` at that moment on ``<body data-ready-ms>``, read back from the DOM
Chromium dumps. Wall time of the whole browser process (start-up included) is reported beside it.
Needs a Chromium binary: ``apt-get install chromium`` (Debian/Ubuntu), or ``pip install playwright &&
playwright install chromium`` and pass ``--chromium`` the binary it installed. A check, not a CI test.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def find_chromium(explicit: str | None) -> str:
    for name in ([explicit] if explicit else []) + ["chromium", "chromium-browser", "google-chrome", "chrome"]:
        path = shutil.which(name) if name else None
        if path:
            return path
    sys.exit("no Chromium found: apt-get install chromium, or pip install playwright && playwright install chromium "
             "(then --chromium PATH)")


def run_browser(chromium: str, args: list[str], timeout: float) -> tuple[str, float]:
    cmd = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--allow-file-access-from-files",
           "--window-size=1400,1400", *args]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return out.stdout, time.perf_counter() - t0


def synthetic_run(n: int, where: Path) -> Path:
    """A run directory of ``n`` copies of the test suite's 10-node tree (distinct ids, three question types)."""
    sys.path[:0] = [str(ROOT)]
    from mcts_engine.testing.synthetic_runs import add_cache, make_image, make_run, rich_tree

    src = make_image(where / "data" / "a.png")
    t = rich_tree("t", "a.png")
    add_cache(t, where / "run", src)
    run = make_run(where, [])
    d = t.to_dict()
    with (run / "trees.jsonl").open("w") as fh:
        for i in range(n):
            d["sample_id"] = d["sample"]["id"] = f"s{i:05d}"
            d["sample"]["metadata"] = {"question_type": ("depth", "position", "count")[i % 3]}
            fh.write(json.dumps(d) + "\n")
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", nargs="?", type=Path, help="report.html to open")
    ap.add_argument("--synthetic", type=int, help="build a synthetic run of N trees and its report first")
    ap.add_argument("--screenshot", type=Path, default=Path("report.png"))
    ap.add_argument("--chromium", help="Chromium binary (default: found on PATH)")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    chromium = find_chromium(args.chromium)
    page = args.page
    if args.synthetic:
        sys.path.insert(0, str(ROOT))
        from mcts_engine.export.report import build_report

        tmp = Path(tempfile.mkdtemp(prefix="check_report_"))
        t0 = time.perf_counter()
        res = build_report(synthetic_run(args.synthetic, tmp))
        print(f"built {res.path}: {res.trees} trees, {res.bytes / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s")
        page = Path(res.path)
    if page is None:
        ap.error("give a page or --synthetic N")
    url = page.resolve().as_uri()
    dom, wall = run_browser(chromium, ["--virtual-time-budget=60000", "--dump-dom", url], args.timeout)
    m = re.search(r'data-ready-ms="(\d+)"', dom)
    rows = len(re.findall(r"<tr data-id=", dom))
    card = 'class="card"' in dom or "class=card" in dom
    _, shot_wall = run_browser(chromium, [f"--screenshot={args.screenshot.resolve()}", "--virtual-time-budget=60000", url],
                               args.timeout)
    print(json.dumps({
        "page": str(page), "page_mb": round(page.stat().st_size / 1e6, 2),
        "ready_ms": int(m.group(1)) if m else None, "table_rows_drawn": rows, "card_rendered": card,
        "browser_wall_s": round(wall, 2), "screenshot": str(args.screenshot), "screenshot_wall_s": round(shot_wall, 2),
    }, indent=2))
    if not m or not card:
        sys.exit("the page did not become ready (script error?)")


if __name__ == "__main__":
    main()
