#!/usr/bin/env python
"""Benchmark (not a test): search yield — verified, *grounded* traces per teacher choice.

The stand-in OpenAI server runs in its own process with a truth model
(``mcts_engine.testing.truth_model``): every sample has a right answer and a key box; a path that
visited the key box answers right with ``p_good``, otherwise with ``p_bad``; a step lands in the key box
with ``p_key``; replies carry log-probs when asked. The engine runs ``generate`` (``teacher.kind =
openai``, latency 0) on the bundled SAT-2 data repeated to ``--samples`` under fresh ids, once per
setting, and this script reads the trees back. Per setting (sums over ``--seeds`` server seeds):

- ``solved``: samples with a verified-correct leaf;
- ``grounded``: samples with a *grounded* correct path (a correct path that visited the key box);
- ``correct``: distinct correct paths, summed over samples (one walk = same answer and the same number of
  points, each within 2 % of the frame's diagonal of the other's: near-copies count once, for every engine);
- ``g/1k``: distinct grounded correct paths per 1,000 generated choices (the yield);
- ``choices/s``: choices generated per sample; ``chains/s``: SFT chains the engine's own exporter gives
  per sample with its default export config.

``--baseline DIR`` adds the row ``today`` run by the engine found in DIR (e.g. the original code:
``git archive a398637 | tar -x -C /tmp/mcts-orig``) with the recipe's defaults, on the same machine and
server; each setting runs in a child process whose ``PYTHONPATH`` selects the engine.

    python scripts/bench_search.py --baseline /tmp/mcts-orig
    python scripts/bench_search.py --p-key 0.1 --samples 48 --seeds 0 1 2 --settings default enough "c2=search.puct_exploration=2"
    python scripts/bench_search.py --via inproc     # truth model in process (PUCT priors without HTTP)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> --set overrides on top of the sat2 recipe (the new engine)
SETTINGS: dict[str, list[str]] = {
    "default": [],  # this engine's defaults: PUCT, solver, near-duplicate points, widening, 24 simulations one at a time
    # the first pass's defaults: the reference's budget (8 simulations, 2 in flight), no widening
    "budget8": ["search.simulations=8", "search.parallel_simulations=2", "search.max_children=0", "search.widen_alpha=0"],
    "uct": ["search.selection=uct"],  # the reference's UCT (c 2) with the solver and the point rules
    "solved": ["search.early_stop=solved"],
    "enough": ["search.early_stop=enough"],
    "enough16": ["search.early_stop=enough", "search.simulations=16"],
    "adaptive": ["search.adaptive_rollouts=true"],
    "after-solved-1": ["search.rollouts_after_solved=1"],
    "exact-repeats": ["search.min_point_distance=0"],
    "sequential": ["search.parallel_simulations=1"],
    "widen": ["search.widen_alpha=0.5", "search.widen_c=2", "search.max_children=6", "search.simulations=16",
              "search.parallel_simulations=1"],
    "probe": ["search.answer_probe=true"],
    "prior-t0.1": ["search.prior_temperature=0.1"],
    "children5": ["search.children=5"],
    "widen-c3": ["search.widen_alpha=0.5", "search.widen_c=3", "search.max_children=8", "search.simulations=16",
                 "search.parallel_simulations=1"],
    "widen-c3-s24": ["search.widen_alpha=0.5", "search.widen_c=3", "search.max_children=8", "search.simulations=24",
                     "search.parallel_simulations=1"],
}


# --------------------------------------------------------------------------------------------
# Data and the truth server
# --------------------------------------------------------------------------------------------


def make_samples(n: int, workdir: Path) -> Path:
    """The bundled SAT-2 samples repeated to ``n`` under fresh ids; their images are copied next to the
    file (an engine that keeps images inside the data file's folder reads them as any engine does)."""
    import shutil

    src = ROOT / "mcts_engine" / "sample_data" / "sat2_sample" / "samples.jsonl"
    base = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    out = workdir / "samples.jsonl"
    (workdir / "images").mkdir(exist_ok=True)
    with out.open("w") as fh:
        for i in range(n):
            rec = dict(base[i % len(base)])
            rec["id"] = f"{rec['id']}-r{i // len(base)}"
            image = workdir / "images" / Path(rec["image"]).name
            if not image.exists():
                shutil.copyfile(src.parent / rec["image"], image)
            rec["image"] = f"images/{image.name}"
            fh.write(json.dumps(rec) + "\n")
    return out


def start_server(data: Path, args: argparse.Namespace, seed: int, workdir: Path) -> tuple[subprocess.Popen, str]:
    ready = workdir / f"server-{seed}.port"
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "mcts_engine.testing.truth_model", "--data", str(data), "--port", "0",
           "--ready-file", str(ready), "--seed", str(seed), "--p-key", str(args.p_key),
           "--p-good", str(args.p_good), "--p-bad", str(args.p_bad)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not ready.exists() or not ready.read_text().strip():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise SystemExit("the truth server did not start")
        time.sleep(0.1)
    return proc, f"http://127.0.0.1:{ready.read_text().strip()}/v1"


# --------------------------------------------------------------------------------------------
# Scoring a run directory (plain JSON records: works for any engine version)
# --------------------------------------------------------------------------------------------


def _in(p: list | tuple, box: tuple[float, float, float, float]) -> bool:
    return box[0] <= p[0] <= box[2] and box[1] <= p[1] <= box[3]


def same_walk(a: tuple, b: tuple, dist: float) -> bool:
    """Two correct paths are one walk: same answer, same number of points, each within ``dist``."""
    return a[1] == b[1] and len(a[0]) == len(b[0]) and all(
        math.hypot(p[0] - q[0], p[1] - q[1]) <= dist for p, q in zip(a[0], b[0]))


def score_record(rec: dict, near: float = 0.02) -> dict:
    """Solved, grounded, distinct (grounded) correct paths and choices of one tree record. Paths are
    distinct unless they are one walk up to ``near`` × the frame's diagonal (near-copies such as
    (599, 191) → (602, 191) count once), whatever engine wrote the record."""
    frame = rec["frame"]
    sx, sy = frame["width"] / frame["orig_width"], frame["height"] / frame["orig_height"]
    b = rec["sample"]["boxes"][0]["bbox"]  # the truth model's key box: the first annotated box
    box = (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy)
    nodes = rec["nodes"]
    dist = near * math.hypot(frame["width"], frame["height"])
    correct: list[tuple] = []
    grounded: list[tuple] = []
    for n in nodes:
        if n.get("kind") != "answer" or not n.get("correct"):
            continue
        pts, cur = [], n
        while cur.get("parent") is not None:
            if cur.get("point"):
                pts.append(tuple(cur["point"]))
            cur = nodes[cur["parent"]]
        key = (tuple(reversed(pts)), str(n.get("answer") or "").strip().lower())
        if any(same_walk(key, k, dist) for k in correct):
            continue
        correct.append(key)
        if any(_in(p, box) for p in pts):
            grounded.append(key)
    st = rec.get("stats", {})
    return {"solved": bool(correct), "grounded": bool(grounded), "correct": len(correct), "g_paths": len(grounded),
            "choices": int(st.get("choices", 0)), "errors": int(st.get("errors", 0)),
            "priors_missing": int(st.get("priors_missing", 0))}


def worker(args: argparse.Namespace) -> None:
    """Run one setting with the engine on sys.path; print one JSON row."""
    from mcts_engine.config import build_run_config, load_recipe
    from mcts_engine.export.linearize import ExportConfig, Linearizer
    from mcts_engine.generate import run_generate
    from mcts_engine.search.tree import Tree
    from mcts_engine.tasks import get_task

    overrides = ["teacher.kind=openai", f"teacher.base_url={args.url}", "teacher.model=stub-model",
                 "teacher.concurrency=32", "teacher.max_retries=0", "teacher.timeout_s=60"] + list(args.set or [])
    cfg = build_run_config(load_recipe(None, "sat2"), overrides, data=str(args.data), seed=0)
    teacher = None
    if args.via == "inproc":
        from mcts_engine.testing.truth_model import TruthConfig, TruthModel, TruthTeacher, keys_from_jsonl

        cfg.teacher.logprobs = cfg.teacher.logprobs or cfg.search.selection == "puct"
        tc = TruthConfig(p_key=args.p_key, p_good=args.p_good, p_bad=args.p_bad)
        teacher = TruthTeacher(TruthModel(keys_from_jsonl(Path(args.data)), tc), seed=args.seed)
    out = Path(args.out)
    t0 = time.perf_counter()
    stats = run_generate(cfg, out, force=True, progress=False, teacher=teacher)
    wall = time.perf_counter() - t0
    task = get_task("sat2")
    rows, chains = [], 0
    with (out / "trees.jsonl").open() as fh:
        for line in fh:
            rec = json.loads(line)
            rows.append(score_record(rec))
            tree = Tree.from_dict(rec)
            lin = Linearizer(tree, ExportConfig(), lambda a, t=tree: task.verify(a, t.truth).correct, task.backtrack_sentence)
            chains += len(lin.sft_chains())
    agg = {k: sum(int(r[k]) for r in rows) for k in rows[0]} if rows else {}
    agg.update(samples=len(rows), failed=stats.get("failed", 0), chains=chains, wall_s=round(wall, 2))
    print("ROW " + json.dumps(agg), flush=True)


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------


def run_setting(name: str, code: Path, sets: list[str], url: str, data: Path, workdir: Path, args, seed: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--url", url, "--data", str(data),
           "--out", str(workdir / f"run-{name}-{seed}"), "--via", args.via, "--seed", str(seed),
           "--p-key", str(args.p_key), "--p-good", str(args.p_good), "--p-bad", str(args.p_bad)]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, PYTHONPATH=str(code))
    res = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1800)
    rows = [line[4:] for line in res.stdout.splitlines() if line.startswith("ROW ")]
    if res.returncode != 0 or not rows:
        raise SystemExit(f"setting {name} failed:\n{res.stderr[-3000:]}")
    return json.loads(rows[-1])


