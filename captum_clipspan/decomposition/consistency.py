"""A user's hooks on the model while decomposing, and the check that the terms follow them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..hooked.vit import HookedViT
    from .terms import Decomposition


def user_hooks(vit: HookedViT) -> list[str]:
    """Names of the hook points that carry a hook (TransformerLens' or plain PyTorch's)."""
    from ..hooked.vit import is_hooked

    return [name for name, point in vit.hook_dict.items() if is_hooked(point)]


# Relative error of the sums that still counts as exact, by the dtype the MODEL ran in: the terms
# accumulate in fp32 (fp64), but the embedding they are checked against comes from the model's own
# forward pass, rounded at its precision (measured on random towers: bf16 up to 8e-3, fp16 1.2e-3).
TOLERANCES = {torch.float64: 1e-8, torch.float32: 1e-3, torch.float16: 1e-2,
              torch.bfloat16: 5e-2}


def check_consistent(parts: Decomposition, hooked: list[str], dtype: torch.dtype) -> None:
    """Raise if hooks changed the forward pass in a way no term carries.

    Edits of ``hook_q``/``hook_k``/``hook_v``, the pattern, norm scales, MLPs and ``hook_embed``
    are followed by the terms; an edit of the residual stream, of ``hook_result`` or
    ``hook_attn_out`` (per-head terms), of ``hook_z`` (per-token terms) or after the pool is not.

    Args:
        parts: the decomposition of a forward pass with the hooks ``hooked`` on.
        hooked: the names of the hook points that carried a user's hook.
        dtype: the dtype the model ran in (not the accumulation dtype): it sets the tolerance.
    """
    tolerance = TOLERANCES.get(dtype, TOLERANCES[torch.bfloat16])
    scale = parts.image_embed.abs().max().clamp(min=1e-12)
    errors = {"the terms' sum": (parts.total() - parts.image_embed).abs().max()}
    if parts.heads is not None:
        layers = list(parts.layers)
        per_layer = parts.heads.sum(dim=2)
        if parts.attn_biases is not None:
            per_layer = per_layer + parts.attn_biases[:, layers]
        errors["the heads' sum"] = (per_layer - parts.attns[:, layers]).abs().max()
    if parts.tokens is not None:
        errors["the tokens' sum"] = (parts.tokens.sum(dim=2) - parts.heads).abs().max()
    broken = [f"{what} (off by {error / scale:.2g})" for what, error in errors.items()
              if error > tolerance * scale]
    if broken:
        raise ValueError(
            f"hooks on {hooked} changed the forward pass in a way no term carries: "
            f"{', '.join(broken)}. The decomposition follows edits of hook_q, hook_k, hook_v, "
            "hook_attn_scores, hook_pattern, norm scales, MLPs and hook_embed (and of hook_z for "
            "per-head terms); remove the other hooks while decomposing."
        )
