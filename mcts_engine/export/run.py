"""Export a run directory to training files (an I/O edge): parquet (or JSONL) per kind and split.

Layout of ``OUT/`` (``--flavor trl``, the default)::

    sft_train.parquet   sft_val.parquet     TRL SFTTrainer (conversational VLM)
    grpo_train.parquet  grpo_val.parquet    TRL GRPOTrainer, and verl's columns alongside
    dpo_train.parquet   dpo_val.parquet     TRL DPOTrainer (conversational VLM preference)
    prm_train.parquet   prm_val.parquet     stepwise labels (prompt, completions, labels, values, visits)
    export_summary.json                     counts, what was skipped and why, sizes, timing

Multi-turn runs (``config.multiturn.enabled``; ``mode`` auto-detects, ``single`` overrides) write
``sft`` and ``grpo`` only (``trl``; ``llamafactory``: sft): SFT ``messages`` alternate assistant turns
(each step's response with its ``<tool_call>`` verbatim) and observation user turns (text before the
``<image>`` marker, an image part, text after), ``images`` = [sample images…, crop 1, crop 2, …] in the
order of their placeholders; GRPO prompts carry the multi-turn student prompt and a ``multiturn``
column with the environment's settings (``max_turns``, ``crop_offset``, ``crop_size``, ``draw_dot``,
``dot_radius``) so a rollout crops exactly as the search did. Crops are the run's own crop files
(``RUN/images/``), copied byte for byte. verl/EasyR1 multi-turn rollouts need a tool environment these
files cannot carry: those flavors refuse a multi-turn export (use ``--mode single`` for single-turn rows).

Other flavors: ``verl`` (grpo; verl's string prompt with ``<image>`` markers + ``reward.py``), ``easyr1``
(grpo; ``prompt``/``answer``/``images`` + ``reward.py``), ``llamafactory`` (sft + dpo in sharegpt form +
``dataset_info.json``). ``--format jsonl`` writes the same rows as JSON lines with each distinct image
stored once under ``images/<sha1>.<ext>`` and referenced by a relative path.

Choices:

- Images are stored in the teacher's frame (``Tree.frame``), so every coordinate in a row is a pixel of
  the stored image: the run's cached frame images (``Tree.images``, exactly what the teacher saw) when
  present, else the source images resized the teacher's way. ``rescale_to_original`` stores the
  original image and rescales the points.
  Either way ``frame_width/frame_height/orig_width/orig_height`` and ``coord_space`` are in every row.
- Parquet images are ``datasets.Image`` cells (``{"bytes", "path"}``, bytes embedded) under the
  ``datasets`` schema metadata, so ``load_dataset("parquet")`` decodes them and plain pyarrow reads
  bytes. The image column is written as a parquet dictionary (see :class:`.sinks.ParquetSink`), so a
  sample's image is stored once per row group however many rows repeat it.
- One content schema per file: TRL files always use lists of ``{"type", "text"}`` parts.
- Train/val split by sample, keyed on the content hash of its images; samples sharing any image are
  kept together (union-find), so no image is in both splits. Deterministic given the trees and the seed.
- Nothing crashes on bad input: corrupt tree lines, unknown tasks, missing images and bytes-only images
  without a cached copy are skipped and reported with a reason.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..frame import Frame
from ..samples import Sample
from ..search.tree import Tree
from ..store import RunStore
from .config import FLAVORS, FORMATS, MODES, SPLITS, ExportConfig, ExportError, check_kinds, multiturn_settings, resolve_mode
from .images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    ImageBlob,
    crop_images,
    encode,
    frame_image,
    image_keys,
    image_root_for,
    run_inputs,
    sample_images,
)
from .linearize import Linearizer
from .protocol_rows import changes_observations, env_settings, first_user_text, recut_chains, system_message
from .rows import SampleContext, dpo_row, grpo_row, mt_sft_row, prm_row, sft_row
from .schema import features_for
from .sinks import JsonlSink, ParquetSink, row_text_bytes
from .split import assign_splits


def sample_from_record(rec: dict[str, Any]) -> Sample:
    if not rec or "images" not in rec:
        raise ValueError("tree has no sample record")
    return Sample(
        id=str(rec.get("id", "")),
        images=list(rec["images"]),
        question=str(rec.get("question", "")),
        answer=str(rec.get("answer", "")),
        choices=[str(c) for c in rec.get("choices") or []],
        boxes=list(rec.get("boxes") or []),
        task=str(rec.get("task", "")),
        metadata=dict(rec.get("metadata") or {}),
        image_root=rec.get("image_root"),
    )


@dataclass
class ExportResult:
    out_dir: str
    kinds: list[str]
    flavor: str
    format: str
    mode: str = "single"  # single | multiturn (what was written)
    multiturn: dict[str, Any] | None = None  # multi-turn: the environment's settings the rows carry
    trees: int = 0  # tree records read (valid ones)
    samples_exported: int = 0  # samples with at least one row
    rows: dict[str, int] = field(default_factory=dict)  # file name -> rows
    strategies: dict[str, int] = field(default_factory=dict)  # sft chains per strategy
    skipped_records: list[dict[str, str]] = field(default_factory=list)  # whole samples / lines: {"id", "reason"}
    kind_skips: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> reason -> samples
    path_skips: dict[str, int] = field(default_factory=dict)  # candidate paths not used, by reason
    verdict_changed: int = 0  # leaves whose re-verification disagreed with the stored flag
    split_samples: dict[str, int] = field(default_factory=dict)
    unique_image_bytes: int = 0
    crop_images: int = 0  # multi-turn: crop images placed in rows (with repeats)
    text_bytes: int = 0
    output_bytes: int = 0
    seconds: float = 0.0

    def skip_kind(self, kind: str, reason: str) -> None:
        d = self.kind_skips.setdefault(kind, {})
        d[reason] = d.get(reason, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _run_settings(config: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
    cfg = config.get("config", {}) if isinstance(config, dict) else {}
    teacher = cfg.get("teacher", {}) or {}
    return (
        dict(cfg.get("task_options", {}) or {}),
        int(teacher.get("max_pixels", DEFAULT_MAX_PIXELS)),
        int(teacher.get("min_pixels", DEFAULT_MIN_PIXELS)),
    )


def export_run(
    run: str | Path,
    out: str | Path,
    *,
    kinds: list[str],
    cfg: ExportConfig,
    fmt: str = "parquet",
    flavor: str = "trl",
    image_root: str | None = None,
    limit: int | None = None,
    task_options: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    mode: str = "auto",
    allow_outside_root: bool = False,
    protocol: dict[str, Any] | None = None,
) -> ExportResult:
    """Export the trees of run directory ``run`` to ``out``. See the module docstring.

    Files a tree names are read inside the run directory only; source images (a tree without cached
    frames, or ``rescale_to_original``) inside their image root, under the run's input rules
    (``config.inputs``; ``allow_outside_root`` also allows paths outside it).

    Linearization runs in order on the calling thread; image loading/resizing/encoding for the next
    few samples runs on ``workers`` threads (default: CPU count, at most 8); rows are written in
    file order, so the output does not depend on ``workers``. ``protocol``: ``protocol_rows.protocol_settings``
    (system message, first user turn, multi-turn observations and crops in a released model's protocol)."""
    from ..tasks import get_task

    cfg.validate()
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if flavor not in FLAVORS:
        raise ExportError(f"--flavor {flavor!r}: expected one of {', '.join(FLAVORS)}")
    if mode not in MODES:
        raise ExportError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    store = RunStore.open_existing(run)
    run_dir = store.path
    config = store.config()
    mt = resolve_mode(config, mode)
    check_kinds(kinds, flavor, mt, cfg)
    mt_settings = multiturn_settings(config) if mt else None
    if mt_settings is not None and protocol:
        mt_settings = env_settings(mt_settings, protocol)
    run_options, max_px, min_px = _run_settings(config)
    inputs = run_inputs(config, allow_outside_root)
    options = run_options if task_options is None else task_options
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ExportResult(out_dir=str(out_dir), kinds=list(kinds), flavor=flavor, format=fmt,
                          mode="multiturn" if mt else "single", multiturn=mt_settings)
    t0 = time.perf_counter()

    # Pass 1: image keys of every sample (for a leak-free split).
    keys: dict[str, list[str]] = {}
    unreadable: dict[str, str] = {}
    for tree in _trees(store, result, limit, record=True):
        try:
            keys[tree.sample_id] = image_keys(tree, image_root_for(tree.sample, config, image_root), inputs)
        except ValueError as exc:
            unreadable[tree.sample_id] = str(exc)
    splits = assign_splits(keys, cfg.val_fraction, cfg.seed)
    split_names = SPLITS if cfg.val_fraction > 0 else ("train",)

    # Pass 2: linearize, load images once per sample, write every kind's rows.
    sinks: dict[tuple[str, str], ParquetSink | JsonlSink] = {}
    for kind in kinds:
        for split in split_names:
            name = f"{kind}_{split}.{'parquet' if fmt == 'parquet' else 'jsonl'}"
            if fmt == "parquet":
                sinks[(kind, split)] = ParquetSink(out_dir / name, features_for(kind, flavor, mt))
            else:
                sinks[(kind, split)] = JsonlSink(out_dir / name, out_dir / "images")
    tasks: dict[str, Any] = {}
    seen_images: set[str] = set()
    grpo_index = {s: 0 for s in split_names}
    strategies = cfg.strategy_list()

    def load(tree: Tree, sample: Sample, task: Any, wanted: dict[str, list[Any]]) -> tuple[list[ImageBlob], dict[str, Any], dict[str, ImageBlob]]:
        """Image work for one sample (runs in a worker thread: PIL releases the GIL)."""
        blobs = sample_images(
            tree, image_root_for(tree.sample, config, image_root), run_dir=run_dir,
            rescale_to_original=cfg.rescale_to_original, fmt=cfg.image_format, quality=cfg.jpeg_quality,
            max_pixels=max_px, min_pixels=min_px, inputs=inputs,
        )
        truth = tree.truth
        if cfg.rescale_to_original:
            f = tree.frame
            truth = task.ground_truth(sample, Frame(f.orig_width, f.orig_height, f.orig_width, f.orig_height))
        if mt and changes_observations(protocol) and wanted.get("sft"):  # the protocol's observations: crops cut again
            frame = frame_image(tree, image_root_for(tree.sample, config, image_root), run_dir, inputs)
            wanted["sft"], crops = recut_chains(wanted["sft"], frame, mt_settings or {},
                                                lambda im: encode(im, "jpeg" if cfg.image_format == "jpeg" else "png", cfg.jpeg_quality))
        else:
            crops = crop_images(wanted.get("sft", []), run_dir, cfg.image_format, cfg.jpeg_quality, inputs.max_image_pixels) if mt else {}
        return blobs, truth, crops

    def emit(tree: Tree, lin: Linearizer, sample: Sample, task: Any, wanted: dict[str, list[Any]], fut: Any) -> None:
        sid = tree.sample_id
        split = splits[sid] if splits[sid] in split_names else "train"
        try:
            blobs, truth, crops = fut.result()
            ctx = SampleContext(
                id=sid,
                task=task.name,
                system=system_message(protocol or {}, task, mt),  # system_prompt: task | model | none | @FILE
                user_text=first_user_text(protocol or {}, task, sample),
                images=blobs,
                frame=tree.frame,
                coord_space="original" if cfg.rescale_to_original else "frame",
                image_hash=keys[sid][0] if keys.get(sid) else "",
                reference=_reference(task, sample, tree.truth),
                truth=truth,
                task_options=options,
                split=split,
                multiturn=mt_settings,
            )
        except Exception as exc:  # one bad sample never stops the export
            result.skipped_records.append({"id": sid, "reason": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})
            return
        wrote = False
        for kind, items in wanted.items():
            sink = sinks[(kind, split)]
            for k, item in enumerate(items):
                if kind == "sft" and mt:
                    row = mt_sft_row(ctx, item, k, flavor, crops)
                    result.crop_images += len(item.observations)
                    result.strategies[item.strategy] = result.strategies.get(item.strategy, 0) + 1
                elif kind == "sft":
                    row = sft_row(ctx, item, k, flavor)
                    result.strategies[item.strategy] = result.strategies.get(item.strategy, 0) + 1
                elif kind == "grpo":
                    row = grpo_row(ctx, lin, grpo_index[split], flavor)
                    grpo_index[split] += 1
                elif kind == "dpo":
                    row = dpo_row(ctx, item, k, flavor)
                else:
                    row = prm_row(ctx, item, k)
                result.text_bytes += row_text_bytes({k2: v for k2, v in row.items() if k2 != "images"})
                sink.add(row)
                wrote = True
        if wrote:
            result.samples_exported += 1
            result.split_samples[split] = result.split_samples.get(split, 0) + 1
            for b in [*blobs, *crops.values()]:
                if b.sha1 not in seen_images:
                    seen_images.add(b.sha1)
                    result.unique_image_bytes += len(b.data)

    n_workers = max(1, workers if workers else min(8, os.cpu_count() or 1))
    pending: deque[tuple[Any, ...]] = deque()
    done = 0
    try:
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            for tree in _trees(store, None, limit, record=False):
                done += 1
                if progress:
                    progress(done)
                sid = tree.sample_id
                if sid in unreadable:
                    result.skipped_records.append({"id": sid, "reason": unreadable[sid]})
                    continue
                prepared = _sample_rows(tree, kinds, flavor, cfg, strategies, options, tasks, get_task, result, mt)
                if prepared is None or not any(prepared[3].values()):
                    continue
                lin, sample, task, wanted = prepared
                pending.append((tree, lin, sample, task, wanted, pool.submit(load, tree, sample, task, wanted)))
                while len(pending) > 4 * n_workers:  # rows leave in file order
                    emit(*pending.popleft())
            while pending:
                emit(*pending.popleft())
    finally:
        for sink in sinks.values():
            sink.close()
    for sink in sinks.values():
        result.rows[Path(sink.path).name] = sink.rows
    _write_extras(out_dir, flavor, fmt, kinds, split_names, sinks)
    result.seconds = round(time.perf_counter() - t0, 3)
    result.output_bytes = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file() and p.name != "export_summary.json")
    (out_dir / "export_summary.json").write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    return result


