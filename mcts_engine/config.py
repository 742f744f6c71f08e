"""Configuration: typed dataclasses, recipe YAML loading, ``--set key=value`` overrides, a config hash.

A recipe (``recipes/<task>.yaml``, shipped inside the package) has one section per stage: ``teacher``, ``search``,
``export``, ``train`` (plus ``task_options``, read by the task module). Every knob is a dataclass field with a documented
default, so an unknown key in a recipe or an override is a one-line error, not a silent no-op.

Validation has one style, applied when a config is built (:func:`from_dict`, :func:`validate_run_config`), never in
``__post_init__`` nor where a value is used: an enum-like field is typed ``Literal[...]`` (optionally in a union with
``AtFile`` / ``QuestionTemplate``, the open text forms it also takes), and ``check_choices`` reads the allowed
values from the annotation; a numeric field's bounds are a row of ``_RANGES``; the one cross-field rule is in
``validate_run_config`` (all three in ``config_checks.py``). ``docs/config.md`` is generated from these dataclasses
(``scripts/gen_config_docs.py``): a field's meaning is its comment (the full-line comments right above it plus the
one at its line's end).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_type_hints

import yaml

from .config_checks import AtFile, ConfigError, QuestionTemplate, check_choices, check_ranges, choices_of, validate_run_config

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"  # package data: the bundled recipes


ImageFormat = Literal["auto", "png", "jpeg"]  # how a teacher frame is encoded (samples.frame_format)
IMAGE_FORMATS: tuple[str, ...] = get_args(ImageFormat)
# Where a system prompt comes from (``protocol.resolve_system_prompt``): the task's text, the serving chat
# template's default (no system message), an empty system message, or ``@FILE`` (the file's exact text).
SystemPromptSource = Literal["task", "model", "none"] | AtFile
# the first user turn: the task's wording, the question as written, or a template (inline or @FILE)
UserTextSource = Literal["task", "question"] | AtFile | QuestionTemplate
CropShape = Literal["aspect", "square"]  # multi-turn crop output: longer side = crop_size | crop_size x crop_size
CropBorder = Literal["shift", "clip"]  # a region at the frame's edge: shifted inside (stays square) | clipped
DotSpace = Literal["crop", "region"]  # the dot's radius in output-crop pixels (drawn after resizing) | region pixels
TeacherKind = Literal["openai", "sim", "vllm"]
PromptStyle = Literal["continue", "plain"]
SelectionRule = Literal["uct", "puct"]
EarlyStop = Literal["none", "solved", "enough"]

# MultiTurnConfig keys a protocol preset sets; records and hashes leave them out while they hold their
# defaults, so run directories made before they existed keep their config hash (and resume)
PROTOCOL_MT_KEYS = ("observation_text", "crop_shape", "crop_border", "dot_space", "dot_color", "dot_outline",
                    "dot_outline_width", "final_think", "final_user_text")
DEFAULT_OBSERVATION_TEXT = "<observation>\nZoomed view around ({x}, {y}):\n<image>\n</observation>"


@dataclass
class TeacherConfig:
    kind: TeacherKind = "sim"  # openai: an OpenAI-compatible server | sim: a scripted stand-in | vllm: in-process
    base_url: str = "http://localhost:8000/v1"  # comma-separated list spreads requests over servers
    model: str = "Qwen/Qwen2.5-VL-72B-Instruct"  # the served model name
    api_key_env: str = "OPENAI_API_KEY"  # read at run time; never stored in the run directory
    temperature: float = 1.0  # sampling temperature of every request
    # the temperature of a request whose reply must be the final answer (the last allowed turn); null = temperature
    final_temperature: float | None = None
    top_p: float = 1.0  # nucleus sampling
    max_tokens: int = 256  # per step
    concurrency: int = 64  # requests in flight
    timeout_s: float = 300.0  # per request
    max_retries: int = 3  # retries of a failed request (teachers/retry.py: connection errors, timeouts, malformed replies, 408/409/429/5xx)
    prompt_style: PromptStyle = "continue"  # continue: vLLM continue_final_message; plain: steps as assistant turns
    max_pixels: int = 1280 * 28 * 28  # the teacher's frame; points live in it
    min_pixels: int = 56 * 56  # a smaller image is scaled up to at least this many pixels
    # each image is resized to the frame and encoded once per sample: auto = JPEG for a JPEG source
    # (already lossy), lossless PNG for anything else; png | jpeg force one
    image_format: ImageFormat = "auto"
    jpeg_quality: int = 90  # when a frame (or a multi-turn crop) is sent as JPEG
    extra_body: dict[str, Any] = field(default_factory=dict)  # passed through to the server
    logprobs: bool = False  # ask the server for the sampled tokens' log-probs (Continuation.logprob)
    ca_file: str | None = None  # PEM bundle of extra trusted CAs for https teachers (SSL_CERT_FILE also honoured)
    # generate: the teacher's system prompt: task (the task's teacher prompt) | model (no system message: the
    # server's chat template applies its default) | none (an empty system message) | @FILE (the file's exact text)
    system_prompt: SystemPromptSource = "task"
    # generate: warn once per run when a source image is shrunk by more than this factor (longer side) to fit
    # max_pixels (0 = never): the teacher then points in a frame with less detail than the source has
    warn_downscale: float = 0.0
    # sim teacher only (a scripted stand-in for demos/tests/benchmarks, never a real model)
    sim_accuracy: float = 0.45  # P(final answer is right) with no annotated region looked at
    sim_latency_s: float = 0.0  # per request
    sim_mean_steps: float = 2.5  # grounded steps before answering
    sim_point_noise: float = 0.15  # jitter, as a fraction of the box size
    sim_bad_step_rate: float = 0.05  # P(a step points outside the frame or repeats a point)


@dataclass
class SearchConfig:
    simulations: int = 24  # selection→expansion→rollouts→backup rounds per tree (docs/search.md: the yield benchmark)
    children: int = 3  # continuations asked per expansion (one request, n=children)
    rollouts: int = 2  # rollouts per new child, continued to a final answer
    max_depth: int = 10  # steps on a path; at the last one the answer is forced
    exploration: float = 2.0  # UCT c in Q + c*sqrt(ln(N_parent+1)/(N_child+1))
    parallel_simulations: int = 1  # simulations in flight per tree (virtual loss keeps them apart)
    virtual_loss: float = 1.0  # pending visits added (with zero value) while a simulation is in flight
    trees_in_flight: int = 0  # 0 = derived from teacher.concurrency
    max_calls: int = 200  # teacher requests per sample (budget)
    early_stop: EarlyStop = "none"  # none | solved (a verified-correct leaf) | enough (target_correct + one wrong path)
    require_point: bool = True  # a thought step must name an (x, y) point
    step_retries: int = 2  # a rollout step rejected (bad point/format) is re-asked this many times
    # selection rule (docs/search.md): puct = Q + c_puct*P*sqrt(N_parent)/(1+N_child), P from the teacher's
    # log-probs (generate asks for them; uniform when the server gives none); uct = the reference's rule above
    selection: SelectionRule = "puct"
    puct_exploration: float = 1.0  # c_puct (exploration is UCT's c)
    prior_temperature: float = 1.0  # PUCT priors = softmax(mean token log-prob / prior_temperature)
    target_correct: int = 4  # early_stop=enough: distinct verified-correct paths a tree needs
    # a step within this distance (fraction of the frame's diagonal) of a point on its path is a repeat;
    # a sibling step within it of another sibling merges into it; 0 = only exact repeats
    min_point_distance: float = 0.02
    rollouts_after_solved: int = -1  # rollouts per new child once the tree holds a correct path; -1 = rollouts
    rollout_depth: int = 0  # steps a rollout may take before its answer is forced; 0 = up to max_depth
    adaptive_rollouts: bool = False  # a new child under a node whose Q is below the root's gets one rollout
    max_consecutive_errors: int = 3  # failed requests in a row that end a tree early (it keeps what it found)
    # progressive widening (docs/search.md): a node may hold k(N) = max(children, ceil(widen_c*N^widen_alpha))
    # distinct children, at most max(children, max_children); it is fully expanded (the solver may close it)
    # at that cap or after expand_asks requests that brought no new distinct child
    max_children: int = 8  # 0 = children (no widening)
    widen_c: float = 3.0
    widen_alpha: float = 0.5
    expand_asks: int = 2
    answer_probe: bool = False  # a new thought child first gets one forced-answer request (then its rollouts)


@dataclass
class MultiTurnConfig:
    """The zoom environment (``zoom/environment.py``): each step's tool call returns a crop around its point."""

    enabled: bool = False  # search (and eval/export) in zoom turns instead of one grounded chain
    crop_offset: int = 182  # half the side of the square region cut around the point (frame px)
    crop_size: int = 672  # the region's longer side after resizing (rounded to a multiple of 28)
    draw_dot: bool = False  # mark the point on the crop
    dot_radius: int = 6  # the dot's radius (pixels of dot_space)
    # The protocol of a released checkpoint (docs/protocols.md); defaults = this project's own environment.
    # The observation turn: {x}, {y} = the point, <image> = where the crop goes; @FILE reads the template
    observation_text: str = DEFAULT_OBSERVATION_TEXT
    crop_shape: CropShape = "aspect"  # aspect: longer side -> crop_size | square: resized to crop_size x crop_size
    crop_border: CropBorder = "shift"  # shift: a region at the edge moves inside the frame | clip: it is cut at the edge
    dot_space: DotSpace = "crop"  # crop: dot drawn after resizing (radius in crop px) | region: before (region px)
    dot_color: str = "#ff0000"  # the dot's fill colour
    dot_outline: str = "#ffffff"  # "" = no outline
    dot_outline_width: int = 1  # pixels
    # The last allowed turn (the answer is required): final_think = a thought pre-filled before <answer>
    # (continue style; "" = only <answer>; @FILE reads it); final_user_text = the user turn that asks for the
    # answer (plain style; "" = the built-in one; @FILE reads it)
    final_think: str = ""
    final_user_text: str = ""  # see final_think


