"""Exact direct-effect decomposition of a CLIP-ViT image embedding (Gandelsman et al., Sec. 3-4).

The residual stream at every token is a sum of terms,

    x_i = z_0,i + sum_l [ sum_h sum_j c_{l,h,i,j} + b_l ] + sum_l m_l,i,

and the readout (final norm, pool, projection) is linear in ``x`` once the scales of its norms and
the weights of its pool are read from the real forward pass. Every tower family is one case of

    output = sum_g sum_i omega_{g,i} x_i @ M_g + constant (+ pool_mlp),

with ``omega_{g,i} = w_{g,i} / (s_i * s_post)``: ``w`` the pool's weight of row ``i`` for pool head
``g`` (the class token, a mean over patches, or an attention pool's pattern), ``s_i`` the per-token
final norm's scale, ``s_post`` the scale of a norm after the pool, and ``M_g`` the norms' weights
and centering, the pool's value/out projections and the projection folded into one map. An
attention pool's own MLP (``y + mlp(norm(y))``, SigLIP) is the one nonlinear term, ``pool_mlp``.

Only the pooled query rows of each layer's attention pattern are used; the paper's code builds a
``[B, N, N, H, D]`` tensor instead. The decomposition reads the model only through the hooked
tower's accessors and hook points (``hooked/vit.py``); everything else is pure functions below.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .validation import resolve_layers

if TYPE_CHECKING:
    from .hooked.vit import HookedNorm, HookedViT

GRANULARITIES = ("layer", "head", "token")
CONVENTIONS = ("reference", "centered")


@dataclass
class Decomposition:
    """The direct-effect terms of a batch of image embeddings.

    ``X`` is the joint-space width ``E``, or the number of texts ``T`` when the decomposition was
    projected on text embeddings. ``L`` is the number of layers, ``L_s`` the number of selected
    layers (``layers``), ``N`` the number of tokens (prefix tokens first), ``H`` heads.

    Attributes:
        embed: ``[B, X]`` the embedding term (patch embedding, prefix tokens, positions, pre-norm).
        attns: ``[B, L, X]`` each whole MSA layer (its out-projection bias included).
        mlps: ``[B, L, X]`` each MLP layer.
        heads: ``[B, L_s, H, X]`` per-head terms (granularity ``"head"`` or ``"token"``).
        tokens: ``[B, L_s, N, H, X]`` per (token, head) terms (granularity ``"token"``).
        attn_biases: ``[B, L, X]`` the part of each MSA layer in no head: its out-projection bias
            (``"centered"`` only; in ``"reference"`` it is spread over the heads and tokens).
        ln_bias: ``[B, X]`` the readout's constant: the final norm's bias, and for attention
            pools their biases and position embedding, and a projection bias (``"centered"``
            only; in ``"reference"`` it is shared by the residual terms).
        pool_mlp: ``[B, X]`` an attention pool's own MLP branch (SigLIP, PE-Core), else ``None``.
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
    pool_mlp: Tensor | None = None
    text_embeddings: Tensor | None = None

    def total(self) -> Tensor:
        """The sum of all terms, ``[B, X]``; equals ``image_embed`` up to rounding."""
        total = self.embed + self.attns.sum(1) + self.mlps.sum(1)
        for extra in (self.ln_bias, self.pool_mlp):
            if extra is not None:
                total = total + extra
        return total

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


PER_IMAGE_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(Decomposition)
    if f.name not in ("layers", "convention", "normalized", "text_embeddings"))
"""The per-image tensor fields of a :class:`Decomposition` (what a cache stores of it)."""

TERM_FIELDS: tuple[str, ...] = tuple(
    name for name in PER_IMAGE_FIELDS if name not in ("image_embed", "tokens"))
"""The fields holding direct terms ``[B, ..., X]`` (what component means average)."""


# The readout as tensors ---------------------------------------------------------------------

@dataclass
class NormWeights:
    """A norm that is affine once its scale is known: ``weight * C x / s + bias``."""

    weight: Tensor | None
    bias: Tensor | None
    centered: bool  # LayerNorm (C = I - 11^T / D) or RMSNorm (C = I)


