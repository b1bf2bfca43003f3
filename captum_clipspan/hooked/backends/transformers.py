"""Hugging Face ``transformers`` vision towers: the CLIP layout and SigLIP.

CLIP layout (one entry each in :data:`CLIP_LAYOUT_FAMILIES`: CLIP, MetaCLIP 2, AltCLIP,
ChineseCLIP, CLIPSeg; the whole model, its vision model and, where the family has one, its vision
model with projection): class token, ``pre_layrnorm`` inside the embedding, the class token
pooled, ``post_layernorm`` on the pooled vector, then ``visual_projection`` (no bias). SigLIP
(``SiglipModel``, ``SiglipVisionModel``): no class token, ``post_layernorm`` on every token, then
the MAP head (a learned probe through an ``nn.MultiheadAttention``, ``y + mlp(layernorm(y))``),
no projection.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..spec import AttentionPoolSpec, AttentionSpec, BlockSpec, MLPSpec, ReadoutSpec, TowerSpec
from .common import mha_pool_spec, split_heads, unsupported

CLIP_LAYOUT_FAMILIES = {
    "CLIP": "CLIPEncoderLayer",
    "MetaClip2": "MetaClip2EncoderLayer",
    "AltCLIP": "AltCLIPEncoderLayer",
    "ChineseCLIP": "ChineseCLIPVisionLayer",
    "CLIPSeg": "CLIPSegEncoderLayer",
}
"""The transformers families whose image tower has CLIP's layout: class-name prefix -> the
encoder layer class (``x + attn(ln1(x))``, ``x + mlp(ln2(x))``) their vision model is built of.
``{prefix}Model``, ``{prefix}VisionModel`` and ``{prefix}VisionModelWithProjection`` are
accepted."""

_CLIP_LAYOUT_CLASSES = {f"{prefix}{suffix}": prefix for prefix in CLIP_LAYOUT_FAMILIES
                        for suffix in ("Model", "VisionModel", "VisionModelWithProjection")}
_SIGLIP_TOWERS = ("SiglipModel", "SiglipVisionModel")
_SIGLIP_LAYER = "SiglipEncoderLayer"

# Why a transformers class that looks CLIP-like is refused (class-name prefix -> reason).
_REFUSED = {
    "Siglip2": "SigLIP2 NaFlex: variable-resolution patches with an attention mask and positions "
               "resized per image, so there is no fixed token grid (open_clip's fixed-resolution "
               "SigLIP2 towers are supported)",
    "CLIPSegForImageSegmentation": "a segmentation decoder on top of a CLIPSegModel; pass its "
                                   "CLIP model, model.clip",
    "Align": "ALIGN's image tower is an EfficientNet (a CNN), not a ViT",
    "GroupViT": "GroupViT's grouping blocks merge the tokens into fewer group tokens between "
                "stages, so there is no token grid through the network",
    "XCLIP": "X-CLIP encodes videos (cross-frame attention and a prompt generator), not images",
}


class CLIPImageTower(nn.Module):
    """A CLIP-layout model's image tower as one module (``CLIPModel``, ``MetaClip2Model``, ...):
    exactly the vision model's and the projection's parameters (the text tower's are not among
    them).

    Args:
        vision_model: the ``CLIPVisionModel`` (or the family's copy of it).
        visual_projection: the ``nn.Linear`` (no bias) into the joint space.
    """

    def __init__(self, vision_model: nn.Module, visual_projection: nn.Linear) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = visual_projection

    # model.eval() does not reach this wrapper (it is not the model's child), so its mode is
    # the vision model's; Module.train() sets the children's mode and this setter ignores it.
    @property
    def training(self) -> bool:
        vision_model = self._modules.get("vision_model")
        return vision_model.training if vision_model is not None else False

    @training.setter
    def training(self, mode: bool) -> None:
        pass

    def forward(self, pixel_values: Tensor) -> Tensor:
        """Unnormalized image embeddings ``[B, E]`` (the model's ``get_image_features``)."""
        return self.visual_projection(self.vision_model(pixel_values=pixel_values).pooler_output)


def transformers_tower_spec(model: nn.Module) -> TowerSpec:
    """Describe a transformers model's image tower.

    Args:
        model: a model of a family in :data:`CLIP_LAYOUT_FAMILIES` (``CLIPModel``,
            ``CLIPVisionModel``, ``CLIPVisionModelWithProjection``, ``MetaClip2Model``,
            ``AltCLIPModel``, ``ChineseCLIPModel``, ``CLIPSegModel``, ... and their vision
            models), ``SiglipModel`` or ``SiglipVisionModel``.

    Raises:
        UnsupportedTowerError: for any other class (SigLIP2's NaFlex towers included); the
            message says why and lists what is supported.
    """
    kind = type(model).__name__
    if kind in _CLIP_LAYOUT_CLASSES:
        prefix = _CLIP_LAYOUT_CLASSES[kind]
        projection = getattr(model, "visual_projection", None)
        vision_model = model.vision_model if projection is not None else model
        # A whole model also holds the text tower: the hooked module is the image side alone.
        tower = (CLIPImageTower(vision_model, projection) if hasattr(model, "text_model")
                 else model)
        return _clip_spec(f"transformers-{prefix.lower()}", tower, vision_model, projection,
                          layer=CLIP_LAYOUT_FAMILIES[prefix])
    if kind in _SIGLIP_TOWERS:
        vision = model.vision_model if kind == "SiglipModel" else model
        return _siglip_spec(vision)
    raise unsupported(f"This image tower is a transformers {kind}: {_refusal_reason(kind)}.")


def _refusal_reason(kind: str) -> str:
    """Why the transformers class named ``kind`` is refused."""
    for prefix, reason in _REFUSED.items():
        if kind.startswith(prefix):
            return reason
    if kind.endswith("ForImageClassification"):
        return ("an image classifier, whose head reads the final tokens without a CLIP "
                "projection; load the CLIP model or its vision model instead")
    return ("no adapter describes this class's layout, and the decomposition is exact only on "
            "layouts an adapter describes and the tests check")


def _vision_transformer(vision_model: nn.Module) -> nn.Module:
    """The module that holds ``embeddings`` and ``encoder`` (transformers 4.x nests it one
    level deeper, as ``vision_model.vision_model``)."""
    return vision_model if hasattr(vision_model, "embeddings") else vision_model.vision_model


def _clip_spec(family: str, tower: nn.Module, vision_model: nn.Module,
               projection: nn.Linear | None, layer: str) -> TowerSpec:
    vision = _vision_transformer(vision_model)
    embeddings = vision.embeddings

    # CLIPVisionEmbeddings.forward at the trained grid (CLIPSeg's interpolation is then a no-op)
    def assemble(patches: Tensor) -> tuple[Tensor, dict]:
        cls = embeddings.class_embedding.expand(patches.shape[0], 1, -1)
        x = torch.cat([cls, patches], dim=1)
        return vision.pre_layrnorm(x + embeddings.position_embedding(embeddings.position_ids)), {}

    readout = ReadoutSpec(
        pool="token", pool_rows=0, final_norm=vision.post_layernorm, final_norm_after_pool=True,
        project=projection if projection is not None else nn.Identity(),
        proj=(lambda: projection.weight.T) if projection is not None else None,
    )
    return _tower_spec(family, tower, vision, assemble, readout, n_prefix=1, layer=layer)


def _siglip_spec(vision_model: nn.Module) -> TowerSpec:
    vision = _vision_transformer(vision_model)
    if not getattr(vision, "use_head", False):
        raise unsupported("This SigLIP vision model has no attention-pooling head "
                          "(vision_use_head=False), so it has no image embedding.")
    embeddings = vision.embeddings

    def assemble(patches: Tensor) -> tuple[Tensor, dict]:  # SiglipVisionEmbeddings.forward
        return patches + embeddings.position_embedding(embeddings.position_ids), {}

    readout = ReadoutSpec(
        pool="attention", pool_rows=slice(0, None), final_norm=vision.post_layernorm,
        final_norm_after_pool=False, project=nn.Identity(), proj=None,
        attention_pool=_map_head_spec(vision.head),
    )
    return _tower_spec("transformers-siglip", vision_model, vision, assemble, readout, n_prefix=0,
                       layer=_SIGLIP_LAYER)


def _tower_spec(family: str, tower: nn.Module, vision: nn.Module,
                assemble: Callable[[Tensor], tuple[Tensor, dict]],
                readout: ReadoutSpec, n_prefix: int, layer: str) -> TowerSpec:
    """The parts CLIP and SigLIP share: patch embedding, encoder layers (of class ``layer``),
    sizes."""
    patch_embedding = vision.embeddings.patch_embedding
    config = vision.config

    def patchify(images: Tensor) -> Tensor:
        x = patch_embedding(images.to(dtype=patch_embedding.weight.dtype))
        return x.flatten(2).transpose(1, 2)

    size = config.image_size
    grid = size // config.patch_size
    return TowerSpec(
        family=family, module=tower, patchify=patchify, assemble=assemble,
        blocks=[_block_spec(block, layer) for block in vision.encoder.layers], readout=readout,
        image_size=(size, size), grid_size=(grid, grid), n_prefix_tokens=n_prefix,
    )


def _block_spec(layer: nn.Module, expected: str) -> BlockSpec:
    """``CLIPEncoderLayer`` and its copies, ``SiglipEncoderLayer``: ``x + attn(ln1(x))``,
    ``x + mlp(ln2(x))``."""
    kind = type(layer).__name__
    if kind != expected:
        raise unsupported(f"This tower uses transformers {kind} layers where its family has "
                          f"{expected} layers, whose layout the adapter describes.")
    mlp = layer.mlp
    return BlockSpec(
        ln1=layer.layer_norm1, attention=_attention_spec(layer.self_attn), ln2=layer.layer_norm2,
        mlp=MLPSpec(run=mlp, pre=mlp.fc1, act=mlp.activation_fn, post=mlp.fc2,
                    out_weight=mlp.fc2.weight, out_bias=mlp.fc2.bias),
    )


def _attention_spec(attn: nn.Module) -> AttentionSpec:
    """``CLIPAttention`` and its copies, ``SiglipAttention`` (separate q/k/v projections,
    ``attn.scale``)."""
    n_heads, d_head = attn.num_heads, attn.head_dim
    linears = (attn.q_proj, attn.k_proj, attn.v_proj)

    def project(x: Tensor, context: dict) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(split_heads(linear(x), n_heads) for linear in linears)

    def run(x: Tensor, context: dict) -> Tensor:
        # The vision encoders pass no attention mask; the module picks eager/sdpa/flash itself.
        return attn(hidden_states=x)[0]

    return AttentionSpec(
        n_heads=n_heads, d_head=d_head, project=project, out_weight=attn.out_proj.weight,
        out_bias=attn.out_proj.bias, run=run,
        qkv_weights=tuple(linear.weight for linear in linears),
        qkv_biases=tuple(linear.bias for linear in linears), scale=attn.scale,
        softmax_dtype=lambda: _softmax_dtype(attn),
    )


def _softmax_dtype(attn: nn.Module) -> torch.dtype | None:
    """transformers' eager attention takes its softmax in float32 (sdpa and flash do not)."""
    config = getattr(attn, "config", None)
    return torch.float32 if getattr(config, "_attn_implementation", None) == "eager" else None


def _map_head_spec(head: nn.Module) -> AttentionPoolSpec:
    """``SiglipMultiheadAttentionPoolingHead``: the probe attends to the (normed) tokens through
    an ``nn.MultiheadAttention``, then ``y + mlp(layernorm(y))`` and the first query's row."""
    return mha_pool_spec(head.attention, lambda: head.probe[0], head,
                         mlp=lambda y: head.mlp(head.layernorm(y)), select="first")
