"""One forward pass: hooks that keep only the rows of the pool, and the pool's row weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .readout import token_terms

if TYPE_CHECKING:
    from ..hooked.vit import HookedViT


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


def images_per_pass(vit: HookedViT, granularity: str, n_selected: int,
                    dtype: torch.dtype) -> int:
    """How many images one forward pass may capture within :data:`CAPTURE_BUDGET` (at least 1)."""
    return max(1, CAPTURE_BUDGET // capture_bytes_per_image(vit, granularity, n_selected, dtype))


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
