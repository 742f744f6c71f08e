"""The rollout's sampling configuration: built from the recipe's ``train.grpo`` knobs alone, every field set.

Why it is explicit: a checkpoint's ``generation_config.json`` carries its publisher's decoding defaults
(Qwen2.5-VL-Instruct ships ``repetition_penalty`` 1.05, ``top_k`` 1, ``top_p`` 0.001, ``temperature`` 0.1) and SFT
checkpoints copy it forward. transformers' ``generate`` fills every field a caller leaves unset from the model's
``generation_config``, so a rollout that passes only temperature/top-p/top-k is sampled from a *penalized*
distribution that the GRPO loss never scores (the loss computes log softmax(logits / T)). Here:

- :func:`generation_config` builds a fresh ``transformers.GenerationConfig`` with every sampling field set:
  ``do_sample`` True, the recipe's ``temperature``/``top_p``/``top_k``/``min_p``, ``repetition_penalty`` 1.0 (never a
  knob: it would change the distribution the loss scores), no n-gram ban, no typical/epsilon/eta cutoff, the
  stop tokens (``eos_token_id`` = the model's end tokens ∪ ``<|im_end|>``, :class:`~.data.SpecialIds`), ``pad_token_id``,
  ``max_new_tokens``, and the vision placeholder tokens suppressed.
- :func:`own_generation_config` swaps it in as the model's ``generation_config`` for the duration of a ``generate``
  call, so that no field transformers fills "from the model" can come from the checkpoint either.
- :func:`describe` is the record written to ``train_config.json`` and the ``start`` event of ``metrics.jsonl``.

Top-p/top-k/min-p only truncate the distribution; as in TRL, the loss scores the untruncated softmax at the
sampling temperature (with the defaults, 1.0 / 0 / 0, the two are identical).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sampling:
    """What a rollout samples with (``train.grpo``'s knobs)."""

    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0  # 0 = off


def generation_config(sampling: Sampling, eos: tuple[int, ...], pad: int, suppress: tuple[int, ...] = (),
                      num_return_sequences: int = 1) -> Any:
    """A fresh ``GenerationConfig`` with every field that shapes the sampled distribution set explicitly."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=True,
        num_beams=1,
        temperature=float(sampling.temperature),
        top_p=float(sampling.top_p),
        top_k=int(sampling.top_k),  # 0 = no top-k warper
        min_p=float(sampling.min_p) if sampling.min_p > 0 else None,
        typical_p=1.0,
        epsilon_cutoff=0.0,
        eta_cutoff=0.0,
        repetition_penalty=1.0,
        encoder_repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        length_penalty=1.0,
        renormalize_logits=False,
        max_new_tokens=int(sampling.max_new_tokens),
        min_new_tokens=0,
        num_return_sequences=int(num_return_sequences),
        eos_token_id=list(eos),
        pad_token_id=int(pad),
        bos_token_id=None,
        suppress_tokens=list(suppress) or None,
        use_cache=True,
    )


@contextlib.contextmanager
def own_generation_config(model: Any, config: Any) -> Iterator[None]:
    """``model.generation_config`` = ``config`` inside the block (restored after): nothing can be filled from the
    checkpoint's decoding defaults."""
    saved = getattr(model, "generation_config", None)
    model.generation_config = config
    try:
        yield
    finally:
        model.generation_config = saved


_LAST_CHAR_TABLES: dict[tuple[int, str], Any] = {}


def stop_string_criteria(tokenizer: Any, stops: tuple[str, ...], start: int) -> Any:
    """A ``StoppingCriteria`` that ends a sequence once its generated text (positions ≥ ``start``) contains one of
    ``stops`` — what ``generate(stop_strings=…)`` does, at a fraction of its per-step cost.

    The token that completes a stop string contains the stop string's last character, so each step only looks up
    whether the newest token holds that character (a vocabulary table built once per tokenizer) and decodes the
    tail of the rare sequences where it does."""
    import torch
    from transformers import StoppingCriteria

    tables = []
    for stop in stops:
        key = (id(tokenizer), stop[-1])
        if key not in _LAST_CHAR_TABLES:
            size = max(len(tokenizer), int(getattr(tokenizer, "vocab_size", 0) or 0))
            _LAST_CHAR_TABLES[key] = torch.tensor(
                [stop[-1] in tokenizer.decode([i], skip_special_tokens=False) for i in range(size)], dtype=torch.bool)
        tables.append((stop, _LAST_CHAR_TABLES[key]))
    tail = max(len(s) for s in stops)  # tokens of an ASCII stop string: at most one per character

    class StopStrings(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            if input_ids.shape[1] <= start:
                return done
            last = input_ids[:, -1].cpu()
            for stop, table in tables:
                hits = table[last.clamp(max=len(table) - 1)].nonzero().flatten().tolist()
                for row in hits:
                    ids = input_ids[row, max(start, input_ids.shape[1] - tail):].tolist()
                    if stop in tokenizer.decode(ids, skip_special_tokens=False):
                        done[row] = True
            return done

    return StopStrings()


def model_eos(model: Any) -> tuple[int, ...]:
    """The model's own end tokens: its ``generation_config.eos_token_id`` (a list for Qwen2.5-VL: ``<|im_end|>`` and
    ``<|endoftext|>``) and its config's ``eos_token_id`` (the text config's for a VLM). The rollout stops at any
    of them and at ``<|im_end|>`` (``SpecialIds.with_eos``), so no token after an end token is ever trained on."""
    found: list[int] = []
    sources = [getattr(model, "generation_config", None), getattr(model, "config", None),
               getattr(getattr(model, "config", None), "text_config", None)]
    for src in sources:
        value = getattr(src, "eos_token_id", None) if src is not None else None
        if value is None:
            continue
        found.extend(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    return tuple(dict.fromkeys(found))


def describe(sampling: Sampling, eos: tuple[int, ...], pad: int, stops: tuple[str, ...],
             suppress: tuple[int, ...] = ()) -> dict[str, Any]:
    """The sampling configuration as the run records it (every field, nothing implied)."""
    return {
        "do_sample": True,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "min_p": sampling.min_p,
        "repetition_penalty": 1.0,
        "max_new_tokens": sampling.max_new_tokens,
        "eos_token_ids": list(eos),
        "pad_token_id": pad,
        "stop_strings": list(stops),
        "suppressed_tokens": list(suppress),
        "from_checkpoint_generation_config": False,
    }


__all__ = ["Sampling", "describe", "generation_config", "model_eos", "own_generation_config", "stop_string_criteria"]
