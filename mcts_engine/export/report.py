"""One self-contained offline HTML report of a run (an I/O edge): no server, no script, no network.

Contents: run statistics (trees, solve rate, teacher calls and tokens summed from each tree's
``stats``, ``stats.json``), histograms (answer depth, branching = children per expanded node, root
value), failure reasons (``failures.jsonl``), step rejection reasons (``Tree.rejected``), unreadable
records; then, for the first ``limit`` samples, the image in the teacher's frame with the numbered
points of the best chain drawn on it (PIL; JPEG data URI), the chain text, the verifier's verdict and the
whole tree as nested ``<details>`` (visits, Q, point, text; the best path unfolded).

The best chain is the exporter's ``best`` chain (verified-correct, all steps in frame); without one,
the highest-value valid path is shown and labelled as such.

Multi-turn trees (steps carrying an environment observation) show the chain turn by turn instead: for
each zoom, the full frame with that turn's point (numbered) and the crop's region outlined, beside the
crop the environment returned (read from the run's ``images/``), and the turn's text with its tool call;
then the answer turn.
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ..grounding import Point, format_chain
from ..search.tree import Node, Tree
from ..store import RunStore
from ..input_checks import open_bounded
from .formats import frame_image, image_root_for, run_file, run_inputs, sample_from_record
from .linearize import ExportConfig, Linearizer, PathInfo

MARK = (230, 30, 30)  # point marker colour (tests look for it)
LINE = (255, 210, 0)
CROP_BOX = (0, 200, 90)  # outline of a multi-turn crop's region on the full image
DISPLAY_MAX = 768  # longest side of an embedded image, pixels
TURN_MAX = 384  # longest side of each multi-turn thumbnail (full image and crop)


@dataclass
class ReportResult:
    path: str
    trees: int
    samples_shown: int
    solved: int
    bytes: int


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------


def _font(r: int) -> Any:
    try:
        return ImageFont.load_default(size=max(10, 2 * r + 2))
    except Exception:  # a Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _disc(d: ImageDraw.ImageDraw, point: Point, r: int, label: str, font: Any) -> None:
    """A numbered red disc at ``point``."""
    x, y = point
    d.ellipse([x - r, y - r, x + r, y + r], fill=MARK, outline=(255, 255, 255), width=max(1, r // 4))
    tx, ty = x + r + 2, y - 2 * r - 2
    box = d.textbbox((tx, ty), label, font=font)
    d.rectangle([box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1], fill=(0, 0, 0))
    d.text((tx, ty), label, fill=(255, 255, 255), font=font)


def draw_points(img: Image.Image, points: list[Point], boxes: list[list[float]] | None = None) -> Image.Image:
    """The image (already in the frame the points live in) with ``points`` drawn as numbered red
    discs joined in order, and annotated ``boxes`` (frame coords) as cyan outlines."""
    out = img.convert("RGB").copy()
    d = ImageDraw.Draw(out)
    r = max(4, min(out.size) // 50)
    font = _font(r)
    for b in boxes or []:
        d.rectangle([b[0], b[1], b[2], b[3]], outline=(0, 190, 255), width=max(1, r // 3))
    for a, b in zip(points, points[1:]):
        d.line([a, b], fill=LINE, width=max(1, r // 3))
    for i, p in enumerate(points, start=1):
        _disc(d, p, r, str(i), font)
    return out


def draw_zoom(img: Image.Image, point: Point, box: list[int] | None, index: int) -> Image.Image:
    """The full frame with one zoom: the crop's region (xyxy, x2/y2 exclusive) outlined in green and
    the point as the red disc numbered ``index``."""
    out = img.convert("RGB").copy()
    d = ImageDraw.Draw(out)
    r = max(4, min(out.size) // 50)
    if box and len(box) == 4:
        d.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=CROP_BOX, width=max(2, r // 2))
    _disc(d, point, r, str(index), _font(r))
    return out


def data_uri(img: Image.Image, quality: int = 88, max_side: int = DISPLAY_MAX) -> str:
    if max(img.size) > max_side:
        s = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


class RunStats:
    def __init__(self) -> None:
        self.trees = 0
        self.solved = 0
        self.nodes = 0
        self.answer_depth: Counter[int] = Counter()
        self.branching: Counter[int] = Counter()
        self.root_value: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.tree_stats: dict[str, float] = {}
        self.bad_records: list[str] = []
        self.tasks: Counter[str] = Counter()

    def add(self, tree: Tree, solved: bool) -> None:
        self.trees += 1
        self.solved += int(solved)
        self.nodes += len(tree.nodes)
        self.tasks[tree.task] += 1
        for n in tree.nodes:
            if n.kind == "answer":
                self.answer_depth[n.depth] += 1
            if n.expanded or n.children:
                self.branching[len(n.children)] += 1
        q = tree.root.q
        lo = min(int(q * 10), 9) / 10
        self.root_value[f"{lo:.1f}–{lo + 0.1:.1f}"] += 1
        for rej in tree.rejected:
            self.rejected[str(rej.get("reason", "?"))[:120]] += 1
        _sum_into(self.tree_stats, tree.stats, "")


def _sum_into(acc: dict[str, float], d: dict[str, Any], prefix: str) -> None:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            acc[key] = acc.get(key, 0) + v
        elif isinstance(v, dict):
            _sum_into(acc, v, key + ".")


# --------------------------------------------------------------------------------------------
# HTML pieces
# --------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:6px 0}td,th{padding:2px 10px;border-bottom:1px solid #eee;text-align:left}
.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{background:#4a7fd4;height:12px;display:inline-block;vertical-align:middle}
.sample{border:1px solid #ddd;border-radius:6px;padding:12px;margin:16px 0}
.sample img{max-width:100%;border:1px solid #ccc}
.row{display:flex;gap:16px;flex-wrap:wrap}.col{flex:1 1 420px;min-width:320px}
pre{white-space:pre-wrap;background:#f6f6f6;padding:8px;border-radius:4px}
.ok{color:#137a2a;font-weight:600}.bad{color:#b3261e;font-weight:600}.muted{color:#777}
details{margin-left:14px}summary{cursor:pointer}
.node-ok{color:#137a2a}.node-bad{color:#b3261e}.best>summary{background:#fff6c4}
.turn{display:flex;gap:12px;align-items:flex-start;flex-wrap:wrap;border-top:1px dashed #ddd;padding:8px 0}
.turn figure{margin:0}.turn figcaption{font-size:12px;color:#777}.turn img{max-width:384px}
.turn pre{flex:1 1 300px;margin:0}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _table(rows: list[tuple[Any, Any]], head: tuple[str, str] | None = None) -> str:
    h = f"<tr><th>{_e(head[0])}</th><th>{_e(head[1])}</th></tr>" if head else ""
    body = "".join(f"<tr><td>{_e(a)}</td><td class=num>{_e(b)}</td></tr>" for a, b in rows)
    return f"<table>{h}{body}</table>"


def _histogram(title: str, counts: dict[Any, int]) -> str:
    if not counts:
        return f"<h3>{_e(title)}</h3><p class=muted>no data</p>"
    top = max(counts.values())
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td class=num>{v}</td><td><span class=bar style='width:{max(1, round(300 * v / top))}px'></span></td></tr>"
        for k, v in sorted(counts.items(), key=lambda kv: (isinstance(kv[0], str), kv[0]))
    )
    return f"<h3>{_e(title)}</h3><table>{rows}</table>"


def _node_line(n: Node, correct: bool | None) -> str:
    bits = [f"#{n.id}", n.kind]
    if n.source not in ("root", "expand"):
        bits.append(n.source)
    bits.append(f"Q {n.q:.2f}")
    bits.append(f"N {n.visits}")
    if n.point is not None:
        bits.append(f"({n.point[0]}, {n.point[1]})")
    text = n.thought or ""
    if n.kind == "answer":
        mark = "✓" if correct else ("✗" if correct is False else "?")
        text = f"{text} → {n.answer!r} {mark}".strip()
    if len(text) > 160:
        text = text[:157] + "…"
    cls = " class=node-ok" if correct else (" class=node-bad" if correct is False else "")
    return f"<span{cls}>{_e(' · '.join(bits))}</span> {_e(text)}"


def _tree_html(tree: Tree, correct: dict[int, bool | None], best: set[int]) -> str:
    def rec(n: Node) -> str:
        kids = "".join(rec(tree.nodes[c]) for c in n.children)
        line = _node_line(n, correct.get(n.id)) if n.parent is not None else f"root · Q {n.q:.2f} · N {n.visits}"
        attrs = (" open" if (n.id in best or n.parent is None) else "") + (" class=best" if n.id in best else "")
        if not kids:
            return f"<details{attrs}><summary>{line}</summary></details>"
        return f"<details{attrs}><summary>{line}</summary>{kids}</details>"

    return rec(tree.root)


def _sample_html(tree: Tree, lin: Linearizer, task: Any, config: dict[str, Any], image_root: str | None, run_dir: Path) -> str:
    ranked = lin.correct_paths()
    shown: PathInfo | None = ranked[0] if ranked else None
    label = "best verified-correct chain"
    if shown is None:
        valid = sorted(lin.paths(), key=PathInfo.rank_key)
        shown = valid[0] if valid else None
        label = "no verified-correct chain: highest-value valid path" if shown else "no valid path"
    points = [s.frame_point for s in shown.steps] if shown else []
    # image
    try:
        img = frame_image(tree, image_root_for(tree.sample, config, image_root), run_dir, run_inputs(config))
        boxes = []
        try:
            boxes = [b["bbox"] for b in task.hint_boxes(sample_from_record(tree.sample), tree.frame)] if task else []
        except Exception:
            boxes = []
        img_html = f"<img alt='sample {_e(tree.sample_id)}' src='{data_uri(draw_points(img, points, boxes))}'>"
    except Exception as exc:
        img_html = f"<p class=bad>image unavailable: {_e(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}</p>"
    # chain + verdict
    mt_turns = [tree.nodes[nid] for nid in shown.nodes if tree.nodes[nid].observation] if shown else []
    if shown is not None:
        chain = format_chain([s.text for s in shown.steps], shown.answer)
        leaf = tree.nodes[shown.leaf]
        verdict = ""
        if task is not None:
            try:
                v = task.verify(leaf.answer, tree.truth)
                verdict = f" ({v.reason})" if v.reason else ""
            except Exception as exc:
                verdict = f" (verifier error: {type(exc).__name__})"
        ok = lin.correct.get(leaf.id)
        mark = "<span class=ok>✓ correct</span>" if ok else ("<span class=bad>✗ wrong</span>" if ok is False else "<span class=muted>unverified</span>")
        verdict_html = f"<p>Answer {_e(repr(shown.answer))}: {mark}{_e(verdict)} · truth {_e(repr(tree.truth.get('answer', '?')))} · path value {shown.value:.2f}</p>"
        chain_html = f"<p class=muted>{_e(label)}</p><pre>{_e(chain)}</pre>"
        if mt_turns:
            chain_html = f"<p class=muted>{_e(label)}: {len(mt_turns)} zoom turn(s), crops below</p>"
        best_nodes = set(shown.nodes)
    else:
        verdict_html, chain_html, best_nodes = f"<p class=bad>{_e(label)}</p>", "", set()
    d = lin.difficulty()
    head = (
        f"<h3>{_e(tree.sample_id)} <span class=muted>· {_e(tree.task)} · {len(tree.nodes)} nodes · "
        f"root Q {d.root_value:.2f} · {d.correct}/{d.verified} correct leaves · "
        f"{'solved' if d.solved else 'unsolved'} · frame {tree.frame.width}×{tree.frame.height} "
        f"(orig {tree.frame.orig_width}×{tree.frame.orig_height})</span></h3>"
    )
    question = tree.prompt.get("user") or tree.sample.get("question", "")
    rejected = f"<p class=muted>{len(tree.rejected)} rejected step(s)</p>" if tree.rejected else ""
    turns_html = ""
    if mt_turns and shown is not None:
        turns_html = _turns_html(tree, mt_turns, tree.nodes[shown.leaf], image_root, config, run_dir)
    return (
        f"<div class=sample id='s-{_e(tree.sample_id)}'>{head}<div class=row><div class=col>{img_html}</div>"
        f"<div class=col><p><b>Question</b></p><pre>{_e(question)}</pre>{chain_html}{verdict_html}{rejected}</div></div>"
        f"{turns_html}"
        f"<details><summary>search tree</summary>{_tree_html(tree, lin.correct, best_nodes)}</details></div>"
    )


def _turns_html(tree: Tree, turns: list[Node], leaf: Node, image_root: str | None, config: dict[str, Any], run_dir: Path) -> str:
    """Multi-turn: each zoom turn as [full frame with its point and crop region] [the crop] [the turn's text]."""
    try:
        full: Image.Image | None = frame_image(tree, image_root_for(tree.sample, config, image_root), run_dir, run_inputs(config))
    except Exception:
        full = None
    rows = []
    for i, n in enumerate(turns, start=1):
        obs = n.observation or {}
        point = n.point or tuple(obs.get("point") or (0, 0))
        box = [int(v) for v in obs.get("box") or []]
        if full is not None:
            left = (f"<figure><img alt='turn {i}: full image' src='{data_uri(draw_zoom(full, point, box, i), max_side=TURN_MAX)}'>"
                    f"<figcaption>turn {i}: ({point[0]}, {point[1]}) · region {box}</figcaption></figure>")
        else:
            left = "<p class=bad>image unavailable</p>"
        rec = obs.get("image") or {}
        try:
            name = str(rec.get("file", ""))
            with open_bounded(run_file(run_dir, name), run_inputs(config).max_image_pixels, name) as im:
                crop = im.convert("RGB")
            right = (f"<figure><img class=crop alt='turn {i}: crop' src='{data_uri(crop, max_side=TURN_MAX)}'>"
                     f"<figcaption>crop {crop.width}×{crop.height} ({_e(rec.get('file', ''))})</figcaption></figure>")
        except Exception:
            right = f"<p class=bad>crop unavailable: {_e(rec.get('file', '?'))}</p>"
        text = f"{n.text.strip()}\n\n{obs.get('text', '')}"
        rows.append(f"<div class=turn>{left}{right}<pre>{_e(text)}</pre></div>")
    rows.append(f"<div class=turn><pre>{_e(leaf.text.strip())}</pre></div>")
    return f"<details open><summary>turns ({len(turns)} zooms)</summary>{''.join(rows)}</details>"


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def build_report(run: str | Path, out: str | Path | None = None, limit: int = 50, image_root: str | None = None) -> ReportResult:
    """Write the report (default ``RUN/report.html``); returns where and what it holds."""
    from ..tasks import get_task

    store = RunStore.open_existing(run)
    config = store.config()
    cfg = config.get("config", {}) if isinstance(config, dict) else {}
    options = dict(cfg.get("task_options") or {})
    stats = RunStats()
    tasks: dict[str, Any] = {}
    sections: list[str] = []
    view_cfg = ExportConfig(min_steps=0)
    for tree, err in store.iter_trees():
        if err or tree is None:
            stats.bad_records.append(err or "unreadable tree")
            continue
        if tree.task not in tasks:
            try:
                tasks[tree.task] = get_task(tree.task, options)
            except KeyError:
                tasks[tree.task] = None
        task = tasks[tree.task]

        def verify(answer: str | None, task: Any = task, truth: dict[str, Any] = tree.truth) -> bool:
            return bool(task.verify(answer, truth).correct)

        try:
            lin = Linearizer(tree, view_cfg, verify if task is not None else None,
                             task.backtrack_sentence if task is not None else "")
            solved = lin.difficulty().solved
        except Exception:  # a verifier that cannot read this truth: fall back to the stored flags
            lin = Linearizer(tree, view_cfg, None)
            solved = lin.difficulty().solved
        stats.add(tree, solved)
        if len(sections) < limit:
            sections.append(_sample_html(tree, lin, task, config, image_root, store.path))
    failures = Counter(str(f.get("reason", "?"))[:160] for f in store.failures())
    html_text = _page(store, config, stats, failures, sections, limit)
    path = Path(out) if out else store.path / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_text, encoding="utf-8")
    return ReportResult(str(path), stats.trees, len(sections), stats.solved, len(html_text.encode("utf-8")))


