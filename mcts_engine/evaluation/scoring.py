"""Eval scoring: pure functions from per-item results to a benchmark's summary (no I/O, no model).

An eval *record* (one per item, one line of the run directory's ``trees.jsonl``) is::

    {"sample_id", "task", "groups": {metadata key: value}, "frame": {...},
     "variants": [{"rotation": r, "choices": [...], "truth": {...},
                   "outputs": [{"score", "correct", "reason", "answer", "text", "well_formed",
                                "points", "points_out_of_frame", "answer_out_of_frame", ...}, ...K]}]}

``variants`` has one entry (``rotation`` 0, the item as given) unless circular evaluation is on: then
one entry per rotation of the option order (an item with 4 options is asked 4 times, option texts
shifted by one each time; letters move with them). Each variant holds the K sampled outputs.

Choices (stated once, used everywhere):
- The unit of every mean and interval is the ITEM: its score is the mean over its K samples of
  ``correct`` (so K samples never shrink an interval as if they were independent items).
- Circular evaluation (MMBench-style, as SAT's card recommends): sample k of an item counts as correct
  only if sample k is correct under EVERY rotation; the item's score is the mean of that over k.
- Accuracy counts ``Verdict.correct`` (score 1); the mean score (partial credit, e.g. web actions) is
  reported next to it for tasks whose spec says ``partial_credit``.
- 95 % confidence intervals: Wilson score interval when every item score is 0 or 1; otherwise the
  normal approximation mean ± 1.96·s/√n (s the sample standard deviation over items). A macro mean
  (mean over groups, e.g. BLINK's mean over sub-tasks) uses the normal approximation with
  Var = Σ_g s_g²/n_g / G² (a group of one item contributes the binary worst case s² = 0.25).
- Groups are read from each record's ``groups`` (the sample's metadata); a spec key ``"a+b"`` crosses two
  keys ("mobile/icon"). Keys that no record has are left out of the summary.
- Multi-turn outputs (``eval --multiturn``; ``mcts_engine.zoom.episode.score_episode``) carry ``turns`` (one entry
  per assistant turn: text, zoom point, crop file, error) and ``end`` (how the episode ended). They are scored
  exactly like single-pass outputs; the summary adds turn statistics (``turn_stats``) when any output has turns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Z95 = 1.959963984540054


@dataclass(frozen=True)
class EvalSpec:
    """How a benchmark reports. Tasks set it as a class attribute ``eval_spec`` (default: micro accuracy)."""

    groups: tuple[str, ...] = ()  # metadata keys reported as group tables; "a+b" crosses two keys
    headline: str = "micro"  # "micro": mean over items; "macro:<key>": mean over the values of <key>
    circular: bool = False  # default of --circular (multiple choice only)
    partial_credit: bool = False  # also report the mean verifier score (web actions)
    notes: str = ""  # one line shown under the table (what the benchmark's own paper reports)


DEFAULT_SPEC = EvalSpec()


def spec_for(task: Any) -> EvalSpec:
    spec = getattr(task, "eval_spec", None)
    return spec if isinstance(spec, EvalSpec) else DEFAULT_SPEC


# --------------------------------------------------------------------------------------------
# Confidence intervals
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    n: int
    mean: float
    low: float
    high: float
    method: str  # wilson | normal | macro-normal | none

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "ci95": [self.low, self.high], "method": self.method}


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (``successes`` of ``n``)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def sample_variance(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    m = sum(values) / n
    return sum((v - m) ** 2 for v in values) / (n - 1)


def estimate(values: Sequence[float], z: float = Z95) -> Estimate:
    """Mean of per-item scores with a 95 % interval (Wilson for 0/1 scores, else normal)."""
    n = len(values)
    if n == 0:
        return Estimate(0, 0.0, 0.0, 0.0, "none")
    mean = sum(values) / n
    if all(v in (0.0, 1.0) for v in values):
        lo, hi = wilson(sum(values), n, z)
        return Estimate(n, mean, lo, hi, "wilson")
    half = z * math.sqrt(sample_variance(values) / n)
    return Estimate(n, mean, max(0.0, mean - half), min(1.0, mean + half), "normal")


def macro_estimate(groups: dict[str, Sequence[float]], z: float = Z95) -> Estimate:
    """Mean over groups of the group means, with the normal-approximation interval of the module docstring."""
    groups = {k: v for k, v in groups.items() if len(v)}
    g = len(groups)
    if g == 0:
        return Estimate(0, 0.0, 0.0, 0.0, "none")
    means = [sum(v) / len(v) for v in groups.values()]
    mean = sum(means) / g
    var = sum((sample_variance(v) if len(v) > 1 else 0.25) / len(v) for v in groups.values()) / (g * g)
    half = z * math.sqrt(var)
    n = sum(len(v) for v in groups.values())
    return Estimate(n, mean, max(0.0, mean - half), min(1.0, mean + half), "macro-normal")


# --------------------------------------------------------------------------------------------
# Item scores
# --------------------------------------------------------------------------------------------


def _outputs(variant: dict[str, Any]) -> list[dict[str, Any]]:
    return list(variant.get("outputs") or [])


def item_accuracy(record: dict[str, Any], circular: bool = False) -> float:
    """The item's score in [0, 1]: mean over samples of ``correct`` (circular: correct under every rotation)."""
    variants = record.get("variants") or []
    if not variants:
        return 0.0
    if not circular or len(variants) == 1:
        outs = _outputs(variants[0])
        return sum(bool(o.get("correct")) for o in outs) / len(outs) if outs else 0.0
    k = min(len(_outputs(v)) for v in variants)
    if k == 0:
        return 0.0
    hits = sum(all(bool(_outputs(v)[j].get("correct")) for v in variants) for j in range(k))
    return hits / k


