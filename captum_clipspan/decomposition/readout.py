"""The readout (final norm, pool, projection) as pure functions on tensors.

The readout is linear in the residual stream once the scales of its norms and the weights of its
pool are read from the real forward pass:

    output = sum_g sum_i omega_{g,i} x_i @ M_g + constant (+ pool_mlp),

with ``omega_{g,i} = w_{g,i} / (s_i * s_post)``: ``w`` the pool's weight of row ``i`` for pool head
``g`` (the class token, a mean over patches, or an attention pool's pattern), ``s_i`` the per-token
final norm's scale, ``s_post`` the scale of a norm after the pool, and ``M_g`` the norms' weights
and centering, the pool's value/out projections and the projection folded into one map
(:class:`ReadoutMap`). An attention pool's own MLP (``y + mlp(norm(y))``, SigLIP) is the one
nonlinear term, ``pool_mlp``. Each head's path to the output folds into one matrix as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


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
    """The readout's linear part, one branch per pool head ``g``: ``(sum_g (r_g @ value[g]) @
    output[g]) @ post`` for pooled rows ``r`` ``[B, G, ..., D]``. ``value`` is ``None`` (the
    identity, ``G = 1``) for class-token and mean pooling; ``post`` is ``None`` (the identity)
    when it is folded into ``output``, which pays when it narrows the width (texts).
    """

    value: Tensor | None  # [G, D, V]
    output: Tensor  # [G, V, Y]
    post: Tensor | None = None  # [Y, X]

    def __call__(self, pooled: Tensor) -> Tensor:
        """``[B, G, ..., D]`` -> ``[B, ..., X]``."""
        if self.value is not None:
            pooled = torch.einsum("bg...d,gdv->bg...v", pooled, self.value)
        return self.after_values(pooled)

    def after_values(self, values: Tensor) -> Tensor:
        """The map from the pool's values on: ``[B, G, ..., V]`` -> ``[B, ..., X]``."""
        out = torch.einsum("bg...v,gvx->b...x", values, self.output)
        return out if self.post is None else out @ self.post

    def fold_values(self, head_out: Tensor) -> Tensor:
        """Each head's path into the pool's values: ``[H, d, D]`` -> ``[G, H, d, V]`` (an
        attention pool only; :meth:`after_values` maps the rest)."""
        return torch.einsum("hkD,gDv->ghkv", head_out, self.value)

    def folded_output(self) -> Tensor:
        """``[G, V, X]``: ``output @ post``."""
        return self.output if self.post is None else self.output @ self.post

    def folds_for(self, n_rows: int) -> bool:
        """Whether folding ``post`` into ``output`` costs less than applying ``post`` to about
        ``n_rows`` rows (per pool head)."""
        n_groups, v_width, _ = self.output.shape
        return self.post is not None and n_rows > n_groups * v_width

    def for_rows(self, n_rows: int) -> ReadoutMap:
        """The map to apply to about ``n_rows`` rows: with ``post`` folded into ``output`` when
        that is cheaper (:meth:`folds_for`)."""
        return ReadoutMap(self.value, self.folded_output()) if self.folds_for(n_rows) else self

    def fold(self, head_out: Tensor) -> Tensor:
        """Each head's whole path to the output: ``[H, d, D]`` -> ``[G, H, d, X]``, contracted in
        the cheaper of the two orders (through the pool's values first, or through the whole
        readout first)."""
        output = self.folded_output()
        if self.value is None:
            return torch.einsum("hkD,gDx->ghkx", head_out, output)
        (n_heads, d_head, width), (groups, _, v_width), columns = (
            head_out.shape, self.value.shape, output.shape[-1])
        values_first = n_heads * d_head * width * groups * v_width + (
            groups * n_heads * d_head * v_width * columns)
        readout_first = groups * width * v_width * columns + (
            n_heads * d_head * width * groups * columns)
        if values_first <= readout_first:
            return torch.einsum("ghkv,gvx->ghkx", self.fold_values(head_out), output)
        whole = torch.einsum("gDv,gvx->gDx", self.value, output)
        return torch.einsum("hkD,gDx->ghkx", head_out, whole)


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
    if post_map.shape[1] < post_map.shape[0]:  # texts: fold the narrow end in once
        output = torch.einsum("gdk,kx->gdx", weights.out_weight, post_map)
        return ReadoutMap(value.transpose(0, 1), output)
    return ReadoutMap(value.transpose(0, 1), weights.out_weight, post_map)


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


TOKEN_BUDGET = 1 << 26
"""Bytes of intermediate (values through every pool head's map, or values weighted by every pool
head) :func:`token_terms` holds at once; larger batches go a few images at a time."""


def token_terms(pooled_pattern: Tensor, values: Tensor, token_maps: Tensor) -> Tensor:
    """Per (token, head) terms ``[B, N, H, X]``.

    Args:
        pooled_pattern: ``[B, G, H, N]`` each head's attention pattern contracted with the
            pool's row weights.
        values: ``[B, N, H, d]`` the value vectors (value bias included).
        token_maps: ``[G, H, d, X]`` from :meth:`ReadoutMap.fold`.
    """
    n_groups, n_heads, d_head, columns = token_maps.shape
    n_tokens = values.shape[1]
    heads_first = values.permute(2, 0, 1, 3)  # [H, B, N, d]
    weights = pooled_pattern.permute(2, 0, 3, 1)  # [H, B, N, G]
    # Narrow outputs (texts) go through every pool head's map first, one GEMM per head, then
    # take the pattern's weights; wide ones weight the values per pool head first and contract
    # pool heads and head width at once. Either way one GEMM of depth d or G * d per head.
    through_maps = n_groups == 1 or columns <= d_head
    if through_maps:
        maps = token_maps.permute(1, 2, 0, 3).reshape(n_heads, d_head, n_groups * columns)
        per_image = n_heads * n_tokens * n_groups * columns
    else:
        maps = token_maps.permute(1, 0, 2, 3).reshape(n_heads, n_groups * d_head, columns)
        per_image = n_heads * n_tokens * n_groups * d_head
    step = max(1, TOKEN_BUDGET // (per_image * values.element_size()))
    parts = []
    for start in range(0, values.shape[0], step):
        part = slice(start, start + step)
        rows = heads_first[:, part]
        batch = rows.shape[1]
        if through_maps:
            mapped = torch.bmm(rows.reshape(n_heads, -1, d_head), maps)
            mapped = mapped.view(n_heads, batch, n_tokens, n_groups, columns)
            terms = torch.matmul(weights[:, part].unsqueeze(-2), mapped).squeeze(-2)
        else:
            weighted = weights[:, part, :, :, None] * rows[:, :, :, None]  # [H, b, N, G, d]
            terms = torch.bmm(weighted.reshape(n_heads, batch * n_tokens, -1), maps)
            terms = terms.view(n_heads, batch, n_tokens, columns)
        parts.append(terms)
    return (torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]).permute(1, 2, 0, 3)
