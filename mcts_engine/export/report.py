"""The HTML report of a run (an I/O edge): one offline page (no server, no network) that opens fast at
10,000 trees.

What the page holds: run statistics (trees, solve rate, calls and tokens summed over each tree's ``stats``,
``stats.json``), histograms (answer depth, branching, root value), solve rate per question type, failures
grouped by kind (``mcts_engine.failures``: reason without the sample id, count, one example id), step
rejection reasons, a colour legend; then an index table of every tree (id, question type, solved, root value,
depth, nodes, the verdict of the search's pick) with filters (unsolved, wrong, solved, question type, text
search), sorting and pages; clicking a row renders that sample's card on demand (the image in the teacher's
frame with the numbered points of the best chain, the chain, the verdict, the whole tree; multi-turn runs:
each zoom turn beside its crop) from one line of embedded compact JSON — nothing is pre-rendered per tree.

Images: referenced from the run directory (``RUN/images/``, written by ``generate``; else the sample's own
file), relative to where the page is written, unless ``self_contained`` — then inlined as JPEG data URIs
(default: inlined for runs of at most ``INLINE_MAX_TREES`` trees, referenced above that).

The best chain is the exporter's ``best`` chain (verified-correct, all steps in frame); without one, the
highest-value valid path is shown and labelled as such. The page's script and style: ``report_assets``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ..failures import group_failures, open_failures
from ..grounding import Point, format_chain
from ..samples.bounds import confine, open_bounded
from ..search.tree import Node, Tree
from ..store import RunStore
from .config import ExportConfig
from .images import frame_image, image_root_for, run_file, run_inputs
from .items import PathInfo
from .linearize import Linearizer
from .report_assets import CSS, JS
from .run import sample_from_record

MARK = (230, 30, 30)  # point marker colour (tests look for it)
LINE = (255, 210, 0)
DISPLAY_MAX = 768  # longest side of an embedded image, pixels
TURN_MAX = 384  # longest side of each multi-turn thumbnail (full image and crop)
INLINE_MAX_TREES = 100  # runs up to this size inline their images by default (self-contained page)
NODE_TEXT_MAX = 160  # characters of a node's text in the tree view
QUESTION_TYPE_KEYS = ("question_type", "sub_task", "category", "ui_type", "platform", "data_type")


@dataclass
class ReportResult:
    path: str
    trees: int
    samples_shown: int  # cards available on the page (every tree, up to --limit)
    solved: int
    bytes: int
    self_contained: bool = False


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
        self.by_type: dict[str, list[int]] = {}  # question type → [trees, solved]

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
# One tree → its index row and its card (plain data; the page's script renders them)
# --------------------------------------------------------------------------------------------


def question_type(tree: Tree) -> str:
    """The sample's question type for the per-type solve rate: the first of :data:`QUESTION_TYPE_KEYS` found in
    the sample record or its metadata, else the task name."""
    rec = tree.sample or {}
    meta = rec.get("metadata") or {}
    for key in QUESTION_TYPE_KEYS:
        for where in (meta, rec):
            v = where.get(key) if isinstance(where, dict) else None
            if v not in (None, ""):
                return str(v)
    return tree.task


def search_pick(tree: Tree) -> Node | None:
    """The answer the search itself would give: from the root, the most-visited child (ties: higher Q) down
    to an answer node; None when that walk ends without one."""
    n = tree.root
    while n.kind != "answer":
        if not n.children:
            return None
        n = max((tree.nodes[c] for c in n.children), key=lambda c: (c.visits, c.q))
    return n


def index_row(tree: Tree, lin: Linearizer, solved: bool) -> list[Any]:
    pick = search_pick(tree)
    verdict = lin.correct.get(pick.id) if pick is not None else None
    question = str(tree.sample.get("question") or tree.prompt.get("user") or "")
    return [tree.sample_id, question_type(tree), bool(solved), round(tree.root.q, 3),
            max((n.depth for n in tree.nodes), default=0), len(tree.nodes),
            1 if verdict is True else 0 if verdict is False else -1, question[:120]]


@lru_cache(maxsize=65536)
def _href(path: Path, page_dir: Path) -> str:
    """A relative URL from the page to ``path`` (forward slashes, spaces etc. escaped)."""
    from urllib.parse import quote

    return quote(os.path.relpath(os.path.abspath(path), os.path.abspath(page_dir)).replace(os.sep, "/"))


def _image_ref(tree: Tree, config: dict[str, Any], image_root: str | None, run_dir: Path, page_dir: Path | None) -> str:
    """Where the card's frame image comes from: a relative link (``page_dir``), else a JPEG data URI. Only
    files inside the run directory (cached frames) or the image root (sources) are linked or read."""
    root, inputs = image_root_for(tree.sample, config, image_root), run_inputs(config)
    if page_dir is not None:
        if tree.images:
            f = run_file(run_dir, str(tree.images[0].get("file", "")))
            if f.is_file():
                return _href(f, page_dir)
        src = str((tree.sample.get("images") or [""])[0])
        if src and not src.startswith("bytes:"):
            p = confine(src, root if root is not None else ".", inputs.allow_outside_root)
            if p.is_file():
                return _href(p, page_dir)
    return data_uri(frame_image(tree, root, run_dir, inputs))


def _crop_ref(rec: dict[str, Any], run_dir: Path, page_dir: Path | None, max_pixels: int) -> str | None:
    name = str(rec.get("file", ""))
    path = run_file(run_dir, name)
    if not path.is_file():
        return None
    if page_dir is not None:
        return _href(path, page_dir)
    with open_bounded(path, max_pixels, name) as im:
        return data_uri(im.convert("RGB"), max_side=TURN_MAX)


def card(tree: Tree, lin: Linearizer, task: Any, config: dict[str, Any], image_root: str | None, run_dir: Path,
         page_dir: Path | None) -> dict[str, Any]:
    """Everything one sample's card shows, as compact JSON-ready data (``page_dir`` None: images inlined)."""
    ranked = lin.correct_paths()
    shown: PathInfo | None = ranked[0] if ranked else None
    label = "best verified-correct chain"
    if shown is None:
        valid = sorted(lin.paths(), key=PathInfo.rank_key)
        shown = valid[0] if valid else None
        label = "no verified-correct chain: highest-value valid path" if shown else "no valid path"
    d = lin.difficulty()
    c: dict[str, Any] = {
        "id": tree.sample_id, "task": tree.task, "qtype": question_type(tree),
        "q": str(tree.prompt.get("user") or tree.sample.get("question", "")),
        "truth": tree.truth.get("answer", "?"), "frame": [tree.frame.width, tree.frame.height],
        "orig": [tree.frame.orig_width, tree.frame.orig_height], "label": label, "n": len(tree.nodes),
        "rootq": round(d.root_value, 3), "nc": d.correct, "nv": d.verified, "solved": bool(d.solved),
        "rejected": len(tree.rejected), "chain": None, "points": [], "boxes": [], "best": [],
    }
    try:
        c["img"] = _image_ref(tree, config, image_root, run_dir, page_dir)
    except Exception as exc:  # a missing or unreadable image: the card says so
        c["img"], c["img_error"] = None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    try:
        c["boxes"] = [[round(v, 1) for v in b["bbox"]] for b in task.hint_boxes(sample_from_record(tree.sample), tree.frame)] if task else []
    except Exception:
        c["boxes"] = []
    if shown is not None:
        leaf = tree.nodes[shown.leaf]
        reason = ""
        if task is not None:
            try:
                reason = task.verify(leaf.answer, tree.truth).reason or ""
            except Exception as exc:
                reason = f"verifier error: {type(exc).__name__}"
        c.update(chain=format_chain([s.text for s in shown.steps], shown.answer), answer=shown.answer,
                 ok=lin.correct.get(leaf.id), reason=reason, value=round(shown.value, 3),
                 points=[list(s.frame_point) for s in shown.steps], best=list(shown.nodes), last=leaf.text.strip())
        turns = [tree.nodes[nid] for nid in shown.nodes if tree.nodes[nid].observation]
        if turns:
            c["turns"] = [_turn(n, run_dir, page_dir, run_inputs(config).max_image_pixels) for n in turns]
    c["tree"] = [_node_row(n, lin.correct.get(n.id)) for n in tree.nodes]
    return c