@dataclass
class ReadoutWeights:
    """Everything between the final residual stream and the output, as tensors.

    Attributes:
        pre_norm: the per-token norm before the pool, or ``None``.
        post_norm: the norm on the pooled vector, or ``None``.
        value_weight: ``[G, D, d]`` an attention pool's value projection per pool head.
        value_bias: ``[G, d]`` or ``None``.
        out_weight: ``[G, d, D_out]`` the attention pool's out-projection per pool head.
        out_bias: ``[D_out]`` or ``None``.
        pos_embed: ``[R, D]`` the pool's position embedding, or ``None``.
        proj: ``[D_out, E]`` the projection after the pool (the identity when the tower has none).
        proj_bias: ``[E]`` or ``None``.
    """

    pre_norm: NormWeights | None
    post_norm: NormWeights | None
    proj: Tensor
    proj_bias: Tensor | None = None
    value_weight: Tensor | None = None
    value_bias: Tensor | None = None
    out_weight: Tensor | None = None
    out_bias: Tensor | None = None
    pos_embed: Tensor | None = None


@dataclass
class ReadoutMap:
    """The readout's linear part, one branch per pool head ``g``: ``sum_g (r_g @ value[g]) @
    output[g]`` for pooled rows ``r`` ``[B, G, ..., D]``. ``value`` is ``None`` (the identity,
    ``G = 1``) for class-token and mean pooling."""

    value: Tensor | None  # [G, D, V]
    output: Tensor  # [G, V, X]

    def __call__(self, pooled: Tensor) -> Tensor:
        """``[B, G, ..., D]`` -> ``[B, ..., X]``."""
        if self.value is not None:
            pooled = torch.einsum("bg...d,gdv->bg...v", pooled, self.value)
        return torch.einsum("bg...v,gvx->b...x", pooled, self.output)

    def fold(self, head_out: Tensor) -> Tensor:
        """Each head's whole path to the output: ``[H, d, D]`` -> ``[G, H, d, X]``."""
        if self.value is not None:
            head_out = torch.einsum("hkD,gDv->ghkv", head_out, self.value)
        else:
            head_out = head_out[None]
        return torch.einsum("ghkv,gvx->ghkx", head_out, self.output)


def norm_then(norm: NormWeights | None, matrix: Tensor, center: bool) -> Tensor:
    """``C diag(weight) @ matrix``: a norm's linear part followed by ``matrix`` ``[D, ...]``.

    The centering ``C`` is applied only when ``center`` and the norm is a LayerNorm.
    """
    if norm is None:
        return matrix
    if norm.weight is not None:
        matrix = norm.weight.reshape(-1, *[1] * (matrix.dim() - 1)) * matrix
    if center and norm.centered:
        # (x - mean(x)) @ A == x @ (A - mean over rows of A)
        matrix = matrix - matrix.mean(dim=0, keepdim=True)
    return matrix


def in_text_columns(x: Tensor, text_embeddings: Tensor | None) -> Tensor:
    """``[..., E]`` -> ``[..., X]``: scores against the texts, or unchanged without texts."""
    return x if text_embeddings is None else x @ text_embeddings.to(x.dtype).T


def projection(weights: ReadoutWeights, text_embeddings: Tensor | None) -> Tensor:
    """``[D_out, X]`` the projection, ending in text scores when texts are given."""
    return in_text_columns(weights.proj, text_embeddings)


def after_pool(weights: ReadoutWeights, pooled: Tensor, post_scale: Tensor,
               text_embeddings: Tensor | None = None) -> Tensor:
    """A vector that enters after the pool (a constant, the pool's MLP branch) in the output
    columns: ``[B, D_out]`` through the post-pool norm (scale ``[B]``) and the projection."""
    post_map = norm_then(weights.post_norm, projection(weights, text_embeddings), center=True)
    return pooled @ post_map / post_scale[:, None]


def readout_map(weights: ReadoutWeights, center: bool,
                text_embeddings: Tensor | None = None) -> ReadoutMap:
    """Fold norms, pool projections and the projection into a :class:`ReadoutMap`.

    Args:
        weights: the readout's tensors.
        center: apply the norms' centering to every term (``"centered"``), or leave it to the
            shared constant (``"reference"``).
        text_embeddings: optional ``[T, E]``; the map then ends in text scores.
    """
    post_map = norm_then(weights.post_norm, projection(weights, text_embeddings), center)
    if weights.value_weight is None:
        return ReadoutMap(None, norm_then(weights.pre_norm, post_map, center)[None])
    value = norm_then(weights.pre_norm, weights.value_weight.transpose(0, 1), center)
    output = torch.einsum("gdk,kx->gdx", weights.out_weight, post_map)
    return ReadoutMap(value.transpose(0, 1), output)


