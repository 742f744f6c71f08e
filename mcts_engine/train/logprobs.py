"""Per-token log-probabilities of the target tokens: the one forward pass SFT and GRPO share.

``TokenScorer(model)(batch)`` runs the vision-language model up to its last hidden state, then applies the LM
head ONLY at positions whose next token is a target (``target_mask``): logits for the whole sequence (×151k vocab)
are never materialized, which is most of the activation memory saved over ``model(...).logits``.
It is an ``nn.Module`` so that DDP/FSDP wrap it and see every parameter use in its ``forward``.

Returned: a flat float32 tensor of log p(target token), in row-major order of ``target_mask[:, 1:]``. GRPO
scores at the sampling temperature with the tokens the sampler suppresses removed (``suppress``), so the
log-probs it trains on are those of the distribution the rollout sampled from (``sampling.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MODEL_INPUTS = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw")


class TokenScorer(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model  # the HF model (possibly with peft LoRA layers injected)

    def _parts(self) -> tuple[nn.Module, nn.Module]:
        from .model import unwrap

        base = unwrap(self.model)
        return base.model, base.lm_head

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        mm_token_type_ids: torch.Tensor,
        target_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        temperature: float = 1.0,
        suppress: tuple[int, ...] = (),
    ) -> torch.Tensor:
        body, head = self._parts()
        out = body(
            input_ids=input_ids,
            attention_mask=attention_mask,
            mm_token_type_ids=mm_token_type_ids,
            pixel_values=pixel_values,
            image_grid_thw=image_grid_thw,
            use_cache=False,
        )
        hidden = out.last_hidden_state[:, :-1]
        select = target_mask[:, 1:].to(hidden.device)
        targets = input_ids[:, 1:][select]
        logits = head(hidden[select]).float()
        if temperature != 1.0:
            logits = logits / temperature
        if suppress:  # tokens the sampler never draws (vision placeholders): the scored distribution excludes them too
            logits[:, list(suppress)] = float("-inf")
        return -F.cross_entropy(logits, targets, reduction="none")


def batch_to(batch: dict[str, torch.Tensor], device: torch.device, float_dtype: torch.dtype | None = None) -> dict:
    """Move a collated batch to ``device``; ``pixel_values`` cast to ``float_dtype`` when given."""
    out = {}
    for k, v in batch.items():
        if not isinstance(v, torch.Tensor):
            out[k] = v
        elif k == "pixel_values" and float_dtype is not None:
            out[k] = v.to(device=device, dtype=float_dtype, non_blocking=True)
        else:
            out[k] = v.to(device, non_blocking=True)
    return out


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    keys = (*MODEL_INPUTS, "target_mask")
    return {k: batch[k] for k in keys if k in batch}
