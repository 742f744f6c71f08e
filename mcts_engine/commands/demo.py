"""``mcts-engine demo``: one image, one question, one model — the turns and crops as ONE offline HTML page.

    mcts-engine demo --image photo.jpg --query "What colour is the umbrella?" --base-url http://localhost:8000/v1 --model M

Multi-turn by default with the recipe's ``multiturn.*`` crop settings (``recipes/<task>_multiturn.yaml`` when it
exists); ``--single-turn`` asks for one whole grounded chain instead; ``--teacher sim`` runs the scripted simulated
teacher (not a model). The flags and config resolution live here; the run and the page are
``mcts_engine.evaluation.demo``.

Heavy imports stay inside the function (``mcts-engine --help`` must stay fast).
"""

from __future__ import annotations

from pathlib import Path

import typer

from . import choose_teacher, fail, recipe_teacher_kind


def demo(
    image: Path = typer.Option(..., "--image", help="The image to ask about."),
    query: str = typer.Option(..., "--query", help="The question (or, for a grounding task, the element to find)."),
    task: str | None = typer.Option(None, help="Task whose prompts and answer format apply (default: the recipe's task, else vstar)."),
    choices: str | None = typer.Option(None, help="Options of a multiple-choice question, separated by '|'."),
    answer: str | None = typer.Option(None, help="The right answer, to score the model's (option text; for a point task a box '(x1, y1, x2, y2)' in image pixels)."),
    teacher: str | None = typer.Option(None, help="openai | sim | vllm (default: the recipe's teacher.kind, else openai; sim is a scripted stand-in, not a model)."),
    base_url: str | None = typer.Option(None, help="OpenAI-compatible server URL of the model (e.g. a `vllm serve`d student)."),
    model: str | None = typer.Option(None, help="Served model name."),
    recipe: str | None = typer.Option(None, help="Recipe (default recipes/<task>_multiturn.yaml if it exists, else recipes/<task>.yaml): crop settings, frame size."),
    protocol: str | None = typer.Option(None, help="Ask as a released checkpoint was trained: the preset recipes/<task>_<PROTOCOL>.yaml under --recipe/--set (vigorl; docs/protocols.md)."),
    system_prompt: str | None = typer.Option(None, "--system-prompt", help="task | model (the served chat template's default) | none (empty) | @FILE (exact text). Default: the recipe's system_prompt."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key, e.g. --set multiturn.crop_size=512 (repeatable)."),
    single_turn: bool = typer.Option(False, "--single-turn", help="One whole grounded chain in one reply instead of zoom turns."),
    max_turns: int | None = typer.Option(None, min=1, help="Assistant turns, the last forced to answer (default: the recipe's search.max_depth)."),
    max_tokens: int | None = typer.Option(None, help="Token budget of one reply. Default 1024, or the --protocol preset's teacher.max_tokens."),
    temperature: float = typer.Option(0.0, help="Sampling temperature (0: greedy)."),
    max_pixels: int | None = typer.Option(None, help="Image frame size in pixels (default: the recipe's teacher.max_pixels)."),
    seed: int = typer.Option(0, help="Seed (the sim teacher is reproducible with it)."),
    out: Path | None = typer.Option(None, help="The HTML page (a .html path) or a directory for it (default runs/demo/; the page is demo-<image name>.html)."),
    quiet: bool = typer.Option(False, "--quiet/--no-quiet", help="Do not print the turns as they arrive."),
) -> None:
    """Run one image through a served model (zoom turns by default) and write an HTML page of its turns and crops."""
    from ..config import ConfigError, build_run_config, load_recipe, recipe_path
    from ..evaluation.demo import DemoError, run_demo
    from ..protocol import load_with_protocol
    from ..tasks import get_task, task_names
    from ..teachers.base import TeacherError, TeacherUnavailable

    try:
        if task is None:
            task = str((load_recipe(recipe, "vstar") if recipe else {}).get("task") or "vstar")
        if task not in task_names():
            fail(f"unknown task {task!r} (known: {', '.join(task_names())})")
        if recipe is None and protocol is None and not single_turn and recipe_path(f"{task}_multiturn").exists():
            recipe = f"{task}_multiturn"
        rec = load_with_protocol(recipe, task, protocol)
        kind = choose_teacher(teacher, base_url, model, recipe_teacher_kind(rec, set_), bundled=False).kind
        if protocol and not single_turn and not (rec.get("multiturn") or {}).get("enabled"):
            single_turn = True  # the protocol's models answer in one reply (the spatial presets)
        cfg = build_run_config(
            rec, set_, task=task, seed=seed, system_prompt=system_prompt, teacher__kind=kind, teacher__base_url=base_url, teacher__model=model,
            teacher__max_tokens=max_tokens if max_tokens is not None else (None if protocol else 1024), teacher__max_pixels=max_pixels, teacher__temperature=temperature,
        )
        task_obj = get_task(task, cfg.task_options)
    except (ConfigError, ValueError, KeyError) as exc:
        fail(str(exc).strip("'\""))
    say = (lambda msg: None) if quiet else (lambda msg: typer.echo(msg, err=True))
    try:
        out = run_demo(cfg, task_obj, task, kind, image, query, choices=choices, answer=answer, single_turn=single_turn,
                       max_turns=max_turns, seed=seed, out=out, say=say)
    except DemoError as exc:
        fail(str(exc))
    except (TeacherUnavailable, TeacherError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    typer.echo(f"wrote {out.resolve()} ({out.stat().st_size // 1024} KiB)")
