#!/usr/bin/env python
"""Benchmark the bundled trainer against TRL, both timed the same way: seconds per optimizer step.

    python scripts/bench_train.py                           # tiny Qwen2.5-VL (~0.2 M params) on CPU
    PYTHONPATH=/tmp/trl python scripts/bench_train.py       # + TRL's SFTTrainer / GRPOTrainer when importable
    python scripts/bench_train.py --device cuda             # a small random Qwen2.5-VL (3B-sized) in bf16 on a GPU
    python scripts/bench_train.py --json bench.json         # also write every round's numbers

How it times (the same for every trainer):
- Every case runs in its own process through the trainers' real entry points (``run_sft`` / ``run_grpo``; TRL's
  ``SFTTrainer.train`` / ``GRPOTrainer.train``) on the same synthetic export parquets, model, batch sizes and
  sampling settings and trainable parameters (vision tower frozen on both sides; SFT: no packing; GRPO: G completions per prompt, ``max_new_tokens``,
  temperature 1, β = 0, token-level loss, group-scaled advantages, one iteration, the same reward function).
- A step's time is the interval between consecutive optimizer-step ends (our trainer's per-step progress hook,
  TRL's ``on_step_end`` callback), so it covers everything a step costs (data loading, generation, scoring,
  forward/backward, optimizer) on both sides; per-step logging is off on both sides. The first ``--warmup``
  steps are dropped; the median of the next ``--steps`` (≥ 20) is the case's step time.
- The bundled SFT case runs with the trainer's defaults, its encode cache included: with the default 32 rows and 4
  rows per step, an epoch is 8 steps, so 15 of the 20 timed steps reuse rows already encoded (TRL's collator runs
  the processor on every row of every step). ``--encode-cache-mb 0`` times it encoding every row every step.
- Rounds alternate the order (ours, TRL / TRL, ours) so that a load change on a shared machine hits both; the
  reported ratio (TRL step ÷ ours, > 1 = ours faster) is the median over rounds of one run.
If ``trl`` is not importable the script times the bundled trainer alone (TRL is not a dependency).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the engine (its tiny-model builder and parquet fixtures: mcts_engine.testing.tiny_model)

QWEN25_VL_3B = {  # Qwen/Qwen2.5-VL-3B-Instruct's architecture (random init: no download)
    "text": dict(vocab_size=151936, hidden_size=2048, num_hidden_layers=36, num_attention_heads=16,
                 num_key_value_heads=2, intermediate_size=11008, max_position_embeddings=128000,
                 tie_word_embeddings=True,
                 rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0}),
    "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14,
                   spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=2048,
                   fullatt_block_indexes=[7, 15, 23, 31], window_size=112),
}


def build_3b(out: Path) -> Path:
    """The tiny fixture's tokenizer/processor with a 3B-sized random model (bf16 on disk)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from mcts_engine.testing.tiny_model import build_tiny_model

    tiny = build_tiny_model(out)
    base = json.loads((tiny / "config.json").read_text())
    ids = {k: base[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")}
    text = dict(QWEN25_VL_3B["text"], bos_token_id=0, eos_token_id=2, pad_token_id=0)
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=QWEN25_VL_3B["vision"], tie_word_embeddings=True, **ids)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2_5_VLForConditionalGeneration(cfg).to(torch.bfloat16)
    model.generation_config.eos_token_id = [2, 0]
    (out / "model.safetensors").unlink(missing_ok=True)  # the tiny weights (a sharded save would not replace them)
    model.save_pretrained(out)
    return out


def make_data(d: Path, rows: int, frame: tuple[int, int]) -> tuple[Path, Path]:
    from mcts_engine.testing.tiny_model import grpo_rows, sft_rows, write_parquet

    return (write_parquet(sft_rows(rows, frame=frame), d / "sft.parquet"),
            write_parquet(grpo_rows(rows, frame=frame), d / "grpo.parquet"))


class StepClock:
    """Optimizer-step end times (perf_counter), recorded the same way for every trainer."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def tick(self) -> None:
        self.ends.append(time.perf_counter())

    def step_s(self, warmup: int) -> tuple[float, int]:
        """Median interval between step ends after ``warmup`` steps, and how many intervals it covers."""
        gaps = [b - a for a, b in zip(self.ends[warmup:], self.ends[warmup + 1:])]
        return (statistics.median(gaps) if gaps else float("nan")), len(gaps)


def _ours_clock() -> StepClock:
    """Tick at every optimizer step of the bundled trainer (its progress hook runs once per step, on rank 0)."""
    from mcts_engine.train import trackers

    clock = StepClock()
    real = trackers.Metrics.advance

    def advance(self, step, record=None):
        clock.tick()
        return real(self, step, record)

    trackers.Metrics.advance = advance
    return clock


def _trl_clock() -> tuple[StepClock, object]:
    from transformers import TrainerCallback

    clock = StepClock()

    class Tick(TrainerCallback):
        def on_step_end(self, *a, **k):
            clock.tick()

    return clock, Tick()


def total_steps(args: argparse.Namespace) -> int:
    return args.warmup + args.steps + 1  # + 1: the first timed interval starts at the end of the last warm-up step


def grpo_reward(completions, ground_truth, task, frame_width, frame_height, **kwargs) -> list[float]:
    """The bundled trainer's reward (verifier + format + grounding) as a TRL reward function."""
    from mcts_engine.train.config import RewardWeights
    from mcts_engine.train.rewards import frame_of, parse_ground_truth, score_completion, task_for

    out = []
    for c, gt, t, w, h in zip(completions, ground_truth, task, frame_width, frame_height):
        text = c[-1]["content"] if isinstance(c, list) else str(c)
        out.append(score_completion(text, task_for(t), parse_ground_truth(gt, "row"), frame_of(w, h),
                                    RewardWeights()).total)
    return out


def case(args: argparse.Namespace) -> dict:
    """One measurement, in this process."""
    from mcts_engine.train.config import RunArgs, train_config_from_recipe

    work = Path(args.work)
    sft, grpo = Path(args.sft_data), Path(args.grpo_data)
    out = work / f"out-{args.case}-{time.time_ns()}"
    steps = total_steps(args)
    common = {"max_steps": steps, "num_workers": 0, "log_every": steps, "warmup_ratio": 0.0, "lr": 1e-5,
              "batch_size": args.batch_size, "gradient_checkpointing": args.gradient_checkpointing,
              "precision": args.precision, "max_length": 32768, "progress": False, "schedule": "constant"}
    if args.encode_cache_mb >= 0:
        common["encode_cache_mb"] = args.encode_cache_mb
    quiet = contextlib.redirect_stderr(io.StringIO())
    if args.case == "sft":
        from mcts_engine.train.sft import run_sft

        clock = _ours_clock()
        cfg = train_config_from_recipe({"train": common})
        with quiet:
            run_sft(RunArgs("sft", args.model, str(sft), str(out), device=args.device), cfg)
        step_s, n = clock.step_s(args.warmup)
        return {"case": "sft", "trainer": "bundled", "step_s": step_s, "timed_steps": n, "peak_mem_gb": _peak(args)}
    if args.case == "grpo":
        from mcts_engine.train.grpo import run_grpo

        clock = _ours_clock()
        g = {"group_size": args.group, "prompts_per_step": args.prompts, "max_new_tokens": args.new_tokens,
             "temperature": 1.0, "loss_type": "token", "scale_rewards": "group"}
        cfg = train_config_from_recipe({"train": {**common, "batch_size": args.grpo_batch, "grpo": g}})
        with quiet:
            run_grpo(RunArgs("grpo", args.model, str(grpo), str(out), device=args.device), cfg)
        step_s, n = clock.step_s(args.warmup)
        last = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        completion = next(r["completion_len"] for r in reversed(last) if "completion_len" in r and "event" not in r)
        return {"case": "grpo", "trainer": "bundled", "step_s": step_s, "timed_steps": n,
                "completion_len": completion, "peak_mem_gb": _peak(args)}
    if args.case == "trl_sft":
        return trl_sft(args, sft, out)
    if args.case == "trl_grpo":
        return trl_grpo(args, grpo, out)
    raise SystemExit(f"unknown case {args.case}")


def _peak(args: argparse.Namespace) -> float:
    if args.device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _trl_common(args: argparse.Namespace, out: Path) -> dict:
    steps = total_steps(args)
    return dict(output_dir=str(out), max_steps=steps, logging_steps=steps, save_strategy="no", report_to=[],
                bf16=args.device == "cuda", use_cpu=args.device == "cpu", disable_tqdm=True, learning_rate=1e-5,
                lr_scheduler_type="constant", gradient_checkpointing=args.gradient_checkpointing,
                dataloader_num_workers=0, seed=0)


def _trl_inputs(args: argparse.Namespace, parquet: Path) -> tuple:
    """Processor, model (vision tower frozen: the bundled trainer's default) and dataset, as TRL gets them."""
    import datasets
    import torch

    from mcts_engine.train.model import freeze_vision, load_model, load_processor

    processor = load_processor(args.model)
    model = load_model(args.model, torch.bfloat16 if args.device == "cuda" else torch.float32)
    freeze_vision(model)
    ds = datasets.Dataset.from_parquet(str(parquet)).cast_column("images", datasets.Sequence(datasets.Image()))
    return processor, model, ds


def trl_sft(args: argparse.Namespace, sft: Path, out: Path) -> dict:
    """TRL's SFTTrainer on the same model and rows (no packing), same batch size."""
    from trl import SFTConfig, SFTTrainer

    processor, model, ds = _trl_inputs(args, sft)
    clock, tick = _trl_clock()
    cfg = SFTConfig(per_device_train_batch_size=args.batch_size, max_length=None, assistant_only_loss=False,
                    **_trl_common(args, out))
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=processor, callbacks=[tick])
    with contextlib.redirect_stderr(io.StringIO()):
        trainer.train()
    step_s, n = clock.step_s(args.warmup)
    return {"case": "sft", "trainer": "trl", "step_s": step_s, "timed_steps": n, "peak_mem_gb": _peak(args)}