def readout_constant(weights: ReadoutWeights, pool_weights: Tensor, post_scale: Tensor,
                     text_embeddings: Tensor | None = None) -> Tensor:
    """The readout's constant (every bias and position embedding), ``[B, X]``, centered.

    Args:
        weights: the readout's tensors.
        pool_weights: ``[B, G, R]`` the pool's weight of each row per pool head.
        post_scale: ``[B]`` the scale of the norm after the pool (ones without one).
    """
    proj = projection(weights, text_embeddings)
    row_sums = pool_weights.sum(dim=-1)  # [B, G]
    pre_bias = weights.pre_norm.bias if weights.pre_norm is not None else None
    if weights.value_weight is None:  # class token or mean: the pooled vector itself
        pooled = row_sums[:, 0, None] * (pre_bias if pre_bias is not None else proj.new_zeros(
            proj.shape[0]))
    else:
        values = row_sums.new_zeros(*row_sums.shape, weights.value_weight.shape[-1])  # [B, G, d]
        if pre_bias is not None:
            values = values + torch.einsum("bg,d,gdk->bgk", row_sums, pre_bias,
                                           weights.value_weight)
        if weights.pos_embed is not None:
            values = values + torch.einsum("bgr,rd,gdk->bgk", pool_weights, weights.pos_embed,
                                           weights.value_weight)
        if weights.value_bias is not None:
            values = values + row_sums[..., None] * weights.value_bias
        pooled = torch.einsum("bgk,gkD->bD", values, weights.out_weight)
        if weights.out_bias is not None:
            pooled = pooled + weights.out_bias
    constant = after_pool(weights, pooled, post_scale, text_embeddings)
    if weights.post_norm is not None and weights.post_norm.bias is not None:
        constant = constant + weights.post_norm.bias @ proj
    if weights.proj_bias is not None:
        constant = constant + in_text_columns(weights.proj_bias, text_embeddings)
    return constant


def norm_after(matrix: Tensor, norm: NormWeights | None) -> Tensor:
    """``matrix @ C diag(weight)``: ``matrix`` ``[..., D]`` followed by a norm's linear part."""
    if norm is None:
        return matrix
    if norm.centered:
        matrix = matrix - matrix.mean(dim=-1, keepdim=True)
    return matrix if norm.weight is None else matrix * norm.weight


def head_output_weights(W_O: Tensor, layer_scale: Tensor | None,  # noqa: N803
                        z_norm: NormWeights | None,
                        out_norm: NormWeights | None = None) -> Tensor:
    """Each head's map from its attention output to the residual stream, ``[H, d, D]``.

    A norm over the concatenated heads (EVA's sub-LN) or on the attention output (post-norm
    blocks) is affine per token given its scale: its centering and weight fold into the map, its
    scale is a per-row weight and its bias a constant.
    """
    n_heads, d_head, width = W_O.shape
    weights = W_O.reshape(n_heads * d_head, width)
    if z_norm is not None:
        weights = norm_then(z_norm, weights, center=True)
    weights = norm_after(weights, out_norm)
    if layer_scale is not None:
        weights = weights * layer_scale
    return weights.reshape(n_heads, d_head, width)


def attention_constant(W_O: Tensor, b_O: Tensor, layer_scale: Tensor | None,  # noqa: N803
                       z_norm: NormWeights | None,
                       out_norm: NormWeights | None = None) -> tuple[Tensor, Tensor]:
    """The part of an attention layer's output in no head, at every token: ``(scaled, plain)``,
    each ``[D]``; ``scaled`` is divided by the out-norm's per-row scale, ``plain`` is not."""
    constant = b_O
    if z_norm is not None and z_norm.bias is not None:
        constant = constant + z_norm.bias @ W_O.reshape(-1, W_O.shape[-1])
    if out_norm is None:
        scaled, plain = torch.zeros_like(constant), constant
    else:
        scaled = norm_after(constant, out_norm)
        plain = out_norm.bias if out_norm.bias is not None else torch.zeros_like(constant)
    if layer_scale is not None:
        scaled, plain = scaled * layer_scale, plain * layer_scale
    return scaled, plain


def pool_rows(weights: Tensor, rows: Tensor) -> Tensor:
    """Contract rows with per-pool-head weights: ``[B, G, R]``, ``[B, R, ...]`` -> ``[B, G, ...]``.
    """
    return torch.einsum("bgr,br...->bg...", weights, rows)


