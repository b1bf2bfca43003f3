"""One adapter per tower family; each turns a live image tower into a :class:`TowerSpec`.

Supported: open_clip's own ``VisionTransformer`` (LayerScale, QuickGELU, no ``ln_pre``, class-token
or mean pooling, ``final_ln_after_pool``, ``LayerNormFp32``, CoCa's attentional pooler), timm
``VisionTransformer`` and ``Eva`` towers inside open_clip's ``TimmModel`` (SigLIP/SigLIP2 and
PE-Core with attention pooling, EVA01/EVA02 with RoPE, sub-LN and SwiGLU, MobileCLIP-B and ViTamin
with their convolutional stems, mean-pooled and relative-position ViTs), and ``transformers`` CLIP
and SigLIP vision towers.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..spec import TowerSpec, UnsupportedTowerError

SUPPORTED_TOWERS = (
    "open_clip VisionTransformer towers (LayerScale, QuickGELU, no ln_pre, 'tok'/'avg' pooling, "
    "final_ln_after_pool, CoCa's attentional pooler); timm VisionTransformer and Eva towers in "
    "open_clip's TimmModel (SigLIP, SigLIP2, PE-Core, EVA01, EVA02, MobileCLIP-B, ViTamin, "
    "mean-pooled and relative-position ViTs); transformers CLIPVisionModel/CLIPModel and "
    "SiglipVisionModel/SiglipModel"
)


def unsupported(reason: str) -> UnsupportedTowerError:
    """An error that names why a tower is refused and lists what is supported."""
    return UnsupportedTowerError(f"{reason} captum_clipspan supports {SUPPORTED_TOWERS}.")


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """``[..., H * d]`` -> ``[..., H, d]``."""
    return x.reshape(*x.shape[:-1], n_heads, x.shape[-1] // n_heads)


def tower_spec(visual: nn.Module) -> TowerSpec:
    """Describe a live image tower for :class:`~captum_clipspan.hooked.vit.HookedViT`.

    Raises:
        UnsupportedTowerError: for ResNets, ConvNeXt, FastViT, Swin, post-norm EVA and any block
            layout the decomposition cannot be exact on; the message names the tower.
    """
    kind = type(visual).__name__
    module = type(visual).__module__
    if kind == "ModifiedResNet":
        raise unsupported("This image tower is a ResNet (ModifiedResNet), not a ViT.")
    if module.startswith("open_clip"):
        if kind == "TimmModel":
            from .timm import timm_tower_spec

            return timm_tower_spec(visual)
        from .open_clip import open_clip_tower_spec

        return open_clip_tower_spec(visual)
    if module.startswith("transformers"):
        from .transformers import transformers_tower_spec

        return transformers_tower_spec(visual)
    if module.startswith("timm"):
        from .timm import timm_trunk_spec

        return timm_trunk_spec(visual, head=None)
    raise unsupported(f"This image tower is a {kind} ({module}), which no backend knows.")
