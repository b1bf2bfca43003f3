"""One adapter per tower family; each turns a live image tower into a :class:`TowerSpec`.

Supported: open_clip's own ``VisionTransformer`` (LayerScale, QuickGELU, no ``ln_pre``, class-token
or mean pooling, ``final_ln_after_pool``, ``LayerNormFp32``, CoCa's attentional pooler), timm
``VisionTransformer`` and ``Eva`` towers inside open_clip's ``TimmModel`` (SigLIP/SigLIP2 and
PE-Core with attention pooling, EVA01/EVA02 with RoPE, sub-LN and SwiGLU, MobileCLIP-B and ViTamin
with their convolutional stems, mean-pooled and relative-position ViTs), and ``transformers`` towers
(CLIP, MetaCLIP 2, AltCLIP, ChineseCLIP and CLIPSeg with CLIP's layout; SigLIP), whole models
and vision-only classes.

The rest of each family (tokenizer, text tower, image transform, loading) is a
:class:`~.text.TextBackend`: :mod:`.open_clip_text` (with :mod:`.hub`, which fails fast when
weights cannot be downloaded) and :mod:`.transformers_text`.
"""

from __future__ import annotations

from torch import nn

from ..spec import TowerSpec
from .common import (  # noqa: F401 (the adapters' shared pieces, public here too)
    SUPPORTED_TOWERS,
    mha_pool_spec,
    mha_weights,
    split_heads,
    unsupported,
)


def tower_spec(visual: nn.Module) -> TowerSpec:
    """Describe a live image tower for :class:`~captum_clipspan.hooked.vit.HookedViT`.

    Raises:
        UnsupportedTowerError: for ResNets, ConvNeXt, FastViT, Swin and any block
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