def trl_grpo(args: argparse.Namespace, grpo: Path, out: Path) -> dict:
    """TRL's GRPOTrainer: the same prompts, G, completion budget, sampling, loss, reward function."""
    from trl import GRPOConfig, GRPOTrainer

    processor, model, ds = _trl_inputs(args, grpo)
    clock, tick = _trl_clock()
    lengths: list[int] = []

    def reward(completions, completion_ids=None, **kw):
        lengths.extend(len(c) for c in completion_ids or [])
        return grpo_reward(completions, **kw)

    reward.__name__ = "bundled_reward"
    cfg = GRPOConfig(per_device_train_batch_size=args.prompts * args.group, num_generations=args.group,
                     max_completion_length=args.new_tokens, temperature=1.0, top_p=1.0, top_k=0, beta=0.0,
                     loss_type="dapo", scale_rewards="group", num_iterations=1, use_vllm=False,
                     log_completions=False, **_trl_common(args, out))
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=processor,
                          callbacks=[tick])
    with contextlib.redirect_stderr(io.StringIO()):
        trainer.train()
    step_s, n = clock.step_s(args.warmup)
    return {"case": "grpo", "trainer": "trl", "step_s": step_s, "timed_steps": n,
            "completion_len": statistics.mean(lengths[-args.prompts * args.group:]), "peak_mem_gb": _peak(args)}