def item_mean_score(record: dict[str, Any]) -> float:
    """Mean verifier score (partial credit) of the item's samples, in the given option order."""
    variants = record.get("variants") or []
    outs = _outputs(variants[0]) if variants else []
    return sum(float(o.get("score") or 0.0) for o in outs) / len(outs) if outs else 0.0


def item_pass_at_k(record: dict[str, Any]) -> float:
    """1 if any of the item's samples (given order) is correct."""
    variants = record.get("variants") or []
    return float(any(bool(o.get("correct")) for o in _outputs(variants[0]))) if variants else 0.0


def group_value(record: dict[str, Any], key: str) -> str | None:
    """A record's value for a group key (``"a+b"`` → ``"va/vb"``); None if the record lacks it."""
    groups = record.get("groups") or {}
    parts = []
    for k in key.split("+"):
        v = groups.get(k)
        if v is None or v == "":
            return None
        parts.append(str(v))
    return "/".join(parts)


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


@dataclass
class Summary:
    task: str
    items: int
    samples_per_item: int
    circular: bool
    headline: str
    overall: Estimate  # the benchmark's headline number
    micro: Estimate  # mean over items (same as overall when headline is micro)
    groups: dict[str, list[tuple[str, Estimate]]] = field(default_factory=dict)
    vanilla: Estimate | None = None  # circular runs: accuracy on the given option order only
    mean_score: Estimate | None = None  # partial credit
    pass_at_k: Estimate | None = None  # K > 1
    format: dict[str, Any] | None = None
    notes: str = ""
    turns: dict[str, Any] | None = None  # multi-turn outputs: turn statistics (turn_stats)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "task": self.task,
            "items": self.items,
            "samples_per_item": self.samples_per_item,
            "circular": self.circular,
            "headline": self.headline,
            "overall": self.overall.to_dict(),
            "micro": self.micro.to_dict(),
            "groups": {k: [{"value": v, **e.to_dict()} for v, e in rows] for k, rows in self.groups.items()},
        }
        for name in ("vanilla", "mean_score", "pass_at_k"):
            e = getattr(self, name)
            if e is not None:
                d[name] = e.to_dict()
        if self.format is not None:
            d["format_check"] = self.format
        if self.notes:
            d["notes"] = self.notes
        if self.turns is not None:
            d["turns"] = self.turns
        return d


