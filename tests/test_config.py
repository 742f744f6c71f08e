"""Config: recipes, --set overrides (typed, nested, unknown keys), and the resume hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcts_engine.config import (
    RECIPES_DIR,
    ConfigError,
    MultiTurnConfig,
    RunConfig,
    SearchConfig,
    TeacherConfig,
    apply_overrides,
    build_run_config,
    from_dict,
    load_recipe,
    parse_override,
    recipe_path,
    validate_run_config,
)

# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(RECIPES_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_bundled_recipes_build(path: Path) -> None:
    cfg = build_run_config(load_recipe(path, path.stem), [])
    assert isinstance(cfg, RunConfig)
    assert cfg.hash() == build_run_config(load_recipe(None, path.stem), []).hash()


def test_recipe_from_file(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("teacher:\n  temperature: 0.7\n  kind: openai\nsearch:\n  simulations: 4\n  early_stop: solved\n"
                 "task_options:\n  teacher_prompt: hi\n")
    cfg = build_run_config(load_recipe(p, "sat2"), [])
    assert cfg.teacher.temperature == 0.7 and cfg.teacher.kind == "openai"
    assert cfg.search.simulations == 4 and cfg.search.early_stop == "solved"
    assert cfg.search.children == SearchConfig().children  # untouched keys keep their defaults
    assert cfg.task_options == {"teacher_prompt": "hi"}
    assert recipe_path(str(p)) == p


def test_recipe_missing_and_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_recipe(tmp_path / "missing.yaml", "sat2")
    with pytest.raises(ConfigError, match="no such file"):
        load_recipe(str(tmp_path / "missing.yml"), "sat2")
    with pytest.raises(ConfigError, match="no such file or bundled recipe"):
        load_recipe("no_such_recipe_name", "sat2")
    with pytest.raises(ConfigError) as exc:  # a task without its default recipe is an error, not {}
        load_recipe(None, "no-such-task-xyz")
    assert "no-such-task-xyz" in str(exc.value) and "sat2" in str(exc.value) and "\n" not in str(exc.value)
    assert recipe_path("sat2") == RECIPES_DIR / "sat2.yaml"


@pytest.mark.parametrize(
    "text, needle",
    [("teacher: [1, 2\n", "invalid YAML"), ("- a\n- b\n", "top level must be a mapping")],
)
def test_recipe_bad_yaml(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle) as exc:
        load_recipe(p, "sat2")
    assert "\n" not in str(exc.value)


def test_empty_recipe_is_defaults(tmp_path: Path) -> None:
    p = tmp_path / "empty.yaml"
    p.write_text("")
    assert load_recipe(p, "sat2") == {}
    assert build_run_config({}, []).to_dict() == RunConfig().to_dict()


@pytest.mark.parametrize(
    "recipe, key",
    [({"search": {"simulationz": 3}}, "config.search: unknown key 'simulationz'"),
     ({"teacherr": {}}, "config: unknown key 'teacherr'"),
     ({"teacher": {"temperature": "hot"}}, "config.teacher.temperature")],
)
def test_recipe_unknown_or_bad_key_names_it(recipe: dict, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build_run_config(recipe, [])
    assert key in str(exc.value)


# --------------------------------------------------------------------------------------------
# --set overrides
# --------------------------------------------------------------------------------------------


def test_parse_override() -> None:
    assert parse_override("search.simulations=16") == (["search", "simulations"], 16)
    assert parse_override("teacher.model=Qwen/Qwen2.5-VL-7B-Instruct") == (["teacher", "model"], "Qwen/Qwen2.5-VL-7B-Instruct")
    assert parse_override("a.b= ") == (["a", "b"], "")
    assert parse_override("x=a=b") == (["x"], "a=b")
    for bad in ("search.simulations", "=3"):
        with pytest.raises(ConfigError):
            parse_override(bad)


def test_text_fields_keep_the_text_as_written() -> None:
    # YAML 1.1 would read these as an octal number, booleans and a float; a str field keeps the words
    cfg = build_run_config({}, ["teacher.model=0755", "teacher.api_key_env=NO", "teacher.base_url=yes",
                                "image_root=007", "data= 1e3 "])
    assert (cfg.teacher.model, cfg.teacher.api_key_env, cfg.teacher.base_url) == ("0755", "NO", "yes")
    assert (cfg.image_root, cfg.data) == ("007", "1e3")
    # quoted YAML-style is still read as YAML, and null clears an optional text field
    cfg = build_run_config({}, ["teacher.model='on'", 'teacher.api_key_env="KEY"', "image_root=null"])
    assert (cfg.teacher.model, cfg.teacher.api_key_env, cfg.image_root) == ("on", "KEY", None)
    with pytest.raises(ConfigError, match="teacher.model: null is not allowed"):
        build_run_config({}, ["teacher.model=~"])
    # typed fields and untyped mappings still read YAML
    cfg = build_run_config({}, ["search.simulations=08", "search.require_point=off", "teacher.extra_body.top_k=20",
                                "task_options.flag=yes"])
    assert cfg.search.simulations == 8 and cfg.search.require_point is False
    assert cfg.teacher.extra_body == {"top_k": 20} and cfg.task_options == {"flag": True}
    # without a schema (plain recipe dicts), every value is read as YAML
    assert apply_overrides({}, ["teacher.model=0755"]) == {"teacher": {"model": 493}}


def test_export_and_train_overrides_keep_text_fields() -> None:
    from mcts_engine.export.config import ExportConfig, resolve_export_config
    from mcts_engine.train.config import train_config_from_recipe

    assert apply_overrides({}, ["export.strategies=on"], schema={"export": ExportConfig}) == {"export": {"strategies": "on"}}
    ec, options = resolve_export_config({}, overrides=["export.strategies=best", "task_options.k=0755"])
    assert ec.strategies == "best" and options == {"k": 493}  # task options are untyped: read as YAML
    tc = train_config_from_recipe({"train": {}}, ["train.lora_targets=on"])
    assert tc.lora_targets == "on"


def test_overrides_typed_coercion() -> None:
    cfg = build_run_config({}, [
        "search.simulations=16",
        "search.exploration=1",  # int literal into a float field
        "teacher.temperature=0.5",
        "search.require_point=false",
        "teacher.model=my-model",
        "teacher.api_key_env=123",  # numeric literal into a str field
        "limit=5",
        'teacher.extra_body={"top_k": 20}',
        "seed=7",
    ])
    assert cfg.search.simulations == 16 and isinstance(cfg.search.simulations, int)
    assert cfg.search.exploration == 1.0 and isinstance(cfg.search.exploration, float)
    assert cfg.teacher.temperature == 0.5
    assert cfg.search.require_point is False
    assert cfg.teacher.model == "my-model"
    assert cfg.teacher.api_key_env == "123"
    assert cfg.limit == 5 and cfg.seed == 7
    assert cfg.teacher.extra_body == {"top_k": 20}


@pytest.mark.parametrize("text", ["yes", "on", "1", "True"])
def test_bool_spellings(text: str) -> None:
    assert build_run_config({"search": {"require_point": False}}, [f"search.require_point={text}"]).search.require_point is True


def test_null_only_where_optional() -> None:
    assert build_run_config({"limit": 3}, ["limit=null"]).limit is None
    with pytest.raises(ConfigError, match="search.simulations: null"):
        build_run_config({}, ["search.simulations=null"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("search.simulations=abc", "config.search.simulations"),
        ("search.simulations=2.5", "config.search.simulations"),
        ("search.simulations=true", "config.search.simulations"),
        ("teacher.temperature=warm", "config.teacher.temperature"),
        ("teacher.temperature=false", "config.teacher.temperature"),
        ("search.require_point=maybe", "config.search.require_point"),
        ("teacher.extra_body=[1, 2]", "config.teacher.extra_body"),
        ("search.simulationz=3", "simulationz"),
        ("teachr.model=x", "teachr"),
        ("search.children.n=3", "search"),
    ],
)
def test_bad_override_names_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build_run_config({}, [override])
    msg = str(exc.value)
    assert key in msg and "\n" not in msg


def test_override_wins_over_recipe_and_cli_wins_over_override() -> None:
    recipe = {"search": {"simulations": 4}, "teacher": {"concurrency": 8}}
    cfg = build_run_config(recipe, ["search.simulations=12", "teacher.concurrency=16"], teacher__concurrency=32, limit=None)
    assert cfg.search.simulations == 12
    assert cfg.teacher.concurrency == 32
    assert cfg.limit is None
    cfg = build_run_config(recipe, [], search__simulations=2, seed=3)
    assert cfg.search.simulations == 2 and cfg.seed == 3


def test_nested_overrides_into_free_sections() -> None:
    cfg = build_run_config({"task_options": {"a": 1}}, ["task_options.b.c=2", "export.format=trl"])
    assert cfg.task_options == {"a": 1, "b": {"c": 2}}
    assert cfg.export == {"format": "trl"}


def test_apply_overrides_does_not_mutate_the_recipe() -> None:
    recipe = {"search": {"simulations": 4}}
    out = apply_overrides(recipe, ["search.simulations=8", "search.children=2"])
    assert recipe == {"search": {"simulations": 4}}
    assert out == {"search": {"simulations": 8, "children": 2}}


def test_from_dict_sections() -> None:
    t = from_dict(TeacherConfig, {"max_tokens": "128"}, "teacher")
    assert t.max_tokens == 128
    assert from_dict(SearchConfig, None, "search") == SearchConfig()


# --------------------------------------------------------------------------------------------
# Hash
# --------------------------------------------------------------------------------------------


def test_hash_is_stable_and_ignores_operational_keys() -> None:
    base = build_run_config({}, [])
    h = base.hash()
    assert len(h) == 16 and h == build_run_config({}, []).hash()
    same = build_run_config({}, [
        "teacher.concurrency=512", "limit=3", "teacher.timeout_s=5", "teacher.max_retries=9",
        "teacher.base_url=http://other:9000/v1", "search.trees_in_flight=7", "data=x.jsonl", "image_root=/imgs",
        "export.format=verl", "train.lr=0.1",
    ])
    assert same.hash() == h


@pytest.mark.parametrize(
    "override",
    ["search.simulations=9", "search.children=4", "teacher.temperature=0.9", "teacher.model=other", "seed=1",
     "teacher.max_pixels=200000", "task=other", "task_options.x=1", "teacher.kind=openai"],
)
def test_hash_changes_with_what_a_run_computes(override: str) -> None:
    assert build_run_config({}, [override]).hash() != build_run_config({}, []).hash()


def test_hash_independent_of_key_order() -> None:
    a = build_run_config({"search": {"simulations": 4, "children": 2}, "teacher": {"temperature": 0.5}}, [])
    b = build_run_config({"teacher": {"temperature": 0.5}, "search": {"children": 2, "simulations": 4}}, [])
    assert a.hash() == b.hash()


def test_to_dict_round_trip() -> None:
    cfg = build_run_config({}, ["search.simulations=5", 'teacher.extra_body={"a": 1}'])
    assert from_dict(RunConfig, cfg.to_dict(), "config") == cfg


@pytest.mark.parametrize("override, message", [
    ("search.early_stop=solve", "search.early_stop: 'solve' is not one of none, solved, enough"),
    ("teacher.prompt_style=contine", "teacher.prompt_style: 'contine' is not one of continue, plain"),
    ("teacher.kind=gpt", "teacher.kind: 'gpt' is not one of openai, sim, vllm"),
    ("search.selection=ucb", "search.selection: 'ucb' is not one of uct, puct"),
    ("multiturn.crop_border=wrap", "multiturn.crop_border: 'wrap' is not one of shift, clip"),
    ("teacher.system_prompt=mine", "teacher.system_prompt: 'mine' is not one of task, model, none or @FILE"),
    ("user_text=hello", "user_text: 'hello' is not one of task, question, @FILE or a template with {question}"),
    ("search.min_point_distance=1", "search.min_point_distance: 1.0 is out of range (allowed: [0, 1))"),
    ("search.target_correct=0", "search.target_correct: 0 is out of range (allowed: ≥ 1)"),
])
def test_enum_like_and_bounded_fields_fail_in_one_line_naming_the_allowed_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build_run_config({}, [override])
    assert str(exc.value) == message


def test_choices_are_checked_in_a_recipe_and_in_a_section_built_alone() -> None:
    with pytest.raises(ConfigError, match=r"^search.early_stop: 'solve' is not one of none, solved, enough$"):
        build_run_config({"search": {"early_stop": "solve"}}, [])
    with pytest.raises(ConfigError, match=r"^multiturn.dot_space: 'px' is not one of crop, region$"):
        from_dict(MultiTurnConfig, {"dot_space": "px"}, "multiturn")
    cfg = build_run_config({}, ["search.early_stop=enough", "user_text=Q: {question}", "system_prompt=@p.txt"])
    assert (cfg.search.early_stop, cfg.user_text, cfg.system_prompt) == ("enough", "Q: {question}", "@p.txt")


def test_every_enum_like_field_is_declared_literal_and_its_default_is_allowed() -> None:
    """No enum-like ``str`` field left with its allowed values only in a comment: every default passes."""
    from typing import get_type_hints

    from mcts_engine.config_checks import choices_of

    for cls in (RunConfig, TeacherConfig, SearchConfig, MultiTurnConfig):
        hints = get_type_hints(cls)
        for name in ("kind", "prompt_style", "image_format", "early_stop", "selection", "crop_shape", "crop_border",
                     "dot_space", "system_prompt", "user_text"):
            if name in hints:
                assert choices_of(hints[name]) is not None, f"{cls.__name__}.{name}"
    validate_run_config(RunConfig())
