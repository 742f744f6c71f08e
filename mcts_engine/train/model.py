"""Model and processor: loading (hub id or local path), freezing, LoRA, and HF-format checkpoints.

Choices:
- Qwen2-VL / Qwen2.5-VL processors are loaded as an *image-only* subclass of the model's own processor
  class: the stock class insists on a video processor, which needs torchvision (absent here, and never
  needed to train on images). Everything else (tokenizer, chat template, image processor) is the stock one.
- Checkpoints are written so that a stock ``transformers`` (with or without torchvision) and ``vllm serve``
  load them: ``processor_class`` names the stock class, and a legacy ``preprocessor_config.json`` (image
  processor + ``min_pixels``/``max_pixels``) sits next to 5.x's ``processor_config.json``.
- The processor's pixel bounds are widened to hold every frame of the data, so images already resized by
  the exporter are NOT resized again (points stay in the frame the teacher saw); see ``fit_processor_to_frames``.
- LoRA (peft, optional) targets the language model's linear layers only; a LoRA checkpoint holds the merged
  full weights (servable as is) plus ``adapter/`` (for ``--resume``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import TrainSetupError  # noqa: F401  (re-exported: the trainer's modules import it from here)

log = logging.getLogger("mcts_engine.train")

QWEN_VL_TYPES = ("qwen2_5_vl", "qwen2_vl")




# ------------------------------------------------------------------------------------------------
# Processor
# ------------------------------------------------------------------------------------------------


def _image_only(base: type) -> type:
    """A subclass of a Qwen-VL processor class without the video processor (no torchvision needed)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):  # noqa: ANN001
        base.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return type(f"ImageOnly{base.__name__}", (base,), {"__init__": __init__, "__module__": __name__})


_IMAGE_ONLY: dict[str, type] = {}


def image_only_processor_class(model_type: str) -> type:
    """``ImageOnlyQwen2_5_VLProcessor`` (or the Qwen2-VL one): reloads with its own ``from_pretrained``."""
    if model_type not in _IMAGE_ONLY:
        if model_type == "qwen2_5_vl":
            from transformers import Qwen2_5_VLProcessor as base
        elif model_type == "qwen2_vl":
            from transformers import Qwen2VLProcessor as base
        else:
            raise ValueError(f"no image-only processor for model type {model_type!r}")
        _IMAGE_ONLY[model_type] = _image_only(base)
    return _IMAGE_ONLY[model_type]


def stock_processor_class_name(processor: Any) -> str:
    """The stock class name a saved checkpoint should declare (``Qwen2_5_VLProcessor``, not our subclass)."""
    cls = type(processor)
    for klass in cls.__mro__:
        if klass.__module__.startswith("transformers."):
            return klass.__name__
    return cls.__name__


def model_type_of(path_or_id: str) -> str:
    from transformers import AutoConfig

    try:
        return str(AutoConfig.from_pretrained(path_or_id).model_type)
    except (OSError, ValueError) as exc:
        raise TrainSetupError(f"--model {path_or_id}: cannot load its config ({str(exc).splitlines()[0]})") from None


def load_processor(path_or_id: str, model_type: str | None = None) -> Any:
    """The model's processor (tokenizer + image processor + chat template)."""
    from transformers import AutoProcessor

    model_type = model_type or model_type_of(path_or_id)
    try:
        if model_type in QWEN_VL_TYPES:
            processor = image_only_processor_class(model_type).from_pretrained(path_or_id)
        else:
            processor = AutoProcessor.from_pretrained(path_or_id)
    except (OSError, ValueError, TypeError) as exc:
        raise TrainSetupError(f"--model {path_or_id}: cannot load its processor ({str(exc).splitlines()[0]})") from None
    if getattr(processor, "image_processor", None) is None or getattr(processor, "tokenizer", None) is None:
        raise TrainSetupError(f"--model {path_or_id}: its processor has no image processor/tokenizer (not a VLM?)")
    if not getattr(processor, "chat_template", None) and not getattr(processor.tokenizer, "chat_template", None):
        raise TrainSetupError(f"--model {path_or_id}: no chat template (a base model? use an -Instruct one)")
    return processor