def _turn(n: Node, run_dir: Path, page_dir: Path | None, max_pixels: int) -> dict[str, Any]:
    obs = n.observation or {}
    rec = obs.get("image") or {}
    point = list(n.point or tuple(obs.get("point") or (0, 0)))
    try:
        crop = _crop_ref(rec, run_dir, page_dir, max_pixels)
    except Exception:
        crop = None
    size = f"{rec.get('width')}×{rec.get('height')} ({rec.get('file', '')})" if rec else ""
    return {"p": point, "box": [int(v) for v in obs.get("box") or []], "crop": crop, "size": size,
            "text": f"{n.text.strip()}\n\n{obs.get('text', '')}"}


def _node_row(n: Node, correct: bool | None) -> list[Any]:
    """``[id, parent (-1: root), kind, x, y, visits, Q, verdict (1/0/-1), text]`` of one node."""
    text = n.thought or ""
    if n.kind == "answer":
        text = f"{text} → {n.answer!r}".strip()
    if n.source not in ("root", "expand"):
        text = f"[{n.source}] {text}"
    if len(text) > NODE_TEXT_MAX:
        text = text[: NODE_TEXT_MAX - 1] + "…"
    x, y = (n.point if n.point is not None else (None, None))
    return [n.id, -1 if n.parent is None else n.parent, n.kind, x, y, n.visits, round(n.q, 3),
            1 if correct is True else 0 if correct is False else -1, text]


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def build_report(run: str | Path, out: str | Path | None = None, limit: int | None = None, image_root: str | None = None,
                 self_contained: bool | None = None) -> ReportResult:
    """Write the report (default ``RUN/report.html``); returns where and what it holds. ``limit``: at most that
    many trees on the page (statistics still cover every tree); ``self_contained``: inline the images (default:
    only for runs of at most :data:`INLINE_MAX_TREES` trees)."""
    from ..tasks import get_task

    store = RunStore.open_existing(run)
    config = store.config()
    cfg = config.get("config", {}) if isinstance(config, dict) else {}
    options = dict(cfg.get("task_options") or {})
    path = Path(out) if out else store.path / "report.html"
    if self_contained is None:
        self_contained = sum(1 for _ in store.iter_records()) <= INLINE_MAX_TREES
    page_dir = None if self_contained else path.parent
    stats = RunStats()
    tasks: dict[str, Any] = {}
    index: list[list[Any]] = []
    cards: list[str] = []
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
        stats.by_type.setdefault(question_type(tree), [0, 0])
        stats.by_type[question_type(tree)][0] += 1
        stats.by_type[question_type(tree)][1] += int(solved)
        if limit is None or len(cards) < limit:
            index.append(index_row(tree, lin, solved))
            cards.append(_json_line(card(tree, lin, task, config, image_root, store.path, page_dir)))
    groups = group_failures(open_failures(store.failures(), store.finished_ids()))
    html_text = _page(store, config, stats, groups, index, cards, self_contained)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html_text, encoding="utf-8")
    tmp.replace(path)
    return ReportResult(str(path), stats.trees, len(cards), stats.solved, len(html_text.encode("utf-8")), self_contained)