@dataclass
class EvalConfig:
    """``eval``/``demo`` settings that belong to a benchmark protocol (``--protocol``)."""

    # cap the image's longer side before the frame is computed (0 = no cap); the frame (multiples of 28,
    # <= teacher.max_pixels) is then computed from the capped size, and points/boxes stay exact
    max_long_side: int = 0


@dataclass
class InputConfig:
    """What an input row may name and hold (``docs/input-data.md``); a row past a bound fails alone."""

    allow_outside_root: bool = False  # image paths may resolve outside the image root (--allow-outside-root)
    max_image_pixels: int = 178_956_970  # width × height of one decoded image (2 × Pillow's default bound)
    max_question_chars: int = 65_536  # a longer question fails its row
    max_answer_chars: int = 16_384  # a longer answer fails its row
    max_choice_chars: int = 4_096  # each option
    max_choices: int = 64  # options of one multiple-choice question
    max_row_bytes: int = 16 * 1024 * 1024  # one JSONL line


@dataclass
class StoreConfig:
    """The run directory (``store/``). Nothing here changes what a run computes (left out of the hash)."""

    checkpoint_s: float = 5.0  # trees in flight are checkpointed to inflight.jsonl at least this often


@dataclass
class RunConfig:
    task: str = "sat2"  # a task module's name (mcts_engine/tasks/)
    data: str | None = None  # samples: JSONL, parquet, a datasets dir or a benchmark layout; null = the bundled set
    image_root: str | None = None  # relative image paths resolve here (default: next to the data)
    limit: int | None = None  # process at most this many samples (null = all)
    seed: int = 0  # seeds the search and the sim teacher
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    multiturn: MultiTurnConfig = field(default_factory=MultiTurnConfig)
    inputs: InputConfig = field(default_factory=InputConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    task_options: dict[str, Any] = field(default_factory=dict)  # read by the task module (its docstring lists them)
    export: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    # The model under test / the student (eval, demo, export rows, GRPO prompts): task | model | none | @FILE
    # (see TeacherConfig.system_prompt; docs/protocols.md)
    system_prompt: SystemPromptSource = "task"
    # the first user turn: task (the task's wording) | question (the question as written) | a template with
    # {question} | @FILE (such a template)
    user_text: UserTextSource = "task"
    protocol: str = ""  # the preset applied (--protocol), for the record
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        self.derive()

    def derive(self) -> RunConfig:
        """Settings other settings imply (one rule each, applied when built and again before a run):
        PUCT's priors are the teacher's log-probs, so ``search.selection: puct`` asks for them."""
        if self.search.selection == "puct":
            self.teacher.logprobs = True
        return self

    # Keys left out of the hash while they hold their default (added after run directories existed: a run
    # made before them resumes; set to anything else, they change the hash)
    _HASHED_UNLESS_DEFAULT = ("teacher.system_prompt", "system_prompt", "user_text", "protocol", "eval",
                              *(f"multiturn.{k}" for k in PROTOCOL_MT_KEYS))

    # Keys that do not change what a run computes: excluded from the hash, so resume accepts them.
    _UNHASHED = ("limit", "teacher.concurrency", "teacher.timeout_s", "teacher.max_retries", "teacher.base_url",
                 "teacher.api_key_env", "teacher.ca_file", "teacher.warn_downscale", "search.trees_in_flight", "export", "train", "data", "image_root",
                 "store")
    _UNHASHED += ("inputs",)  # which rows are refused, not what a finished tree holds

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as stored in ``config.json``: teacher URLs without their credentials."""
        from .teachers.urls import public_urls

        d = asdict(self)
        d["teacher"]["base_url"] = public_urls(d["teacher"]["base_url"])
        return d

    def hash(self) -> str:
        d = json.loads(json.dumps(self.to_dict(), sort_keys=True, default=str))
        default = json.loads(json.dumps(RunConfig().to_dict(), sort_keys=True, default=str))
        for key in self._HASHED_UNLESS_DEFAULT:
            parts = key.split(".")
            cur, ref = d, default
            for p in parts[:-1]:
                cur, ref = cur.get(p, {}), ref.get(p, {})
            if cur.get(parts[-1]) == ref.get(parts[-1]):
                cur.pop(parts[-1], None)
        for key in self._UNHASHED:
            parts = key.split(".")
            cur = d
            for p in parts[:-1]:
                cur = cur.get(p, {})
            cur.pop(parts[-1], None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


T = TypeVar("T")


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Coerce a YAML/CLI value to a field's declared type (str→int/float/bool where needed)."""
    origin = getattr(typ, "__origin__", None)
    type_name = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    text_type = str(typ)
    if value is None:
        if "None" in text_type:
            return None
        raise ConfigError(f"{key}: null is not allowed (expected {type_name})")
    try:
        if typ is bool or text_type == "bool":
            if isinstance(value, str):
                low = value.strip().lower()
                if low in {"1", "true", "yes", "on"}:
                    return True
                if low in {"0", "false", "no", "off"}:
                    return False
                raise ValueError(value)
            return bool(value)
        if typ is int or text_type in {"int", "int | None"}:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)  # true/false is not a number (int(True) would be 1)
            return int(value)
        if typ is float or text_type == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if typ is str or text_type in {"str", "str | None"}:
            return str(value)
        if origin is dict or text_type.startswith("dict"):
            if isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, dict):
                raise ValueError(value)
            return value
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ConfigError(f"{key}: {value!r} is not a valid {type_name}") from None
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys are an error naming ``where.key``."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping of keys, got {type(data).__name__} {data!r}"[:200])
    data = dict(data or {})
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            kwargs[f.name] = from_dict(typ, data[f.name], f"{where}.{f.name}")
        else:
            kwargs[f.name] = _coerce(data[f.name], typ, f"{where}.{f.name}")
    built = cls(**kwargs)
    check_choices(built, where)
    check_ranges(built, where)
    return built