def token_terms(pooled_pattern: Tensor, values: Tensor, token_maps: Tensor) -> Tensor:
    """Per (token, head) terms ``[B, N, H, X]``.

    Args:
        pooled_pattern: ``[B, G, H, N]`` each head's attention pattern contracted with the
            pool's row weights.
        values: ``[B, N, H, d]`` the value vectors (value bias included).
        token_maps: ``[G, H, d, X]`` from :meth:`ReadoutMap.fold`.
    """
    return torch.einsum("bghn,bnhd,ghdx->bnhx", pooled_pattern, values, token_maps)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulate in fp32 even for fp16/bf16 models, in fp64 for fp64 models."""
    return torch.float64 if dtype == torch.float64 else torch.float32


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


# Reading the hooked model -------------------------------------------------------------------

def _detached(tensor: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if tensor is None else tensor.detach().to(dtype)


def norm_weights(norm: HookedNorm, dtype: torch.dtype) -> NormWeights | None:
    """A hooked norm's weights, or ``None`` when the model has no norm there."""
    if not norm.exists:
        return None
    return NormWeights(_detached(norm.w, dtype), _detached(norm.b, dtype), norm.centered)


def readout_weights(vit: HookedViT, dtype: torch.dtype) -> ReadoutWeights:
    """Gather the readout's tensors through the hooked tower's accessors."""
    final = norm_weights(vit.ln_final, dtype)
    norm_after_pool = vit.final_ln_after_pool
    proj = _detached(vit.proj, dtype)
    pool = vit.pool
    width = pool.W_O.shape[-1] if pool is not None else vit.d_model
    weights = ReadoutWeights(
        pre_norm=None if norm_after_pool else final,
        post_norm=final if norm_after_pool else None,
        proj=proj if proj is not None else torch.eye(width, dtype=dtype, device=vit.device),
        proj_bias=_detached(vit.proj_bias, dtype),
    )
    if pool is not None:
        if pool.ln_k.exists:
            if weights.pre_norm is not None:
                raise ValueError("this tower normalizes its tokens twice before the pool; the "
                                 "decomposition supports one per-token norm.")
            weights.pre_norm = norm_weights(pool.ln_k, dtype)
        weights.value_weight = _detached(pool.W_V, dtype)
        weights.value_bias = _detached(pool.b_V, dtype)
        weights.out_weight = _detached(pool.W_O, dtype)
        weights.out_bias = _detached(pool.b_O, dtype)
        weights.pos_embed = _detached(pool.pos_embed, dtype)
    return weights


# Hooks a user may have on the model while decomposing ----------------------------------------

def user_hooks(vit: HookedViT) -> list[str]:
    """Names of the hook points that carry a hook (TransformerLens' or plain PyTorch's)."""
    from .hooked.vit import is_hooked

    return [name for name, point in vit.hook_dict.items() if is_hooked(point)]


def check_consistent(parts: Decomposition, hooked: list[str], dtype: torch.dtype) -> None:
    """Raise if hooks changed the forward pass in a way no term carries.

    Edits of ``hook_q``/``hook_k``/``hook_v``, the pattern, norm scales, MLPs and ``hook_embed``
    are followed by the terms; an edit of the residual stream, of ``hook_result`` or
    ``hook_attn_out`` (per-head terms), of ``hook_z`` (per-token terms) or after the pool is not.
    """
    tolerance = {torch.float64: 1e-8, torch.float32: 1e-3}.get(dtype, 5e-2)
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


# One forward pass ---------------------------------------------------------------------------

def rows_reduce(vit: HookedViT) -> bool:
    """Whether every pooled row enters with the same weight up to a per-image factor (a
    class-token pool, or a mean pool without a per-token norm), so rows can be averaged at once."""
    return vit.n_pool_rows == 1 or (vit.pool_type == "avg" and vit.final_ln_after_pool)


CAPTURE_BUDGET = 1 << 30
"""Bytes of captured rows one forward pass may hold; :func:`decompose` splits larger batches.
Only towers whose pool reads every row with its own weight (attention pools, per-token norms
before a mean) keep rows: ``(2L + 2 + L_s) * R * D`` values per image, plus patterns at token
granularity."""


def capture_bytes_per_image(vit: HookedViT, granularity: str, n_selected: int,
                            dtype: torch.dtype) -> int:
    """What :class:`_Capture` keeps per image, in bytes (an upper bound)."""
    rows = 1 if rows_reduce(vit) else vit.n_pool_rows
    width = vit.d_model * (2 * vit.n_layers + 2)
    if granularity != "layer":
        width += n_selected * vit.n_heads * (vit.d_head + 1)
    values = rows * width
    if granularity == "token":
        values += n_selected * vit.n_heads * vit.n_tokens * (rows + vit.d_head)
    return values * torch.empty((), dtype=dtype).element_size()


