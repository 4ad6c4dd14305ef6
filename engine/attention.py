"""Padding-masked attention for batched inference.

Upstream's torch attention path either ignores the padding mask (``attn_mask_enabled: False`` in the
shipped configs, so a short request batched with long ones attends to padding and its audio drifts by
~1.5 %) or expands the mask to b×h×n×n, which costs memory quadratic in length for no gain. SDPA
broadcasts a b×1×1×n boolean mask over heads and query positions, which is all we need.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.f5 import AttnProcessor, apply_rotary_pos_emb


class MaskedAttnProcessor(AttnProcessor):
    """Upstream's ``AttnProcessor`` (torch backend) with a broadcast key-padding mask."""

    def __init__(self, pe_attn_head: int | None = None) -> None:
        # Not calling super().__init__: it warns about the b×h×n×n expansion we do not do.
        self.pe_attn_head = pe_attn_head
        self.attn_backend = "torch"
        self.attn_mask_enabled = True

    def __call__(
        self, attn: Any, x: torch.Tensor, mask: torch.Tensor | None = None, rope: Any = None
    ) -> torch.Tensor:
        batch_size = x.shape[0]
        heads = attn.heads
        query, key, value = (proj(x) for proj in (attn.to_q, attn.to_k, attn.to_v))
        head_dim = key.shape[-1] // heads
        query = query.view(batch_size, -1, heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, heads, head_dim).transpose(1, 2)
        if attn.q_norm is not None:
            query = attn.q_norm(query)
        if attn.k_norm is not None:
            key = attn.k_norm(key)
        if rope is not None:
            query, key = self._rotate(query, key, rope)
        attn_mask = mask[:, None, None, :] if mask is not None else None  # b n -> b 1 1 n
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, dropout_p=0.0)
        out = out.transpose(1, 2).reshape(batch_size, -1, heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if mask is not None:
            out = out.masked_fill(~mask.unsqueeze(-1), 0.0)
        return out

    def _rotate(self, query: torch.Tensor, key: torch.Tensor, rope: Any) -> tuple[torch.Tensor, torch.Tensor]:
        freqs, xpos_scale = rope
        q_scale, k_scale = (xpos_scale, xpos_scale**-1.0) if xpos_scale is not None else (1.0, 1.0)
        if self.pe_attn_head is None:
            return apply_rotary_pos_emb(query, freqs, q_scale), apply_rotary_pos_emb(key, freqs, k_scale)
        pn = self.pe_attn_head
        query[:, :pn] = apply_rotary_pos_emb(query[:, :pn], freqs, q_scale)
        key[:, :pn] = apply_rotary_pos_emb(key[:, :pn], freqs, k_scale)
        return query, key


def enable_padding_mask(transformer: nn.Module) -> int:
    """Make every attention layer of a DiT honour the padding mask. Returns how many were changed."""
    changed = 0
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if not isinstance(processor, AttnProcessor) or isinstance(processor, MaskedAttnProcessor):
            continue
        if processor.attn_backend == "flash_attn":
            processor.attn_mask_enabled = True  # upstream's varlen path is already exact and lean
        else:
            module.processor = MaskedAttnProcessor(pe_attn_head=processor.pe_attn_head)
        changed += 1
    return changed