def summarize(
    records: Iterable[dict[str, Any]], spec: EvalSpec, task: str = "", circular: bool | None = None,
    format_check: bool = False,
) -> Summary:
    """Aggregate eval records into the benchmark's summary (see the module docstring for every choice)."""
    recs = list(records)
    circ = spec.circular if circular is None else circular
    circ = circ and any(len(r.get("variants") or []) > 1 for r in recs)
    scores = [item_accuracy(r, circ) for r in recs]
    k = max((len(_outputs(v)) for r in recs for v in (r.get("variants") or [])[:1]), default=0)
    micro = estimate(scores)
    groups: dict[str, list[tuple[str, Estimate]]] = {}
    for key in spec.groups:
        by: dict[str, list[float]] = {}
        for r, s in zip(recs, scores):
            v = group_value(r, key)
            if v is not None:
                by.setdefault(v, []).append(s)
        if by:
            groups[key] = [(v, estimate(by[v])) for v in sorted(by)]
    overall = micro
    headline = "micro"
    if spec.headline.startswith("macro:"):
        key = spec.headline.split(":", 1)[1]
        by = {}
        for r, s in zip(recs, scores):
            v = group_value(r, key)
            if v is not None:
                by.setdefault(v, []).append(s)
        if by:
            overall = macro_estimate(by)
            headline = f"mean over {key}"
    out = Summary(task=task, items=len(recs), samples_per_item=k, circular=circ, headline=headline,
                  overall=overall, micro=micro, groups=groups, notes=spec.notes)
    if circ:
        out.vanilla = estimate([item_accuracy(r, False) for r in recs])
    if spec.partial_credit:
        out.mean_score = estimate([item_mean_score(r) for r in recs])
    if k > 1:
        out.pass_at_k = estimate([item_pass_at_k(r) for r in recs])
    if format_check:
        out.format = format_counts(recs)
    if any("turns" in o for r in recs for v in (r.get("variants") or []) for o in _outputs(v)):
        out.turns = turn_stats(recs)
    return out