def concatenate(parts: Sequence[Decomposition]) -> Decomposition:
    """Join decompositions of consecutive batches along the batch dimension."""
    first = parts[0]
    values = {
        f.name: torch.cat([getattr(p, f.name) for p in parts])
        if isinstance(getattr(first, f.name), Tensor) and f.name != "text_embeddings"
        else getattr(first, f.name)
        for f in fields(first)
    }
    return Decomposition(**values)


class _Capture:
    """Forward hooks that keep only what the decomposition needs, restricted to the pool's rows.

    When every pooled row enters with the same weight up to a per-image factor (a class-token
    pool, or a mean pool without a per-token norm) the rows are averaged at once; otherwise they
    are kept and contracted with the row weights after the pass.
    """

    def __init__(self, vit: HookedViT, granularity: str, layers: Sequence[int],
                 dtype: torch.dtype, token_maps: dict[int, Tensor] | None,
                 pattern_hooked: dict[int, bool]) -> None:
        self.vit, self.granularity, self.layers, self.dtype = vit, granularity, tuple(layers), dtype
        self.rows = vit.pool_rows
        self.reduce = rows_reduce(vit)
        self.token_maps = token_maps
        self.pattern_hooked = pattern_hooked
        self.store: dict[str, Tensor] = {}
        self.scratch: dict[str, Tensor] = {}

    def pooled_rows(self, x: Tensor, reduce: bool | None = None) -> Tensor:
        x = x[:, self.rows].to(self.dtype)
        reduce = self.reduce if reduce is None else reduce
        return x.mean(dim=1, keepdim=True) if reduce else x

    def save(self, key: str, reduce: bool | None = None):
        def hook(tensor: Tensor, hook: Any) -> None:
            self.store[key] = self.pooled_rows(tensor, reduce)
        return hook

    def save_whole(self, key: str):
        def hook(tensor: Tensor, hook: Any) -> None:
            self.store[key] = tensor.to(self.dtype)
        return hook

    def save_scratch(self, key: str):
        def hook(tensor: Tensor, hook: Any) -> None:
            self.scratch[key] = tensor
        return hook

    def layer_reduces(self, layer: int) -> bool:
        """Rows of this layer's heads can be averaged now: no per-row scale inside attention."""
        attn = self.vit.blocks[layer].attn
        return self.reduce and not attn.ln.exists and not attn.ln_out.exists

    @property
    def n_rows(self) -> int:
        return self.vit.n_pool_rows

    def values_hook(self, layer: int):
        def hook(values: Tensor, hook: Any) -> None:
            if self.pattern_hooked[layer]:
                self.scratch[f"v.{layer}"] = values
                return
            attn = self.vit.blocks[layer].attn
            q_rows = self.scratch.pop("q")[:, self.rows].to(self.dtype)
            keys = self.scratch.pop("k").to(self.dtype)
            pattern = attn.softmax(attn.scores(q_rows, keys, rows=self.rows), self.dtype)
            self.tokens_from_pattern(layer, pattern, values)
        return hook

    def pattern_hook(self, layer: int):
        def hook(pattern: Tensor, hook: Any) -> None:
            rows = pattern[:, :, self.rows].to(self.dtype)
            self.tokens_from_pattern(layer, rows, self.scratch.pop(f"v.{layer}"))
        return hook

    def token_buffer(self, values: Tensor) -> Tensor:
        """The ``[B, L_s, N, H, X]`` output, allocated once and filled layer by layer (memory:
        the returned tensor, not a stack of copies)."""
        if "tokens" not in self.store:
            columns = next(iter(self.token_maps.values())).shape[-1]
            self.store["tokens"] = values.new_empty(
                values.shape[0], len(self.layers), values.shape[1], values.shape[2], columns)
        return self.store["tokens"]

    def tokens_from_pattern(self, layer: int, pattern: Tensor, values: Tensor) -> None:
        values = values.to(self.dtype)
        buffer = self.token_buffer(values)
        if self.layer_reduces(layer):  # the row weights are a per-image factor: map now
            pooled = pattern.mean(dim=2)[:, None]  # [B, 1, H, N]
            buffer[:, self.layers.index(layer)] = token_terms(pooled, values,
                                                              self.token_maps[layer])
        else:
            self.store[f"pattern.{layer}"] = pattern
            self.store[f"values.{layer}"] = values

    def hooks(self) -> list[tuple[str, Any]]:
        vit = self.vit
        hooks = [
            ("hook_embed", self.save("embed")),
            (f"blocks.{vit.n_layers - 1}.hook_resid_post", self.save("resid")),
            ("hook_image_embed", self.save_scratch("image_embed")),
        ]
        if vit.ln_final.exists:
            if vit.final_ln_after_pool:
                hooks.append(("ln_final.hook_scale", self.save_whole("post_scale")))
            else:
                hooks.append(("ln_final.hook_scale", self.save("pre_scale", reduce=False)))
        if vit.pool is not None:
            hooks.append(("pool.hook_pattern", self.save_whole("pool_pattern")))
            if vit.pool.ln_k.exists:
                hooks.append(("pool.ln_k.hook_scale", self.save_whole("pre_scale")))
            if vit.pool.has_mlp:
                hooks.append(("pool.hook_mlp_out", self.save_whole("pool_mlp")))
        for layer in range(vit.n_layers):
            hooks.append((f"blocks.{layer}.hook_attn_out", self.save(f"attn.{layer}")))
            hooks.append((f"blocks.{layer}.hook_mlp_out", self.save(f"mlp.{layer}")))
            if vit.blocks[layer].attn.ln_out.exists:
                hooks.append((f"blocks.{layer}.attn.ln_out.hook_scale",
                              self.save(f"out_scale.{layer}", reduce=False)))
        for layer in self.layers:
            prefix = f"blocks.{layer}.attn."
            if self.granularity == "layer":
                continue
            reduce = self.layer_reduces(layer)
            hooks.append((prefix + "hook_z", self.save(f"z.{layer}", reduce)))
            if vit.blocks[layer].attn.ln.exists:
                hooks.append((prefix + "ln.hook_scale",
                              self.save(f"z_scale.{layer}", reduce=False)))
            if self.granularity == "token":
                hooks.append((prefix + "hook_q", self.save_scratch("q")))
                hooks.append((prefix + "hook_k", self.save_scratch("k")))
                hooks.append((prefix + "hook_v", self.values_hook(layer)))
                if self.pattern_hooked[layer]:
                    hooks.append((prefix + "hook_pattern", self.pattern_hook(layer)))
        return hooks