def _page(store: RunStore, config: dict[str, Any], stats: RunStats, failures: Counter, sections: list[str], limit: int) -> str:
    cfg = config.get("config", {}) if isinstance(config, dict) else {}
    teacher = cfg.get("teacher", {}) or {}
    rate = stats.solved / stats.trees if stats.trees else 0.0
    overview = [
        ("trees", stats.trees),
        ("solved", f"{stats.solved} ({rate:.1%})"),
        ("nodes (all trees)", stats.nodes),
        ("failed attempts (failures.jsonl)", sum(failures.values())),
        ("unreadable tree lines", len(stats.bad_records)),
        ("tasks", ", ".join(f"{k} ({v})" for k, v in stats.tasks.items()) or "-"),
        ("teacher", "sim (scripted simulator, not a model)" if teacher.get("kind") == "sim"
         else f"{teacher.get('kind', '?')} · {teacher.get('model', '?')}"),
        ("config hash", config.get("hash", "?")),
    ]
    tree_stats = [(k, _fmt(v)) for k, v in sorted(stats.tree_stats.items())]
    run_stats = [(k, _fmt(v)) for k, v in sorted(_flat(store.stats()).items())]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>mcts-engine report · {_e(store.path.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Run <code>{_e(store.path.name)}</code></h1>",
        f"<p class=muted>generated {time.strftime('%Y-%m-%d %H:%M:%S')} from {_e(store.path)}</p>",
        "<h2>Overview</h2>", _table(overview),
        "<h2>Calls and tokens (summed over trees)</h2>", _table(tree_stats) if tree_stats else "<p class=muted>no per-tree stats</p>",
    ]
    if run_stats:
        parts += ["<details><summary>stats.json</summary>", _table(run_stats), "</details>"]
    parts += [
        "<h2>Shape of the search</h2><div class=row><div class=col>",
        _histogram("depth of answer nodes (1 = answered at once)", dict(stats.answer_depth)),
        "</div><div class=col>",
        _histogram("branching (children per expanded node)", dict(stats.branching)),
        "</div><div class=col>",
        _histogram("root value", dict(stats.root_value)),
        "</div></div>",
        "<h2>Failures</h2>",
        _table(failures.most_common(30), ("failure reason", "count")) if failures else "<p class=muted>no failed attempts</p>",
        _table(stats.rejected.most_common(30), ("rejected step reason", "count")) if stats.rejected else "",
    ]
    if stats.bad_records:
        parts.append("<p class=bad>Unreadable records:</p><pre>" + _e("\n".join(stats.bad_records[:50])) + "</pre>")
    more = f" (first {limit} of {stats.trees})" if stats.trees > len(sections) else ""
    parts += [f"<h2>Samples{_e(more)}</h2>", *sections, "</body></html>"]
    return "\n".join(parts)


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.3f}"


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[prefix + k] = v
        elif isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
    return out