def image_pixel_bounds(image_processor: Any) -> tuple[int, int]:
    """(min_pixels, max_pixels) the image processor resizes into."""
    size = getattr(image_processor, "size", None) or {}
    get = size.get if isinstance(size, dict) else (lambda k, d=None: getattr(size, k, d))
    lo = get("shortest_edge") or getattr(image_processor, "min_pixels", None) or 56 * 56
    hi = get("longest_edge") or getattr(image_processor, "max_pixels", None) or 28 * 28 * 1280
    return int(lo), int(hi)


def set_image_pixel_bounds(image_processor: Any, min_pixels: int, max_pixels: int) -> None:
    size = getattr(image_processor, "size", None)
    if size is None or isinstance(size, dict):
        image_processor.size = {**(size or {}), "shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)}
    else:  # transformers 5.x SizeDict (a mutable dataclass)
        size.shortest_edge, size.longest_edge = int(min_pixels), int(max_pixels)
    for attr, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if getattr(image_processor, attr, None) is not None:
            setattr(image_processor, attr, int(value))


def fit_processor_to_frames(processor: Any, frames: list[tuple[int, int]], max_pixels: int = 0) -> tuple[int, int]:
    """Widen the processor's pixel bounds so no frame (w, h) of the data is resized again.

    The Qwen processor resizes with ``smart_resize``: sides rounded to multiples of patch·merge (28), then scaled
    into [min_pixels, max_pixels]. A frame that the exporter already sized (multiples of 28, within bounds) is
    therefore left exactly as it is once ``max_pixels >= w·h`` and ``min_pixels <= w·h``. ``max_pixels`` > 0
    forces a cap instead (rows above it are then resized; :func:`data.image_tokens` counts them).
    Returns the bounds set.
    """
    ip = processor.image_processor
    lo, hi = image_pixel_bounds(ip)
    if frames:
        areas = [w * h for w, h in frames]
        lo = min(lo, min(areas))
        hi = max(hi, max(areas))
    if max_pixels > 0:
        hi = max_pixels
    set_image_pixel_bounds(ip, lo, hi)
    return lo, hi


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------


def load_model(path_or_id: str, dtype: torch.dtype, attn_implementation: str | None = None) -> nn.Module:
    """A vision-language model with a causal-LM head, in ``dtype``, on CPU (the caller moves it)."""
    from transformers import AutoModelForImageTextToText

    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForImageTextToText.from_pretrained(path_or_id, **kwargs)
    except (OSError, ValueError) as exc:
        raise TrainSetupError(f"--model {path_or_id}: cannot load the model ({str(exc).splitlines()[0]})") from None
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The HF model under DDP/FSDP/peft wrappers (peft's injected LoRA layers stay in place)."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP
            model = model.module
        elif hasattr(model, "get_base_model"):  # peft
            model = model.get_base_model()
        else:
            return model


def vision_tower(model: nn.Module) -> nn.Module | None:
    base = unwrap(model)
    for path in ("model.visual", "visual", "model.vision_tower", "vision_tower"):
        cur: Any = base
        for part in path.split("."):
            cur = getattr(cur, part, None)
            if cur is None:
                break
        if isinstance(cur, nn.Module):
            return cur
    return None


def freeze_vision(model: nn.Module) -> int:
    """Freeze the vision tower (ViT + merger). Returns the number of frozen parameters."""
    tower = vision_tower(model)
    if tower is None:
        raise TrainSetupError("freeze_vision: the model has no vision tower named visual/vision_tower")
    n = 0
    for p in tower.parameters():
        p.requires_grad_(False)
        n += p.numel()
    return n


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total)."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def require_peft() -> Any:
    try:
        import peft
    except ImportError:
        raise TrainSetupError(
            "train.lora_r > 0 needs peft, which is not installed: pip install 'mcts-engine[peft]' (or pip install peft)"
        ) from None
    return peft


def lora_target_regex(targets: str) -> str:
    """peft ``target_modules`` regex: the named linear layers of the language model only (never the ViT)."""
    names = [t.strip() for t in targets.split(",") if t.strip()]
    if not names:
        raise TrainSetupError("train.lora_targets: empty")
    return r".*language_model.*\.(" + "|".join(names) + r")$"


def apply_lora(model: nn.Module, r: int, alpha: int, dropout: float, targets: str) -> nn.Module:
    peft = require_peft()
    config = peft.LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_target_regex(targets), bias="none"
    )
    return peft.get_peft_model(model, config)


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The base model's state dict with LoRA deltas folded in (W + B·A·scale), without touching the model."""
    base = unwrap(model)
    state = {k: v.detach() for k, v in base.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    deltas: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
            for adapter in getattr(module, "active_adapters", ["default"]):
                d = module.get_delta_weight(adapter).detach()
                key = f"{name}.weight"
                deltas[key] = deltas[key] + d if key in deltas else d
    for key, value in state.items():
        if ".lora_" in key or "lora_magnitude" in key:
            continue
        clean = key.replace(".base_layer.", ".")
        if clean in deltas:
            value = (value.float() + deltas[clean].float()).to(value.dtype)
        out[clean] = value
    return out


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------


def save_pretrained(
    model: nn.Module, processor: Any, out_dir: str | Path, state_dict: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write an HF-format checkpoint (model + processor) that transformers and ``vllm serve`` load.

    ``state_dict`` (already gathered, e.g. from FSDP) overrides the model's own. A LoRA model is saved merged.
    ``dtype``: floating tensors are saved in it (the training dtype: bf16 for a bf16 run) and ``config.json``'s
    ``dtype``/``torch_dtype`` name it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = unwrap(model)
    if state_dict is None and any(".lora_" in k for k, _ in base.named_parameters()):
        state_dict = merged_state_dict(model)
    if dtype is not None:
        source = state_dict if state_dict is not None else {k: v.detach() for k, v in base.state_dict().items()}
        if any(v.is_floating_point() and v.dtype != dtype for v in source.values()):
            state_dict = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in source.items()}
    if state_dict is not None:
        base.save_pretrained(out, state_dict=_drop_tied(base, state_dict))
    else:
        base.save_pretrained(out)
    processor.save_pretrained(out)
    if dtype is not None:
        _write_dtype(out / "config.json", dtype)
    _make_servable(out, processor)
    return out


def _write_dtype(path: Path, dtype: torch.dtype) -> None:
    """Name the saved weights' dtype in ``config.json`` (top level and the text config)."""
    if not path.exists():
        return
    data = json.loads(path.read_text())
    name = str(dtype).removeprefix("torch.")
    for section in (data, data.get("text_config")):
        if isinstance(section, dict):
            section["dtype"] = name
            section.pop("torch_dtype", None)  # rewritten from dtype by _add_legacy_config_keys
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _drop_tied(base: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Without tied copies (e.g. ``lm_head.weight`` = the embedding): the model re-ties them on load."""
    cfg = getattr(base, "config", None)
    text_cfg = getattr(cfg, "text_config", None)
    tied = bool(getattr(cfg, "tie_word_embeddings", False) or getattr(text_cfg, "tie_word_embeddings", False))
    keys = getattr(base, "_tied_weights_keys", None) or {}
    if not tied or not isinstance(keys, dict):
        return state_dict
    return {k: v for k, v in state_dict.items() if not (k in keys and keys[k] in state_dict)}


def checkpoint_names(base: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` (keys as the in-memory model names them) under the names ``save_pretrained`` writes: the same
    conversion transformers applies when saving. transformers 5.x nests Qwen2.5-VL as ``model.language_model.*`` /
    ``model.visual.*`` in memory and saves ``model.*`` / ``visual.*`` (``revert_weight_conversion``); 4.x reverses
    ``_checkpoint_conversion_mapping``; older models save their in-memory names. Renaming never copies a tensor."""
    try:
        from transformers.core_model_loading import revert_weight_conversion  # transformers >= 5
    except ImportError:
        revert_weight_conversion = None
    if revert_weight_conversion is not None:
        return dict(revert_weight_conversion(base, dict(state)))
    import re

    mapping = getattr(base, "_checkpoint_conversion_mapping", None) or {}
    if not mapping:
        return dict(state)
    reverse = {v: k for k, v in mapping.items()}  # as transformers 4.x save_pretrained reverses it
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for pattern, replacement in reverse.items():
            replacement = re.sub(r"\(.*\)", "", replacement.lstrip("^"))
            key, n = re.subn(pattern, replacement, key)
            if n:
                break
        out[key] = value
    return out


def checkpoint_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight of the policy under the name its saved checkpoint holds (what a weight sync sends to an
    inference engine that loaded that checkpoint): parameters unwrapped from DDP/peft, LoRA deltas folded in
    (``merged_state_dict``), tied copies dropped (as in the checkpoint), renamed by :func:`checkpoint_names`.
    Without LoRA the tensors are the live parameters (detached, no copy)."""
    base = unwrap(model)
    if any(".lora_" in k for k, _ in base.named_parameters()):
        state = _drop_tied(base, merged_state_dict(model))
    else:
        state = {k: p.detach() for k, p in base.named_parameters()}  # tied parameters are listed once
    return checkpoint_names(base, state)


def _add_legacy_config_keys(path: Path) -> None:
    """transformers 5.x writes ``rope_parameters`` and ``dtype``; 4.x (which vLLM pins) reads ``rope_scaling``
    (with ``mrope_section``), ``rope_theta`` and ``torch_dtype`` from the language model's config. Write both
    spellings there (5.x folds the old ones into ``rope_parameters`` without a warning)."""
    if not path.exists():
        return
    data = json.loads(path.read_text())

    def fix(section: dict[str, Any]) -> None:
        rope = section.get("rope_parameters")
        if isinstance(rope, dict) and "rope_scaling" not in section:
            legacy = {k: v for k, v in rope.items() if k != "rope_theta"}
            legacy.setdefault("rope_type", "default")
            section["rope_scaling"] = legacy
            if "rope_theta" in rope:
                section.setdefault("rope_theta", rope["rope_theta"])
        if "dtype" in section and "torch_dtype" not in section:
            section["torch_dtype"] = section["dtype"]

    text = data.get("text_config")
    if isinstance(text, dict):
        fix(text)
        if "dtype" in data:
            data.setdefault("torch_dtype", data["dtype"])
    else:
        fix(data)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _make_servable(out: Path, processor: Any) -> None:
    """Name the stock processor class in the saved files and add the legacy image-processor file."""
    stock = stock_processor_class_name(processor)
    for name in ("processor_config.json", "tokenizer_config.json", "preprocessor_config.json"):
        p = out / name
        if p.exists():
            data = json.loads(p.read_text())
            if "processor_class" in data:
                data["processor_class"] = stock
            if data.get("tokenizer_class") == "TokenizersBackend":  # 5.x's generic class; 4.x knows this name
                data["tokenizer_class"] = "PreTrainedTokenizerFast"
            p.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    _add_legacy_config_keys(out / "config.json")
    legacy = out / "preprocessor_config.json"
    if not legacy.exists():
        ip = processor.image_processor
        data = ip.to_dict() if hasattr(ip, "to_dict") else {}
        lo, hi = image_pixel_bounds(ip)
        data.update({"min_pixels": lo, "max_pixels": hi, "processor_class": stock})
        data.setdefault("image_processor_type", type(ip).__name__.replace("Pil", "").replace("Fast", ""))
        legacy.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


# ------------------------------------------------------------------------------------------------
# The policy as both trainers build it
# ------------------------------------------------------------------------------------------------


def build_policy(
    model_path: str,
    resume_from: Path | None,
    dtype: torch.dtype,
    device: torch.device,
    *,
    freeze_vision_tower: bool,
    lora_r: int,
    lora_alpha: int,
    lora_dropout: float,
    lora_targets: str,
    gradient_checkpointing: bool,
) -> nn.Module:
    """Load (or resume) the model, freeze the vision tower, add LoRA, enable checkpointing, move to ``device``.

    Resuming a full fine-tune loads the checkpoint's weights; resuming LoRA loads ``--model`` plus the saved adapter.
    """
    if lora_r > 0:
        require_peft()
    source = str(resume_from) if (resume_from is not None and lora_r == 0) else model_path
    model = load_model(source, dtype)
    model.config.use_cache = False
    if freeze_vision_tower:
        freeze_vision(model)
    if gradient_checkpointing:
        # Non-reentrant checkpointing: correct with frozen inputs (embeddings/vision) and under DDP.
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora_r > 0:
        peft = require_peft()
        if resume_from is not None and (resume_from / "adapter").exists():
            model = peft.PeftModel.from_pretrained(model, str(resume_from / "adapter"), is_trainable=True)
        else:
            model = apply_lora(model, lora_r, lora_alpha, lora_dropout, lora_targets)
    return model.to(device)