def _row_weights(vit: HookedViT, store: dict[str, Tensor], like: Tensor) -> tuple[Tensor, Tensor]:
    """``(w, s_post)``: the pool's weight of each pooled row per pool head ``[B, G, R]`` and the
    post-pool norm's scale ``[B]`` (ones without one)."""
    batch, n_rows = like.shape[0], vit.n_pool_rows
    if vit.pool is not None:
        pattern = store["pool_pattern"]  # [B, G, Q, R]
        weights = torch.einsum("q,bgqr->bgr", vit.pool.query_weights(pattern), pattern)
    else:
        weights = like.new_full((batch, 1, n_rows), 1.0 / n_rows)
    post_scale = store["post_scale"].reshape(batch) if "post_scale" in store else like.new_ones(
        batch)
    return weights, post_scale


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
        convention: ``"reference"`` (default) reproduces the paper's code: the final norm's mean
            and bias (and every other readout constant) are shared equally by the ``2L + 1``
            residual terms and, inside an attention layer, by its ``N * H`` (token, head) cells
            together with the out-projection bias. ``"centered"`` centers every term on its own and
            keeps the out-projection biases (``attn_biases``) and the readout's constant
            (``ln_bias``) as separate terms.
        layers: layers for ``heads``/``tokens`` (``None``: all). Whole-layer terms always cover
            every layer, so the decomposition stays complete.
        normalize: divide every term by ``||encode_image(x)||`` so that they sum to the unit-norm
            embedding (and their dot products with unit texts sum to the cosine similarity).
        text_embeddings: optional ``[T, E]`` (or ``[E]``); every term is then contracted with the
            texts at once (``X = T``), and no ``[..., E]`` per-token tensor is ever built.

    Returns:
        A :class:`Decomposition`; ``total()`` equals ``image_embed`` (fp64: ~1e-12, fp32: ~1e-6).

    Raises:
        ValueError: for a model in training mode, bad arguments, or a hook on the model that
            changed the forward pass in a way no term carries (the message names the hooks).

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
    chunk = max(1, CAPTURE_BUDGET // capture_bytes_per_image(vit, granularity, len(selected),
                                                            dtype))
    if len(images) > chunk:  # bounded memory: the captured rows of one chunk at a time
        options = dict(granularity=granularity, convention=convention, layers=layers,
                       normalize=normalize, text_embeddings=text_embeddings)
        return concatenate([decompose(clip, part, **options) for part in images.split(chunk)])
    if text_embeddings is not None:
        text_embeddings = check_text_embeddings(text_embeddings, vit.output_dim).to(vit.device)
    with torch.no_grad(), vit.lock:
        hooked = user_hooks(vit)
        pattern_hooked = {l: any(name.startswith(f"blocks.{l}.attn.hook_") and name.endswith(
            ("hook_pattern", "hook_attn_scores")) for name in hooked) for l in range(vit.n_layers)}
        weights = readout_weights(vit, dtype)
        centered = convention == "centered"
        term_map = readout_map(weights, centered, text_embeddings)
        head_outs = {layer: _head_output(vit, layer, dtype) for layer in selected}
        token_maps = ({layer: term_map.fold(head_outs[layer]) for layer in selected}
                      if granularity == "token" else None)
        capture = _Capture(vit, granularity, selected, dtype, token_maps, pattern_hooked)
        with vit.hooks(fwd_hooks=capture.hooks()):
            vit(images)
        parts = _assemble(vit, capture, weights, term_map, head_outs, convention, normalize,
                          text_embeddings)
    if hooked:
        check_consistent(parts, hooked, dtype)
    return parts