def run_case(base: list[str], name: str) -> dict | None:
    cmd = [sys.executable, __file__, "--case", name, *base]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"  {name}: failed\n{res.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per case (after --warmup)")
    ap.add_argument("--warmup", type=int, default=3, help="steps before the timed ones")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, alternating which trainer runs first")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--frame", default="", help="WxH of the synthetic images (default 224x168 tiny, 644x476 3B)")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--grpo-batch", type=int, default=16, help="completions per GRPO micro-batch (ours)")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--encode-cache-mb", type=int, default=-1,
                    help="bundled SFT's train.encode_cache_mb (default: the trainer's; 0 = encode every row every step)")
    ap.add_argument("--models", default="", help="tiny,3b (default: tiny on CPU; 3b with --device cuda)")
    ap.add_argument("--cases", default="sft,grpo")
    ap.add_argument("--json", default="")
    # internal: one case in a child process
    ap.add_argument("--case", default="")
    ap.add_argument("--model", default="")
    ap.add_argument("--work", default="")
    ap.add_argument("--sft-data", default="")
    ap.add_argument("--grpo-data", default="")
    args = ap.parse_args()
    if args.case:
        print(json.dumps(case(args)))
        return
    if args.steps < 20:
        print(f"note: --steps {args.steps} < 20: too few for a stable median on a shared machine", file=sys.stderr)
    try:
        import trl

        have_trl = True
        print(f"TRL {trl.__version__}")
    except ImportError:
        have_trl = False
        print("TRL not installed: timing the bundled trainer alone (PYTHONPATH a `pip install --no-deps --target "
              "DIR trl` to compare)")
    models = [m for m in (args.models or ("3b" if args.device == "cuda" else "tiny")).split(",") if m]
    cases = [c for c in args.cases.split(",") if c]
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in models:
            from mcts_engine.testing.tiny_model import build_tiny_model

            with contextlib.redirect_stderr(io.StringIO()):
                model_dir = build_tiny_model(work / name) if name == "tiny" else build_3b(work / name)
            frame = args.frame or ("224x168" if name == "tiny" else "644x476")
            w, h = (int(v) for v in frame.lower().split("x"))
            sft, grpo = make_data(work / f"data-{name}", args.rows, (w, h))
            base = ["--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup),
                    "--batch-size", str(args.batch_size), "--group", str(args.group), "--prompts", str(args.prompts),
                    "--new-tokens", str(args.new_tokens), "--grpo-batch", str(args.grpo_batch),
                    "--precision", args.precision, "--encode-cache-mb", str(args.encode_cache_mb), "--model", str(model_dir), "--work", str(work),
                    "--sft-data", str(sft), "--grpo-data", str(grpo)]
            if args.gradient_checkpointing:
                base.append("--gradient-checkpointing")
            for rnd in range(args.rounds):
                for c in cases:
                    order = [c] + ([f"trl_{c}"] if have_trl else [])
                    for child in (order if rnd % 2 == 0 else order[::-1]):
                        r = run_case(base, child)
                        if r:
                            r.update(model=name, device=args.device, frame=frame, round=rnd)
                            results.append(r)
                            print(json.dumps(r), flush=True)
    print()
    print("| model | device | case | trainer | step s (median per round) | completion tokens | peak mem GB |")
    print("|---|---|---|---|---|---|---|")
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["model"], r["case"], r["trainer"]), []).append(r)
    for (model, c, trainer), rs in groups.items():
        steps = ", ".join(f"{x['step_s']:.3f}" for x in rs)
        comp = statistics.mean(x["completion_len"] for x in rs) if "completion_len" in rs[0] else None
        print(f"| {model} | {args.device} | {c} | {trainer} | {steps} | {f'{comp:.1f}' if comp else '-'} | "
              f"{max(x['peak_mem_gb'] for x in rs):.2f} |")
    for model in models:
        for c in cases:
            ours = {r["round"]: r["step_s"] for r in results if (r["model"], r["case"], r["trainer"]) == (model, c, "bundled")}
            trl_ = {r["round"]: r["step_s"] for r in results if (r["model"], r["case"], r["trainer"]) == (model, c, "trl")}
            ratios = [trl_[k] / ours[k] for k in ours if k in trl_]
            if ratios:
                print(f"{model} {c}: TRL step / bundled step per round: {', '.join(f'{x:.2f}' for x in ratios)} "
                      f"→ median {statistics.median(ratios):.2f}x")
            lens = {t: [r["completion_len"] for r in results if (r["model"], r["case"], r["trainer"]) == (model, c, t)
                        and "completion_len" in r] for t in ("bundled", "trl")}
            if ratios and lens["bundled"] and lens["trl"]:  # GRPO: per completion token (the lengths differ by chance)
                per_token = statistics.median(ratios) * statistics.mean(lens["bundled"]) / statistics.mean(lens["trl"])
                print(f"{model} {c}: completion tokens per step bundled {statistics.mean(lens['bundled']):.1f}, "
                      f"TRL {statistics.mean(lens['trl']):.1f} → per completion token {per_token:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