def read_page_data(html_text: str) -> tuple[list[list[Any]], dict[str, dict[str, Any]]]:
    """The index rows and the cards (by sample id) embedded in a report page (tests, ``scripts/check_report.py``)."""
    def block(name: str) -> str:
        start = html_text.index(f"id={name}>") + len(f"id={name}>")
        return html_text[start:html_text.index("</script>", start)]

    index = json.loads(block("index"))
    cards = [json.loads(line) for line in block("cards").split("\n") if line]
    return index, {c["id"]: c for c in cards}


def _json_line(obj: Any) -> str:
    """Compact JSON on one line, safe inside a ``<script>`` block (``</`` escaped)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")


def _e(x: Any) -> str:
    return html.escape(str(x))


def _table(rows: list[tuple[Any, ...]], head: tuple[str, ...] | None = None) -> str:
    h = "<tr>" + "".join(f"<th>{_e(x)}</th>" for x in head) + "</tr>" if head else ""
    body = "".join("<tr>" + f"<td>{_e(r[0])}</td>" + "".join(f"<td class=num>{_e(x)}</td>" for x in r[1:]) + "</tr>" for r in rows)
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


LEGEND = (
    ("#e61e1e", "numbered disc: a point of the shown chain, in order"),
    ("#ffd200", "yellow line: the order of the points"),
    ("#00beff", "cyan box: an annotated region of the sample"),
    ("#00c85a", "green box: a multi-turn crop's region"),
    ("#137a2a", "green text / ✓: verified correct"),
    ("#b3261e", "red text / ✗: verified wrong (? unverified)"),
    ("#fff6c4", "highlight: the shown path in the search tree; the open card's row"),
)


def _by_type(stats: RunStats) -> str:
    rows = []
    for t, (n, ok) in sorted(stats.by_type.items(), key=lambda kv: (-kv[1][0], kv[0])):
        rate = ok / n if n else 0.0
        rows.append(f"<tr><td>{_e(t)}</td><td class=num>{n}</td><td class=num>{ok}</td><td class=num>{rate:.1%}</td>"
                    f"<td><span class=bar style='width:{max(1, round(200 * rate))}px'></span></td></tr>")
    return "<table><tr><th>question type</th><th>trees</th><th>solved</th><th>solve rate</th><th></th></tr>" + "".join(rows) + "</table>"


def _page(store: RunStore, config: dict[str, Any], stats: RunStats, groups: list[Any], index: list[list[Any]],
          cards: list[str], self_contained: bool) -> str:
    cfg = config.get("config", {}) if isinstance(config, dict) else {}
    teacher = cfg.get("teacher", {}) or {}
    rate = stats.solved / stats.trees if stats.trees else 0.0
    failed = sum(g.count for g in groups)
    overview = [
        ("trees", stats.trees),
        ("solved", f"{stats.solved} ({rate:.1%})"),
        ("nodes (all trees)", stats.nodes),
        ("failed samples (not finished)", failed),
        ("unreadable tree lines", len(stats.bad_records)),
        ("tasks", ", ".join(f"{k} ({v})" for k, v in stats.tasks.items()) or "-"),
        ("teacher", "sim (scripted simulator, not a model)" if teacher.get("kind") == "sim"
         else f"{teacher.get('kind', '?')} · {teacher.get('model', '?')}"),
        ("config hash", config.get("hash", "?")),
        ("images", "inlined (self-contained page)" if self_contained else "linked from the run directory (keep the page beside it)"),
    ]
    tree_stats = [(k, _fmt(v)) for k, v in sorted(stats.tree_stats.items())]
    run_stats = [(k, _fmt(v)) for k, v in sorted(_flat(store.stats()).items())]
    legend = "".join(f"<span><i class=sw style='background:{c}'></i>{_e(t)}</span>" for c, t in LEGEND)
    failures = (_table([(g.kind, g.count, g.example) for g in groups[:50]], ("failure kind", "count", "example id"))
                if groups else "<p class=muted>no failed samples</p>")
    rejected = _table(stats.rejected.most_common(30), ("rejected step reason", "count")) if stats.rejected else ""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>mcts-engine report · {_e(store.path.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>Run <code>{_e(store.path.name)}</code></h1>",
        f"<p class=muted>generated {time.strftime('%Y-%m-%d %H:%M:%S')} from {_e(store.path)}</p>",
        "<div class=row><div class=col><h2>Overview</h2>", _table(overview),
        "</div><div class=col><h2>Solve rate per question type</h2>",
        _by_type(stats) if stats.by_type else "<p class=muted>no trees</p>",
        "</div><div class=col><h2>Failures</h2>", failures, rejected, "</div></div>",
    ]
    if stats.bad_records:
        parts.append("<p class=bad>Unreadable records:</p><pre>" + _e("\n".join(stats.bad_records[:50])) + "</pre>")
    parts += [
        f"<h2>Samples</h2><p class=legend>{legend}</p>",
        "<div class=controls><select id=f><option value=all>all</option><option value=unsolved>unsolved</option>"
        "<option value=wrong>search's pick wrong</option><option value=solved>solved</option></select>"
        "<select id=t></select><input id=q type=search placeholder='search id or question' size=30>"
        "<button id=prev>◀</button><button id=next>▶</button><span id=count class=muted></span></div>",
        "<div class=row><div class=col><table id=idx><thead><tr><th data-k=0>id</th><th data-k=1>question type</th>"
        "<th data-k=2>solved</th><th data-k=3>root value</th><th data-k=4>depth</th><th data-k=5>nodes</th>"
        "<th data-k=6>pick</th></tr></thead><tbody id=rows></tbody></table></div><div class=col id=card></div></div>",
        "<noscript><p class=bad>The sample table and cards need JavaScript (no network is used).</p></noscript>",
        "<h2>Calls and tokens (summed over trees)</h2>",
        _table(tree_stats) if tree_stats else "<p class=muted>no per-tree stats</p>",
    ]
    if run_stats:
        parts += ["<details><summary>stats.json</summary>", _table(run_stats), "</details>"]
    parts += [
        "<h2>Shape of the search</h2><div class=row><div class=col>",
        _histogram("depth of answer nodes (1 = answered at once)", dict(stats.answer_depth)),
        "</div><div class=col>", _histogram("branching (children per expanded node)", dict(stats.branching)),
        "</div><div class=col>", _histogram("root value", dict(stats.root_value)), "</div></div>",
        f"<script type='application/json' id=index>{_json_line(index)}</script>",
        "<script type='application/json' id=cards>" + "\n".join(cards) + "</script>",
        f"<script>{JS}</script></body></html>",
    ]
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