def _trees(store: RunStore, result: ExportResult | None, limit: int | None, record: bool) -> Iterator[Tree]:
    """Valid trees in file order, first occurrence of each sample id; errors recorded once (pass 1)."""
    seen: set[str] = set()
    for tree, err in store.iter_trees():
        if err or tree is None:
            if record and result is not None:
                result.skipped_records.append({"id": "", "reason": err or "unreadable tree"})
            continue
        if tree.sample_id in seen:
            if record and result is not None:
                result.skipped_records.append({"id": tree.sample_id, "reason": "duplicate sample id (first record kept)"})
            continue
        if limit is not None and len(seen) >= limit:
            break
        seen.add(tree.sample_id)
        if record and result is not None:
            result.trees += 1
        yield tree


def _reference(task: Any, sample: Sample, truth: dict[str, Any]) -> str:
    try:
        return str(task.reference(sample))
    except Exception:
        return str(truth.get("answer", sample.answer))


def _sample_rows(
    tree: Tree,
    kinds: list[str],
    flavor: str,
    cfg: ExportConfig,
    strategies: list[str],
    options: dict[str, Any],
    tasks: dict[str, Any],
    get_task: Callable[..., Any],
    result: ExportResult,
    multiturn: bool = False,
) -> tuple[Linearizer, Sample, Any, dict[str, list[Any]]] | None:
    """Linearize one tree: the items per kind (pure work; no image is read here). ``multiturn``: SFT
    items are :class:`MultiTurnChain` (steps need their observation)."""
    sid = tree.sample_id
    name = tree.task or str(tree.sample.get("task", ""))
    try:
        if name not in tasks:
            tasks[name] = get_task(name, options)
        task = tasks[name]
        sample = sample_from_record(tree.sample)
    except (KeyError, ValueError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        result.skipped_records.append({"id": sid, "reason": str(msg)})
        return None

    truth = tree.truth

    def verify(answer: str | None) -> bool:
        return task.verify(answer, truth).correct

    try:
        lin = Linearizer(tree, cfg, verify, task.backtrack_sentence, multiturn=multiturn)
        wanted: dict[str, list[Any]] = {}
        for kind in kinds:
            if kind == "sft":
                items: list[Any] = lin.mt_sft_chains(strategies) if multiturn else lin.sft_chains(strategies)
                if not items:
                    result.skip_kind("sft", "no verified-correct valid path" if not lin.difficulty().solved
                                     else "solved, but no correct path passed the step rules")
            elif kind == "grpo":
                keep, why = lin.keep_for_grpo()
                items = [None] if keep else []
                if why:
                    result.skip_kind("grpo", why)
            elif kind == "dpo":
                items = lin.dpo_pairs()
                if not items:
                    result.skip_kind("dpo", "no sibling pair (correct vs wrong) with the Q margin")
            else:
                items = lin.prm_rows()
                if not items:
                    result.skip_kind("prm", "no visited valid step")
            wanted[kind] = items
    except Exception as exc:  # a verifier that cannot read this tree's ground truth, …
        result.skipped_records.append({"id": sid, "reason": f"cannot linearize: {type(exc).__name__}: {exc}".splitlines()[0]})
        return None
    for reason, n in lin.skips.counts.items():
        result.path_skips[reason] = result.path_skips.get(reason, 0) + n
    result.verdict_changed += lin.verdict_changed
    return lin, sample, task, wanted


def _write_extras(out_dir: Path, flavor: str, fmt: str, kinds: list[str], splits: tuple[str, ...], sinks: dict) -> None:
    """Flavor extras: ``dataset_info.json`` (LLaMA-Factory), ``reward.py`` (verl, EasyR1: the task's verifier
    from :mod:`.rewards`)."""
    ext = "parquet" if fmt == "parquet" else "jsonl"
    if flavor == "llamafactory":
        info: dict[str, Any] = {}
        tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                "system_tag": "system"}
        for kind in kinds:
            for split in splits:
                entry: dict[str, Any] = {"file_name": f"{kind}_{split}.{ext}", "formatting": "sharegpt", "tags": tags}
                if kind == "dpo":
                    entry.update(ranking=True, columns={"messages": "messages", "chosen": "chosen",
                                                        "rejected": "rejected", "images": "images"})
                else:
                    entry["columns"] = {"messages": "messages", "images": "images"}
                info[f"mcts_{kind}_{split}"] = entry
        (out_dir / "dataset_info.json").write_text(json.dumps(info, indent=2))
    elif flavor in ("verl", "easyr1"):
        fn = "verl_compute_score" if flavor == "verl" else "easyr1_compute_score"
        (out_dir / "reward.py").write_text(
            f'"""Reward for this export: the task\'s own verifier (mcts_engine must be importable)."""\n'
            f"from mcts_engine.export.rewards import {fn} as compute_score  # noqa: F401\n"
        )
