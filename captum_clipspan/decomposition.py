"""Exact direct-effect decomposition of a CLIP-ViT image embedding (Gandelsman et al., Sec. 3-4).

The residual stream at the pooled position is a sum of terms,

    z_L = z_0 + sum_l [ sum_h sum_i c_{l,h,i} + b_O,l ] + sum_l m_l,

and ``ln_post`` is affine once its mean and scale are read from the real forward pass, so each term
maps to the joint image-text space and the mapped terms sum to ``model.encode_image(x)`` exactly.

Pooling is handled once for every open_clip variant: the pooled, ``ln_post``-scaled stream is
``z_hat = sum_r omega_r z_r`` over the pooled rows ``r`` (the class token for ``"tok"``, the patch
tokens for ``"avg"``) with ``omega_r = w_r / s_r``, and the output is
``(gamma * (z_hat - mean(z_hat)) + beta) @ proj``. When the scale is shared by all pooled rows
(``"tok"``, or LayerNorm after pooling) the rows are averaged during the forward pass, so only one
row per layer is kept.

Only the pooled query rows of the attention patterns are computed; the paper's code builds a
``[B, N, N, H, D]`` tensor instead. Everything but the forward pass is in pure functions below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .hooked.vit import HookedViT

GRANULARITIES = ("layer", "head", "token")
CONVENTIONS = ("reference", "centered")


@dataclass
class Decomposition:
    """The direct-effect terms of a batch of image embeddings.

    ``X`` is the joint-space width ``E``, or the number of texts ``T`` when the decomposition was
    projected on text embeddings. ``L`` is the number of layers, ``L_s`` the number of selected
    layers (``layers``), ``N`` the number of tokens (class token first), ``H`` heads.

    Attributes:
        embed: ``[B, X]`` the embedding term (``ln_pre`` output at the pooled position).
        attns: ``[B, L, X]`` each whole MSA layer (its out-projection bias included).
        mlps: ``[B, L, X]`` each MLP layer.
        heads: ``[B, L_s, H, X]`` per-head terms (granularity ``"head"`` or ``"token"``).
        tokens: ``[B, L_s, N, H, X]`` per (token, head) terms (granularity ``"token"``).
        attn_biases: ``[B, L, X]`` the out-projection bias of each layer (``"centered"`` only; in
            ``"reference"`` it is spread over the heads and tokens).
        ln_bias: ``[B, X]`` the ``ln_post`` bias term (``"centered"`` only).
        image_embed: ``[B, X]`` what the terms sum to: the image embedding (unit norm when
            ``normalized``), or its dot products with the texts.
        layers: the layer indices of ``heads`` and ``tokens``.
        convention: ``"reference"`` or ``"centered"``.
        normalized: whether every term was divided by the embedding's norm.
        text_embeddings: ``[T, E]`` the texts the terms were projected on, or ``None``.
    """

    embed: Tensor
    attns: Tensor
    mlps: Tensor
    image_embed: Tensor
    layers: tuple[int, ...]
    convention: str
    normalized: bool
    heads: Tensor | None = None
    tokens: Tensor | None = None
    attn_biases: Tensor | None = None
    ln_bias: Tensor | None = None
    text_embeddings: Tensor | None = None

    def total(self) -> Tensor:
        """The sum of all terms, ``[B, X]``; equals ``image_embed`` up to rounding."""
        total = self.embed + self.attns.sum(1) + self.mlps.sum(1)
        return total if self.ln_bias is None else total + self.ln_bias

    def convergence_delta(self) -> Tensor:
        """Completeness error per example and output column, ``total() - image_embed``."""
        return self.total() - self.image_embed

    def to(self, *args: Any, **kwargs: Any) -> Decomposition:
        """Move every tensor field (``Tensor.to`` arguments)."""
        values = {
            f.name: getattr(self, f.name).to(*args, **kwargs)
            if isinstance(getattr(self, f.name), Tensor) else getattr(self, f.name)
            for f in fields(self)
        }
        return Decomposition(**values)


@dataclass
class JointSpaceMap:
    """``ln_post`` and ``proj`` as one linear map plus constants, in the output columns ``X``.

    Attributes:
        matrix: ``[D, X]`` maps a residual term to joint space (centering included for
            ``"centered"``; for ``"reference"`` the mean is removed through ``gamma_direction``).
        gamma_direction: ``[X]`` ``gamma @ proj``, what a unit of LayerNorm mean removes.
        bias_direction: ``[X]`` ``beta @ proj``.
    """

    matrix: Tensor
    gamma_direction: Tensor
    bias_direction: Tensor


def joint_space_map(
    ln_weight: Tensor | None,
    ln_bias: Tensor | None,
    proj: Tensor,
    convention: str,
    text_embeddings: Tensor | None = None,
) -> JointSpaceMap:
    """Fold ``ln_post``'s affine part, its centering (``"centered"``) and ``proj`` into one map.

    Args:
        ln_weight: ``[D]`` or ``None`` (no affine weight).
        ln_bias: ``[D]`` or ``None``.
        proj: ``[D, E]``.
        convention: ``"reference"`` or ``"centered"``.
        text_embeddings: optional ``[T, E]``; the map then ends in text scores (``X = T``).

    Returns:
        A :class:`JointSpaceMap` with ``matrix`` ``[D, X]``.
    """
    width = proj.shape[0]
    gamma = ln_weight if ln_weight is not None else proj.new_ones(width)
    scaled_proj = gamma[:, None] * proj
    gamma_direction = gamma @ proj
    bias_direction = ln_bias @ proj if ln_bias is not None else proj.new_zeros(proj.shape[1])
    if convention == "centered":
        # (gamma * (x - mean(x))) @ proj == x @ (scaled_proj - gamma_direction / D)
        scaled_proj = scaled_proj - gamma_direction[None, :] / width
    if text_embeddings is not None:
        text_matrix = text_embeddings.to(proj.dtype).T
        scaled_proj, gamma_direction, bias_direction = (
            scaled_proj @ text_matrix, gamma_direction @ text_matrix, bias_direction @ text_matrix
        )
    return JointSpaceMap(scaled_proj, gamma_direction, bias_direction)


def head_output_maps(out_proj_weight: Tensor, layer_scale: Tensor, joint_matrix: Tensor) -> Tensor:
    """Each head's path from its attention output ``z`` to joint space, as one matrix.

    Args:
        out_proj_weight: ``[D, D]`` ``out_proj.weight`` (columns split per head).
        layer_scale: ``[D]`` the block's ``ls_1`` gamma (ones without LayerScale).
        joint_matrix: ``[D, X]`` from :func:`joint_space_map`.

    Returns:
        ``[H, d_head, X]`` with ``H * d_head == D``; head ``h``'s term is ``z_h @ maps[h]``.
    """
    return (out_proj_weight * layer_scale[:, None]).T @ joint_matrix  # [D(h, d), X]


def token_terms(pooled_pattern: Tensor, values: Tensor, head_maps: Tensor) -> Tensor:
    """Per (token, head) terms ``a_i v_i W``: ``[B, H, N]``, ``[B, N, H, d]`` -> ``[B, N, H, X]``.

    Args:
        pooled_pattern: ``[B, H, N]`` the pooled query row of each head's attention pattern.
        values: ``[B, N, H, d_head]`` the value vectors (value bias included).
        head_maps: ``[H * d_head, X]`` or ``[H, d_head, X]`` from :func:`head_output_maps`.
    """
    n_heads, d_head = values.shape[2], values.shape[3]
    weighted = values * pooled_pattern.transpose(1, 2)[..., None]
    return torch.einsum("bnhd,hdx->bnhx", weighted, head_maps.reshape(n_heads, d_head, -1))


def head_terms(pooled_z: Tensor, head_maps: Tensor) -> Tensor:
    """Per-head terms: ``[B, H, d_head]`` pooled attention outputs -> ``[B, H, X]``."""
    n_heads, d_head = pooled_z.shape[1], pooled_z.shape[2]
    return torch.einsum("bhd,hdx->bhx", pooled_z, head_maps.reshape(n_heads, d_head, -1))


def ln_post_row_weights(pooled_rows: Tensor, eps: float, per_row: bool) -> Tensor:
    """``omega_r = w_r / s_r``: how each pooled row enters ``z_hat``, ``[B, R, D]`` -> ``[B, R]``.

    ``per_row`` is ``True`` when every row is normalized on its own before averaging ("avg" pooling
    with ``ln_post`` before the pool); otherwise the ``R`` rows were already averaged to one.
    """
    inverse_scale = 1.0 / (pooled_rows.var(dim=-1, unbiased=False) + eps).sqrt()
    return inverse_scale / pooled_rows.shape[1] if per_row else inverse_scale


def pool_rows(omega: Tensor, rows: Tensor) -> Tensor:
    """Contract pooled rows with their weights: ``[B, R]``, ``[B, R, ...]`` -> ``[B, ...]``."""
    return torch.einsum("br,br...->b...", omega, rows)


def reference_constant(mean_z_hat: Tensor, n_terms: int, joint: JointSpaceMap) -> Tensor:
    """The paper's share of LN mean and bias for one of ``n_terms`` residual terms, ``[B, X]``.

    ``mean_z_hat`` ``[B]`` is the feature mean of the scaled pooled stream; with equal shares the
    constants of all ``2L + 1`` terms add up to ``-mean * gamma@proj + beta@proj``.
    """
    return (
        -mean_z_hat[:, None] * joint.gamma_direction[None, :] + joint.bias_direction[None, :]
    ) / n_terms


class _Capture:
    """Forward hooks that keep only what the decomposition needs, reduced to the pooled rows."""

    def __init__(self, vit: HookedViT, granularity: str, layers: Sequence[int],
                 per_row: bool, head_maps: dict[int, Tensor], dtype: torch.dtype) -> None:
        self.vit, self.granularity, self.layers = vit, granularity, tuple(layers)
        self.per_row, self.head_maps, self.dtype = per_row, head_maps, dtype
        self.store: dict[str, Any] = {}
        self.scratch: dict[str, Tensor] = {}

    def rows(self, x: Tensor) -> Tensor:
        """The pooled rows of ``[B, N, ...]`` as ``[B, R, ...]``, averaged to one row when they
        share one LayerNorm scale, in the compute dtype."""
        x = self.rows_unreduced(x)
        return x if self.per_row else x.mean(dim=1, keepdim=True)

    def save(self, key: str):
        def hook(tensor: Tensor, hook: Any) -> None:
            self.store[key] = self.rows(tensor)
        return hook

    def save_scratch(self, key: str):
        def hook(tensor: Tensor, hook: Any) -> None:
            self.scratch[key] = tensor
        return hook

    def values_hook(self, layer: int):
        def hook(values: Tensor, hook: Any) -> None:
            q_rows = self.rows_unreduced(self.scratch.pop("q"))
            keys = self.scratch.pop("k").to(self.dtype)
            scores = torch.einsum("brhd,bkhd->brhk", q_rows, keys) / q_rows.shape[-1] ** 0.5
            pattern_rows = scores.softmax(dim=-1)  # [B, R0, H, N]
            if not self.per_row:
                pattern_rows = pattern_rows.mean(dim=1, keepdim=True)
            values = values.to(self.dtype)
            if pattern_rows.shape[1] == 1:  # omega is a per-image scalar: map now, scale later
                self.store[f"tokens.{layer}"] = token_terms(
                    pattern_rows[:, 0], values, self.head_maps[layer]
                )[:, None]
            else:
                self.store[f"pattern.{layer}"] = pattern_rows
                self.store[f"values.{layer}"] = values
        return hook

    def rows_unreduced(self, x: Tensor) -> Tensor:
        return (x[:, :1] if self.vit.pool_type == "tok" else x[:, 1:]).to(self.dtype)

    def hooks(self) -> list[tuple[str, Any]]:
        hooks = [
            ("hook_embed", self.save("embed")),
            (f"blocks.{self.vit.n_layers - 1}.hook_resid_post", self.save("resid")),
            ("hook_image_embed", self.save_scratch("image_embed")),
        ]
        for layer in range(self.vit.n_layers):
            hooks.append((f"blocks.{layer}.hook_attn_out", self.save(f"attn.{layer}")))
            hooks.append((f"blocks.{layer}.hook_mlp_out", self.save(f"mlp.{layer}")))
        for layer in self.layers:
            prefix = f"blocks.{layer}.attn."
            if self.granularity in ("head", "token"):
                hooks.append((prefix + "hook_z", self.save(f"z.{layer}")))
            if self.granularity == "token":
                hooks.append((prefix + "hook_q", self.save_scratch("q")))
                hooks.append((prefix + "hook_k", self.save_scratch("k")))
                hooks.append((prefix + "hook_v", self.values_hook(layer)))
        return hooks


def _layer_scale(module: torch.nn.Module, width: int, like: Tensor) -> Tensor:
    gamma = getattr(module, "gamma", None)
    return gamma.to(like) if gamma is not None else like.new_ones(width)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulate in fp32 even for fp16/bf16 models, in fp64 for fp64 models."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def resolve_layers(layers: int | Sequence[int] | None, n_layers: int) -> tuple[int, ...]:
    """Validate a layer selection (negative indices count from the end) -> sorted unique tuple."""
    if layers is None:
        return tuple(range(n_layers))
    if isinstance(layers, int):
        layers = [layers]
    try:
        chosen = [int(layer) for layer in layers]
    except (TypeError, ValueError):
        raise TypeError(
            f"layers must be None, an int or a sequence of ints, got {layers!r}."
        ) from None
    if not chosen:
        raise ValueError("layers must not be empty; pass None for all layers.")
    bad = [layer for layer in chosen if not -n_layers <= layer < n_layers]
    if bad:
        raise ValueError(f"layers {bad} are out of range for a model with {n_layers} layers "
                         f"(accepted: 0..{n_layers - 1} or negative indices).")
    return tuple(sorted({layer % n_layers for layer in chosen}))


def check_text_embeddings(text_embeddings: Tensor, width: int) -> Tensor:
    """Validate text embeddings ``[E]`` or ``[T, E]`` and return them as ``[T, E]``."""
    if not isinstance(text_embeddings, Tensor):
        raise TypeError(f"text embeddings must be a torch.Tensor [T, {width}], "
                        f"got {type(text_embeddings).__name__}.")
    if text_embeddings.dim() == 1:
        text_embeddings = text_embeddings[None]
    if text_embeddings.dim() != 2 or text_embeddings.shape[1] != width:
        raise ValueError(f"text embeddings must have shape [{width}] or [T, {width}] for this "
                         f"model's joint space, got {list(text_embeddings.shape)}.")
    if text_embeddings.shape[0] == 0:
        raise ValueError("text embeddings are empty (T = 0); pass at least one text.")
    if not torch.isfinite(text_embeddings).all():
        raise ValueError("text embeddings contain NaN or infinite values.")
    return text_embeddings


def decompose(
    clip: Any,
    images: Tensor,
    granularity: str = "head",
    convention: str = "reference",
    layers: int | Sequence[int] | None = None,
    normalize: bool = True,
    text_embeddings: Tensor | None = None,
) -> Decomposition:
    """Split image embeddings exactly into direct contributions of layers, heads and tokens.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP` or :class:`~captum_clipspan.HookedViT`.
        images: ``[B, 3, H, W]`` preprocessed images at the model's input size.
        granularity: ``"layer"`` (embedding, MSA and MLP layers), ``"head"`` (adds ``heads``) or
            ``"token"`` (adds ``heads`` and ``tokens``, per image token).
        convention: ``"reference"`` (default) reproduces the paper's code: ``ln_post``'s mean and
            bias are shared equally by the ``2L + 1`` residual terms and, inside an attention
            layer, by its ``N * H`` (token, head) cells together with the out-projection bias.
            ``"centered"`` centers every term on its own and keeps the out-projection biases
            (``attn_biases``) and ``ln_post``'s bias (``ln_bias``) as separate terms.
        layers: layers for ``heads``/``tokens`` (``None``: all). Whole-layer terms always cover
            every layer, so the decomposition stays complete.
        normalize: divide every term by ``||encode_image(x)||`` so that they sum to the unit-norm
            embedding (and their dot products with unit texts sum to the cosine similarity).
        text_embeddings: optional ``[T, E]`` (or ``[E]``); every term is then contracted with the
            texts at once (``X = T``), and no ``[..., E]`` per-token tensor is ever built.

    Returns:
        A :class:`Decomposition`; ``total()`` equals ``image_embed`` (fp64: ~1e-12, fp32: ~1e-6).

    Examples::

        >>> parts = cs.decompose(clip, images, granularity="token", layers=[-2, -1])
        >>> parts.heads.shape         # [B, 2, H, E]
        >>> (parts.total() - parts.image_embed).abs().max()   # ~1e-7 in fp32
    """
    vit = getattr(clip, "visual", clip)
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}.")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}.")
    if vit.model.training:
        raise ValueError("the model is in training mode; call clip.eval() first (patch dropout and "
                         "dropout make the decomposition meaningless in training mode).")
    vit.check_images(images)
    selected = resolve_layers(layers, vit.n_layers)
    dtype = compute_dtype(vit.dtype)
    visual = vit.model
    if text_embeddings is not None:
        text_embeddings = check_text_embeddings(text_embeddings, vit.output_dim)

    ln_post = visual.ln_post
    joint = joint_space_map(
        _param(ln_post, "weight", dtype), _param(ln_post, "bias", dtype),
        visual.proj.detach().to(dtype), convention, text_embeddings,
    )
    blocks = visual.transformer.resblocks
    head_maps = {
        layer: head_output_maps(
            blocks[layer].attn.out_proj.weight.detach().to(dtype),
            _layer_scale(blocks[layer].ls_1, vit.d_model, joint.matrix), joint.matrix,
        )
        for layer in (selected if granularity != "layer" else ())
    }
    per_row = vit.pool_type == "avg" and not vit.final_ln_after_pool
    capture = _Capture(vit, granularity, selected, per_row, head_maps, dtype)
    with torch.no_grad():
        with vit.hooks(fwd_hooks=capture.hooks()):
            vit(images)
        return _assemble(vit, capture, joint, convention, normalize, text_embeddings, dtype)


def _param(module: torch.nn.Module, name: str, dtype: torch.dtype) -> Tensor | None:
    value = getattr(module, name, None)
    return value.detach().to(dtype) if value is not None else None


def _assemble(vit: HookedViT, capture: _Capture, joint: JointSpaceMap, convention: str,
              normalize: bool, text_embeddings: Tensor | None, dtype: torch.dtype) -> Decomposition:
    store, n_layers, blocks = capture.store, vit.n_layers, vit.model.transformer.resblocks
    omega = ln_post_row_weights(store["resid"], vit.model.ln_post.eps, capture.per_row)
    omega_sum = omega.sum(dim=1)
    mean_z_hat = pool_rows(omega, store["resid"]).mean(dim=-1)

    embed = pool_rows(omega, store["embed"]) @ joint.matrix
    attns = torch.stack([pool_rows(omega, store[f"attn.{l}"]) for l in range(n_layers)], 1)
    attns = attns @ joint.matrix
    mlps = torch.stack([pool_rows(omega, store[f"mlp.{l}"]) for l in range(n_layers)], 1)
    mlps = mlps @ joint.matrix
    bias_terms = torch.stack([
        _layer_scale(b.ls_1, vit.d_model, omega) * b.attn.out_proj.bias.detach().to(dtype)
        for b in blocks
    ]) @ joint.matrix  # [L, X]
    bias_terms = omega_sum[:, None, None] * bias_terms[None]  # [B, L, X]

    heads = tokens = attn_biases = ln_bias = None
    layer_index = list(capture.layers)
    if capture.granularity != "layer":
        heads = torch.stack([
            head_terms(pool_rows(omega, store[f"z.{l}"]), capture.head_maps[l])
            for l in layer_index
        ], 1)
    if capture.granularity == "token":
        tokens = torch.stack([_pooled_token_terms(capture, omega, l) for l in layer_index], 1)

    if convention == "reference":
        constant = reference_constant(mean_z_hat, 2 * n_layers + 1, joint)[:, None]  # [B, 1, X]
        embed = embed + constant[:, 0]
        mlps = mlps + constant
        attns = attns + constant
        if heads is not None:
            layer_constant = (bias_terms[:, layer_index] + constant)  # [B, L_s, X]
            heads = heads + layer_constant[:, :, None] / vit.n_heads
            if tokens is not None:
                n_cells = vit.n_heads * tokens.shape[2]
                tokens = tokens + layer_constant[:, :, None, None] / n_cells
    else:
        attn_biases = bias_terms
        ln_bias = joint.bias_direction.expand_as(embed).clone()

    image_embed = capture.scratch["image_embed"].to(dtype)
    norm = image_embed.norm(dim=-1)
    if text_embeddings is not None:
        image_embed = image_embed @ text_embeddings.to(dtype).T
    parts = dict(embed=embed, attns=attns, mlps=mlps, heads=heads, tokens=tokens,
                 attn_biases=attn_biases, ln_bias=ln_bias, image_embed=image_embed)
    if normalize:
        parts = {k: None if v is None else v / norm.reshape(-1, *[1] * (v.dim() - 1))
                 for k, v in parts.items()}
    return Decomposition(**parts, layers=tuple(layer_index), convention=convention,
                         normalized=normalize, text_embeddings=text_embeddings)


def _pooled_token_terms(capture: _Capture, omega: Tensor, layer: int) -> Tensor:
    """``[B, N, H, X]`` token terms of one layer, weighted by the pooled rows' ``omega``."""
    store = capture.store
    if f"tokens.{layer}" in store:
        return pool_rows(omega, store[f"tokens.{layer}"])
    pooled_pattern = pool_rows(omega, store[f"pattern.{layer}"])  # [B, H, N]
    return token_terms(pooled_pattern, store[f"values.{layer}"], capture.head_maps[layer])