def decompose_batches(clip: Any, images: Tensor, batch_size: int = 8,
                      **kwargs: Any) -> Iterator[Decomposition]:
    """Stream :func:`decompose` over ``images`` in chunks of ``batch_size``, one
    :class:`Decomposition` per chunk, so memory stays that of one chunk (token granularity on a
    large batch needs it: its output is ``[B, L_s, N, H, E]``).

    Examples::

        >>> for parts in cs.decompose_batches(clip, images, 8, granularity="token"):
        ...     maps.append(parts.tokens.sum(dim=(1, 3)) @ texts.T)   # reduce, then drop
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    for chunk in images.split(batch_size):
        yield decompose(clip, chunk, **kwargs)


def _head_output(vit: HookedViT, layer: int, dtype: torch.dtype) -> Tensor:
    attn = vit.blocks[layer].attn
    return head_output_weights(_detached(attn.W_O, dtype), _detached(attn.layer_scale, dtype),
                               norm_weights(attn.ln, dtype), norm_weights(attn.ln_out, dtype))


def _attention_constant(vit: HookedViT, layer: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    attn = vit.blocks[layer].attn
    return attention_constant(_detached(attn.W_O, dtype), _detached(attn.b_O, dtype),
                              _detached(attn.layer_scale, dtype), norm_weights(attn.ln, dtype),
                              norm_weights(attn.ln_out, dtype))


def _assemble(vit: HookedViT, capture: _Capture, weights: ReadoutWeights, term_map: ReadoutMap,
              head_outs: dict[int, Tensor], convention: str, normalize: bool,
              text_embeddings: Tensor | None) -> Decomposition:
    store, n_layers, dtype = capture.store, vit.n_layers, capture.dtype
    pool_weights, post_scale = _row_weights(vit, store, store["resid"])
    omega = pool_weights / post_scale[:, None, None]
    if "pre_scale" in store:
        omega = omega / store["pre_scale"].reshape(omega.shape[0], 1, -1)
    reduced_omega = omega.sum(dim=-1, keepdim=True)  # pairs with rows averaged during the pass

    def pooled(key: str) -> Tensor:
        rows = store[key]
        return pool_rows(reduced_omega if rows.shape[1] == 1 else omega, rows)

    embed = term_map(pooled("embed"))
    attns = torch.stack([term_map(pooled(f"attn.{l}")) for l in range(n_layers)], 1)
    mlps = torch.stack([term_map(pooled(f"mlp.{l}")) for l in range(n_layers)], 1)
    bias_terms = torch.stack([_bias_term(vit, capture, omega, l, term_map)
                              for l in range(n_layers)], 1)  # [B, L, X]

    heads = tokens = attn_biases = ln_bias = None
    layer_index = list(capture.layers)
    if capture.granularity != "layer":
        heads = torch.stack([_head_terms(capture, omega, reduced_omega, l, head_outs[l], term_map)
                             for l in layer_index], 1)
    if capture.granularity == "token":
        tokens = _fill_token_terms(capture, omega, reduced_omega)

    constant = readout_constant(weights, pool_weights, post_scale, text_embeddings)
    pool_mlp = None
    if "pool_mlp" in store:
        mlp_out = torch.einsum("q,bqd->bd", vit.pool.query_weights(store["pool_mlp"]),
                               store["pool_mlp"])
        pool_mlp = after_pool(weights, mlp_out, post_scale, text_embeddings)
    if convention == "reference":
        # The constant plus what centering would have removed from every term, shared equally.
        residual = pooled("resid")
        centered_map = readout_map(weights, True, text_embeddings)
        shared = (centered_map(residual) - term_map(residual) + constant) / (2 * n_layers + 1)
        embed = embed + shared
        mlps = mlps + shared[:, None]
        attns = attns + shared[:, None]
        if heads is not None:
            layer_constant = bias_terms[:, layer_index] + shared[:, None]  # [B, L_s, X]
            heads = heads + layer_constant[:, :, None] / vit.n_heads
            if tokens is not None:
                n_cells = vit.n_heads * tokens.shape[2]
                tokens.add_(layer_constant[:, :, None, None] / n_cells)
    else:
        attn_biases = bias_terms
        ln_bias = constant

    image_embed = capture.scratch["image_embed"].to(dtype)
    norm = image_embed.norm(dim=-1)
    image_embed = in_text_columns(image_embed, text_embeddings)
    parts = dict(embed=embed, attns=attns, mlps=mlps, heads=heads, tokens=tokens,
                 attn_biases=attn_biases, ln_bias=ln_bias, pool_mlp=pool_mlp,
                 image_embed=image_embed)
    if normalize:
        parts = {k: None if v is None else v / norm.reshape(-1, *[1] * (v.dim() - 1))
                 for k, v in parts.items() if k != "tokens"}
        if tokens is not None:
            parts["tokens"] = tokens.div_(norm.reshape(-1, 1, 1, 1, 1))
    return Decomposition(**parts, layers=tuple(layer_index), convention=convention,
                         normalized=normalize, text_embeddings=text_embeddings)


def _row_omega(capture: _Capture, omega: Tensor, layer: int,
               scales: tuple[str, ...] = ("z_scale", "out_scale")) -> Tensor:
    """The row weights of one layer's heads, divided by the per-row scales of its norms inside
    attention (sub-LN, post-norm), if any."""
    for scale in scales:
        key = f"{scale}.{layer}"
        if key in capture.store:
            omega = omega / capture.store[key].reshape(omega.shape[0], 1, -1)
    return omega


def _bias_term(vit: HookedViT, capture: _Capture, omega: Tensor, layer: int,
               term_map: ReadoutMap) -> Tensor:
    """``[B, X]`` the part of one attention layer in no head."""
    scaled, plain = _attention_constant(vit, layer, capture.dtype)
    weights = omega.sum(dim=-1)[..., None] * plain  # [B, G, D]
    if f"out_scale.{layer}" in capture.store:
        weights = weights + _row_omega(capture, omega, layer, ("out_scale",)).sum(
            dim=-1)[..., None] * scaled
    return term_map(weights)


def _head_terms(capture: _Capture, omega: Tensor, reduced_omega: Tensor, layer: int,
                head_out: Tensor, term_map: ReadoutMap) -> Tensor:
    """``[B, H, X]`` the head terms of one layer."""
    z = capture.store[f"z.{layer}"]  # [B, R, H, d], or [B, 1, H, d] when averaged in the pass
    weights = _row_omega(capture, omega, layer) if z.shape[1] == capture.n_rows else reduced_omega
    pooled_z = pool_rows(weights, z)  # [B, G, H, d]
    return term_map(torch.einsum("bghk,hkD->bghD", pooled_z, head_out))


def _fill_token_terms(capture: _Capture, omega: Tensor, reduced_omega: Tensor) -> Tensor:
    """``[B, L_s, N, H, X]`` the token terms, completed in place in the capture's buffer."""
    store = capture.store
    tokens = store["tokens"]
    for index, layer in enumerate(capture.layers):
        if f"pattern.{layer}" not in store:  # mapped during the pass, up to the image's factor
            tokens[:, index].mul_(reduced_omega.sum(dim=1)[:, 0, None, None, None])
            continue
        weights = _row_omega(capture, omega, layer)
        pooled_pattern = torch.einsum("bgr,bhrn->bghn", weights, store.pop(f"pattern.{layer}"))
        tokens[:, index] = token_terms(pooled_pattern, store.pop(f"values.{layer}"),
                                       capture.token_maps[layer])
    return tokens
