#!/usr/bin/env python
"""Benchmark the bundled trainer: tokens/s and peak memory of SFT and GRPO steps.

    python scripts/bench_train.py                      # tiny Qwen2.5-VL (~0.2 M params) on CPU
    python scripts/bench_train.py --device cuda        # + Qwen2.5-VL-3B-sized random-init model on the GPU
    python scripts/bench_train.py --json bench.json    # also write the numbers

Each case runs in its own process (so peak RSS on CPU is per case) through the real trainer entry points
(``run_sft`` / ``run_grpo``) on synthetic export parquets, and reads the trainer's own metrics.jsonl:
- SFT: tokens/s = all tokens of the step's rows (image + text) / step time; median over steps after warm-up.
- GRPO: generation tokens/s (completion tokens / generate time) and training tokens/s (prompt + completion tokens
  scored / the rest of the step); completions run to max_new_tokens on a random model.
- Peak memory: torch.cuda.max_memory_allocated on GPU; peak RSS of the process on CPU.
If ``trl`` is importable, the same SFT data and model also go through TRL's SFTTrainer for a side-by-side ratio;
otherwise the script prints "TRL not installed" (it is not a dependency).
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
sys.path.insert(0, str(ROOT / "tests"))  # the tiny-model builder and parquet fixtures live with the tests

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

    from _train_helpers import build_tiny_model

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
    from _train_helpers import grpo_rows, sft_rows, write_parquet

    return (write_parquet(sft_rows(rows, frame=frame), d / "sft.parquet"),
            write_parquet(grpo_rows(rows, frame=frame), d / "grpo.parquet"))


def metrics(out: Path) -> list[dict]:
    return [r for r in (json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()) if "event" not in r]


def case(args: argparse.Namespace) -> dict:
    """One measurement, in this process."""
    from mcts_engine.train.config import RunArgs, train_config_from_recipe

    work = Path(args.work)
    sft, grpo = Path(args.sft_data), Path(args.grpo_data)
    out = work / f"out-{args.case}-{time.time_ns()}"
    common = {"max_steps": args.steps, "num_workers": 0, "log_every": 1, "warmup_ratio": 0.0, "lr": 1e-5,
              "batch_size": args.batch_size, "gradient_checkpointing": args.gradient_checkpointing,
              "precision": args.precision, "max_length": 32768}
    quiet = contextlib.redirect_stderr(io.StringIO())
    if args.case == "sft":
        from mcts_engine.train.sft import run_sft

        cfg = train_config_from_recipe({"train": common})
        with quiet:
            run_sft(RunArgs("sft", args.model, str(sft), str(out), device=args.device), cfg)
        recs = metrics(out)[args.warmup:]
        return {"case": "sft", "tokens_per_s": statistics.median(r["tokens_per_s"] for r in recs),
                "step_s": statistics.median(r["step_s"] for r in recs),
                "tokens_per_step": recs[0]["tokens"], "peak_mem_gb": max(r["peak_mem_gb"] for r in recs)}
    if args.case == "grpo":
        from mcts_engine.train.grpo import run_grpo

        g = {"group_size": args.group, "prompts_per_step": args.prompts, "max_new_tokens": args.new_tokens}
        cfg = train_config_from_recipe({"train": {**common, "batch_size": args.grpo_batch, "grpo": g}})
        with quiet:
            run_grpo(RunArgs("grpo", args.model, str(grpo), str(out), device=args.device), cfg)
        recs = metrics(out)[args.warmup:]
        completions = args.prompts * args.group
        gen = [completions * r["completion_len"] / r["gen_s"] for r in recs]
        train_tok = [r["tokens_per_s"] * r["step_s"] / max(r["step_s"] - r["gen_s"], 1e-9) for r in recs]
        return {"case": "grpo", "gen_tokens_per_s": statistics.median(gen), "train_tokens_per_s": statistics.median(train_tok),
                "step_s": statistics.median(r["step_s"] for r in recs), "gen_s": statistics.median(r["gen_s"] for r in recs),
                "completion_len": recs[0]["completion_len"], "peak_mem_gb": max(r["peak_mem_gb"] for r in recs)}
    if args.case == "trl":
        return trl_case(args, sft, out)
    raise SystemExit(f"unknown case {args.case}")


def trl_case(args: argparse.Namespace, sft: Path, out: Path) -> dict:
    """TRL's SFTTrainer on the same model and rows (assistant-only loss, no packing), same batch size."""
    import datasets
    import torch
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from mcts_engine.train.model import load_model, load_processor

    processor = load_processor(args.model)
    model = load_model(args.model, torch.bfloat16 if args.device == "cuda" else torch.float32)
    ds = datasets.Dataset.from_parquet(str(sft)).cast_column("images", datasets.Sequence(datasets.Image()))
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

    cfg = SFTConfig(output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                    logging_steps=1, save_strategy="no", report_to=[], bf16=args.device == "cuda",
                    use_cpu=args.device == "cpu", gradient_checkpointing=args.gradient_checkpointing,
                    max_length=None, dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=processor, callbacks=[Timer()])
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    # tokens per step: the same rows as ours (both train on whole rows, no truncation at these sizes)
    step_s = statistics.median(times[args.warmup:])
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else _rss_gb()
    return {"case": "trl_sft", "step_s": step_s, "peak_mem_gb": peak}