def merge(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        for k, v in r.items():
            out[k] = out.get(k, 0) + v
    return out


def print_table(table: list[tuple[str, dict]], seeds: int, p_key: float) -> None:
    print(f"\np_key {p_key:g}, {table[0][1]['samples'] // max(1, seeds)} samples x {seeds} seed(s) (sums over seeds)")
    head = "| setting | solved | grounded | correct paths | g/1k choices | choices/sample | chains/sample | failed |"
    print(head)
    print("|" + "---|" * 8)
    base = None
    for name, r in table:
        n = max(1, r["samples"])
        g1k = 1000 * r["g_paths"] / max(1, r["choices"])
        base = base if base is not None else g1k
        note = "" if not r.get("priors_missing") else f" (uniform priors on {r['priors_missing']} choices)"
        print(f"| {name}{note} | {r['solved']} | {r['grounded']} | {r['correct']} | {g1k:.1f} ({g1k / max(1e-9, base):.2f}x) "
              f"| {r['choices'] / n:.0f} | {r['chains'] / n:.2f} | {r['failed']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--p-key", type=float, default=0.1)
    ap.add_argument("--p-good", type=float, default=0.85)
    ap.add_argument("--p-bad", type=float, default=0.35)
    ap.add_argument("--settings", nargs="+", default=["default", "uct", "solved", "enough"],
                    help=f"named settings ({', '.join(SETTINGS)}) or NAME=key=v,key=v (overrides on the sat2 recipe)")
    ap.add_argument("--baseline", type=Path, default=None, help="engine source dir for the 'today' row")
    ap.add_argument("--via", choices=("http", "inproc"), default="http", help="inproc: truth model in process")
    ap.add_argument("--keep", action="store_true", help="keep the run directories (printed)")
    # worker mode (internal)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--set", action="append", help=argparse.SUPPRESS)
    args = ap.parse_args()
    for i, spec in enumerate(args.settings or []):
        if "=" in spec:
            name, _, sets = spec.partition("=")
            SETTINGS[name] = sets.split(",")
            args.settings[i] = name
        elif spec not in SETTINGS:
            raise SystemExit(f"unknown setting {spec!r} (known: {', '.join(SETTINGS)}; or NAME=key=v,key=v)")
    if args.worker:
        worker(args)
        return
    workdir = Path(tempfile.mkdtemp(prefix="bench_search-"))
    data = make_samples(args.samples, workdir)
    names = (["today"] if args.baseline else []) + list(args.settings)
    results: dict[str, list[dict]] = {n: [] for n in names}
    for seed in args.seeds:
        proc, url = start_server(data, args, seed, workdir)
        try:
            for name in names:
                code, sets = (args.baseline, []) if name == "today" else (ROOT, SETTINGS[name])
                t0 = time.perf_counter()
                results[name].append(run_setting(name, code, sets, url, data, workdir, args, seed))
                print(f"seed {seed} {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        finally:
            proc.terminate()
            proc.wait(10)
    print_table([(n, merge(results[n])) for n in names], len(args.seeds), args.p_key)
    print(f"\n(via {args.via}; settings: " + "; ".join(f"{n} = {' '.join(SETTINGS[n])}" for n in args.settings) + ")")
    if args.keep:
        print(f"run directories in {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, os.environ.get("PYTHONPATH", str(ROOT)).split(os.pathsep)[0])
    main()