def section(data: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    """``data[name]`` as a mapping ({} when absent); a ``ConfigError`` naming ``where.name`` when it is not one."""
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}.{name}: must be a mapping of keys, got {type(value).__name__} {value!r}"[:200])
    return value


def parse_override(text: str, text_field: bool = False) -> tuple[list[str], Any]:
    """``search.simulations=16`` → (["search", "simulations"], 16). Values parse as YAML scalars, except
    for a ``text_field`` (a field declared ``str``): its value is the text as written — ``0755`` stays
    ``"0755"``, ``yes``/``no`` stay words — unless quoted YAML-style (``'"x"'``), or ``null``/``~``."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    stripped = raw.strip()
    if text_field and not (stripped[:1] in ("'", '"') or stripped.lower() in ("null", "~")):
        return key.split("."), stripped
    try:
        value = yaml.safe_load(raw) if stripped else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _is_text_field(schema: Any, path: list[str]) -> bool:
    """Whether ``path`` names a field declared ``str`` (or ``str | None``) in ``schema``: a dataclass,
    or a mapping of section name → dataclass. Keys inside dict-typed fields are not text fields."""
    cur = schema
    for i, name in enumerate(path):
        if isinstance(cur, dict):
            cur = cur.get(name)
            continue
        if not dataclasses.is_dataclass(cur):
            return False
        hints = get_type_hints(cur)
        if name not in hints:
            return False
        cur = hints[name]
        if i == len(path) - 1:
            return cur is str or str(cur) in ("str | None", "typing.Optional[str]") or choices_of(cur) is not None
    return False


def apply_overrides(data: dict[str, Any], overrides: list[str], schema: Any = None) -> dict[str, Any]:
    """``data`` with ``--set`` overrides applied (a copy). With ``schema`` (see :func:`_is_text_field`),
    a field declared ``str`` takes the text as written instead of its YAML reading."""
    out = json.loads(json.dumps(data, default=str))
    for text in overrides:
        path, value = parse_override(text)
        if schema is not None and _is_text_field(schema, path):
            path, value = parse_override(text, text_field=True)
        cur = out
        for p in path[:-1]:
            nxt = cur.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {text!r}: {p!r} is not a section")
            cur = nxt
        cur[path[-1]] = value
    return out


def recipe_path(name_or_path: str) -> Path:
    """A recipe file path, or the bundled ``recipes/<name>.yaml``."""
    p = Path(name_or_path)
    if p.suffix in {".yaml", ".yml"} or p.exists():
        return p
    return RECIPES_DIR / f"{name_or_path}.yaml"


def bundled_recipes() -> list[str]:
    """The names of the recipes shipped in the package (``mcts_engine/recipes/<name>.yaml``)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(path: str | Path | None, task: str, _depth: int = 0) -> dict[str, Any]:
    """The recipe as a plain dict: ``path`` (a file, or a bundled recipe's name such as
    ``vstar_multiturn``) if given, else the bundled ``recipes/<task>.yaml``; a missing one (named or
    the task's default) is a one-line ``ConfigError`` listing the bundled names.
    ``extends: NAME`` in a recipe loads NAME first and merges this recipe on top."""
    p = recipe_path(str(path)) if path else recipe_path(task)
    if not p.exists():
        what = f"recipe {path}" if path else f"task {task!r}: default recipe {p}"
        raise ConfigError(f"{what}: no such file or bundled recipe (bundled: {', '.join(bundled_recipes()) or 'none'})")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {p}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {p}: top level must be a mapping")
    base = data.pop("extends", None)
    if base:
        if _depth >= 8:
            raise ConfigError(f"recipe {p}: 'extends' chain is too deep (a cycle?)")
        data = deep_merge(load_recipe(str(base), task, _depth + 1), data)
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, section by section (mappings merge, everything else replaces)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_run_config(recipe: dict[str, Any], overrides: list[str], **cli: Any) -> RunConfig:
    """Recipe ← ``--set`` overrides ← explicit CLI flags (flags given as ``section.key`` kwargs or top-level)."""
    data = apply_overrides(recipe, overrides, schema=RunConfig)
    for key, value in cli.items():
        if value is None:
            continue
        section, _, name = key.partition("__")
        if name:
            data.setdefault(section, {})[name] = value
        else:
            data[section] = value
    cfg = from_dict(RunConfig, data, "config")
    validate_run_config(cfg)
    return cfg