def turn_stats(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Turn statistics over every multi-turn output (all variants, all K samples): turns and zooms per episode,
    how episodes ended (``multiturn.END_REASONS``), malformed tool calls, points outside the frame, repeats."""
    episodes = turns = zooms = longest = answered = forced = repeated = 0
    ends: dict[str, int] = {}
    for r in records:
        for v in r.get("variants") or []:
            for o in _outputs(v):
                if "turns" not in o:
                    continue
                ts = list(o.get("turns") or [])
                episodes += 1
                turns += len(ts)
                longest = max(longest, len(ts))
                zooms += sum(1 for t in ts if t.get("point") is not None)
                repeated += sum(1 for t in ts if t.get("repeated"))
                end = str(o.get("end") or "unknown")
                ends[end] = ends.get(end, 0) + 1
                if end == "answer":
                    answered += 1
                    forced += int(bool(ts and ts[-1].get("forced")))
    return {
        "episodes": episodes,
        "turns": turns,
        "mean_turns": turns / episodes if episodes else 0.0,
        "max_turns_used": longest,
        "zooms": zooms,
        "mean_zooms": zooms / episodes if episodes else 0.0,
        "answered": answered,
        "forced_answers": forced,
        "malformed_tool_calls": ends.get("bad_tool_call", 0),
        "missing_tool_calls": ends.get("no_tool_call", 0),
        "out_of_frame_points": ends.get("out_of_frame", 0),
        "invalid_turns": ends.get("invalid_turn", 0),
        "truncated": ends.get("truncated", 0),
        "no_answer_at_max_turns": ends.get("no_answer_at_max_turns", 0),
        "repeated_points": repeated,
        "ends": dict(sorted(ends.items())),
    }


def format_counts(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """How many outputs broke the step grammar, how many put a point outside the frame, and the like."""
    c = {"outputs": 0, "grammar_broken": 0, "no_answer": 0, "no_point": 0, "point_out_of_frame": 0,
         "answer_point_out_of_frame": 0, "truncated": 0}
    for r in records:
        for v in r.get("variants") or []:
            for o in _outputs(v):
                c["outputs"] += 1
                c["grammar_broken"] += int(not o.get("well_formed", False))
                c["no_answer"] += int(o.get("answer") in (None, ""))
                c["no_point"] += int(bool(o.get("well_formed")) and int(o.get("points") or 0) == 0)
                c["point_out_of_frame"] += int(int(o.get("points_out_of_frame") or 0) > 0)
                c["answer_point_out_of_frame"] += int(bool(o.get("answer_out_of_frame")))
                c["truncated"] += int(o.get("finish_reason") == "length")
    return c


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _row(name: str, e: Estimate) -> str:
    return f"| {name} | {e.n} | {_pct(e.mean)} | [{_pct(e.low)}, {_pct(e.high)}] |"


def render_markdown(s: Summary, title: str = "") -> str:
    """The summary as a markdown table (accuracy in %, 95 % CI)."""
    lines = []
    head = title or f"eval · {s.task}"
    bits = [f"{s.items} items", f"K={s.samples_per_item}"]
    if s.circular:
        bits.append("circular over option rotations")
    lines.append(f"### {head} ({', '.join(bits)})")
    lines.append("")
    lines.append("| | n | acc % | 95% CI |")
    lines.append("|---|---:|---:|---:|")
    lines.append(_row("**overall**" if s.headline == "micro" else f"**overall** ({s.headline})", s.overall))
    if s.headline != "micro":
        lines.append(_row("mean over items", s.micro))
    if s.vanilla is not None:
        lines.append(_row("given option order only (not circular)", s.vanilla))
    if s.pass_at_k is not None:
        lines.append(_row(f"pass@{s.samples_per_item}", s.pass_at_k))
    if s.mean_score is not None:
        lines.append(_row("mean score (partial credit)", s.mean_score))
    for key, rows in s.groups.items():
        for value, e in rows:
            lines.append(_row(f"{key} = {value}", e))
    if s.notes:
        lines.append("")
        lines.append(s.notes)
    if s.format is not None:
        f = s.format
        lines.append("")
        lines.append(
            f"format check: {f['outputs']} outputs · grammar broken {f['grammar_broken']} · no answer {f['no_answer']} · "
            f"no grounding point {f['no_point']} · a point outside the frame {f['point_out_of_frame']} · "
            f"answer point outside the frame {f['answer_point_out_of_frame']} · truncated {f['truncated']}"
        )
    if s.turns is not None:
        t = s.turns
        lines.append("")
        lines.append(
            f"turns: {t['episodes']} episodes · {t['mean_turns']:.2f} turns per episode (max {t['max_turns_used']}) · "
            f"{t['mean_zooms']:.2f} zooms per episode · answered {t['answered']} (forced {t['forced_answers']}) · "
            f"malformed tool calls {t['malformed_tool_calls']} · missing tool calls {t['missing_tool_calls']} · "
            f"points outside the frame {t['out_of_frame_points']} · invalid turns {t['invalid_turns']} · "
            f"truncated {t['truncated']} · no answer at the last turn {t['no_answer_at_max_turns']} · "
            f"repeated points {t['repeated_points']}"
        )
    return "\n".join(lines) + "\n"


__all__ = [
    "EvalSpec", "Estimate", "Summary", "spec_for", "wilson", "estimate", "macro_estimate", "item_accuracy",
    "item_mean_score", "item_pass_at_k", "group_value", "summarize", "format_counts", "turn_stats", "render_markdown",
]