def _rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_case(base: list[str], name: str) -> dict | None:
    cmd = [sys.executable, __file__, "--case", name, *base]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"  {name}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the medians")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--frame", default="", help="WxH of the synthetic images (default 224x168 tiny, 644x476 3B)")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--grpo-batch", type=int, default=16, help="completions per GRPO micro-batch")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--models", default="", help="tiny,3b (default: tiny on CPU; tiny,3b with --device cuda)")
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

    try:
        import trl  # noqa: F401

        have_trl = True
    except ImportError:
        have_trl = False
        print("TRL not installed: no SFTTrainer comparison (pip install trl to add it)")
    models = [m for m in (args.models or ("tiny,3b" if args.device == "cuda" else "tiny")).split(",") if m]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in models:
            from _train_helpers import build_tiny_model

            with contextlib.redirect_stderr(io.StringIO()):
                model_dir = build_tiny_model(work / name) if name == "tiny" else build_3b(work / name)
            frame = args.frame or ("224x168" if name == "tiny" else "644x476")
            w, h = (int(v) for v in frame.lower().split("x"))
            sft, grpo = make_data(work / f"data-{name}", args.rows, (w, h))
            base = ["--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup),
                    "--batch-size", str(args.batch_size), "--group", str(args.group), "--prompts", str(args.prompts),
                    "--new-tokens", str(args.new_tokens), "--grpo-batch", str(args.grpo_batch),
                    "--precision", args.precision, "--model", str(model_dir), "--work", str(work),
                    "--sft-data", str(sft), "--grpo-data", str(grpo)]
            if args.gradient_checkpointing:
                base.append("--gradient-checkpointing")
            for c in ["sft", "grpo"] + (["trl"] if have_trl else []):
                r = run_case(base, c)
                if r:
                    r.update(model=name, device=args.device, frame=frame, batch_size=args.batch_size)
                    results.append(r)
                    print(json.dumps(r), flush=True)
    print()
    print("| model | device | case | tokens/s | step s | peak mem GB |")
    print("|---|---|---|---|---|---|")
    for r in results:
        tps = r.get("tokens_per_s") or r.get("train_tokens_per_s")
        extra = f" (generate {r['gen_tokens_per_s']:.0f} tok/s)" if "gen_tokens_per_s" in r else ""
        tps_s = f"{tps:,.0f}{extra}" if tps else "-"
        print(f"| {r['model']} | {r['device']} | {r['case']} | {tps_s} | {r['step_s']:.3f} | {r['peak_mem_gb']:.2f} |")
    sft_ours = {r["model"]: r for r in results if r["case"] == "sft"}
    for r in results:
        if r["case"] == "trl_sft" and r["model"] in sft_ours:
            print(f"{r['model']}: bundled SFT step {sft_ours[r['model']]['step_s']:.3f}s vs TRL SFTTrainer "
                  f"{r['step_s']:.3f}s → {r['step_s'] / sft_ours[r['model']]['step_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
