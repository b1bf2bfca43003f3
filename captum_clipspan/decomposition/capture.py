"""One forward pass: hooks that keep only the rows of the pool, and the pool's row weights."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..hooked.vit import is_hooked
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
before a mean) keep rows: ``(2L + 2) * R * D`` values per image (a selected layer's head outputs
in place of its attention output), plus the queries of the pooled rows and the keys and values of
every token at token granularity."""

PATTERN_BLOCK = 1 << 21
"""Bytes of attention pattern (some images and heads of one layer) rebuilt at once after the
pass at token granularity: small enough to stay in cache between the scores, the softmax and the
contraction with the row weights."""


def capture_bytes_per_image(vit: HookedViT, granularity: str, n_selected: int,
                            dtype: torch.dtype) -> int:
    """What :class:`_Capture` keeps per image, in bytes (an upper bound)."""
    reduce = rows_reduce(vit)
    rows = 1 if reduce else vit.n_pool_rows
    width = vit.d_model * (2 * vit.n_layers + 2)
    if granularity != "layer":  # z instead of the attention output
        width += n_selected * (vit.n_heads * (vit.d_head + 1) - vit.d_model)
    values = rows * width
    if granularity == "token" and not reduce:
        values += n_selected * vit.n_heads * vit.d_head * (rows + 2 * vit.n_tokens)
    return values * torch.empty((), dtype=dtype).element_size()


def images_per_pass(vit: HookedViT, granularity: str, n_selected: int,
                    dtype: torch.dtype) -> int:
    """How many images one forward pass may capture within :data:`CAPTURE_BUDGET` (at least 1)."""
    return max(1, CAPTURE_BUDGET // capture_bytes_per_image(vit, granularity, n_selected, dtype))


class _Capture:
    """Forward hooks that keep only what the decomposition needs, restricted to the pool's rows.

    When every pooled row enters with the same weight up to a per-image factor (a class-token
    pool, or a mean pool without a per-token norm) the rows are averaged at once; otherwise they
    are kept and contracted with the row weights after the pass. At token granularity the
    pooled pattern rows of a layer whose rows reduce are mapped during the pass; otherwise the
    pooled queries, the keys and the values are kept, and :meth:`pooled_pattern` rebuilds the
    pattern after the pass, one layer at a time, once the row weights are known.

    Args:
        token_maps: at token granularity, ``layer -> [G, H, d, X]`` each head's folded map
            (:meth:`~.readout.ReadoutMap.fold`), called once per selected layer.
    """

    def __init__(self, vit: HookedViT, granularity: str, layers: Sequence[int],
                 dtype: torch.dtype, token_maps: Callable[[int], Tensor] | None,
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

    def row_scale(self, name: str, layer: int) -> Tensor | None:
        """``[B, R, 1]`` a per-row scale of a norm inside ``layer``'s attention (``"z_scale"``:
        over the heads' outputs, ``"out_scale"``: over the attention output), or ``None``
        without that norm. The heads' norm scale is computed here from the kept rows of ``z``
        unless a hook captured it, so that the tower's own norm runs fused in the pass."""
        key = f"{name}.{layer}"
        if key not in self.store and name == "z_scale" and f"z.{layer}" in self.store:
            norm = self.vit.blocks[layer].attn.ln
            if norm.exists:
                z = self.store[f"z.{layer}"]
                self.store[key] = norm.scale(z.reshape(*z.shape[:2], -1)).to(self.dtype)
        return self.store.get(key)

    @property
    def n_rows(self) -> int:
        return self.vit.n_pool_rows

    def values_hook(self, layer: int):
        def hook(values: Tensor, hook: Any) -> None:
            q_rows, keys = self.scratch.pop("q")[:, self.rows], self.scratch.pop("k")
            if not self.layer_reduces(layer):  # the pattern waits for the row weights
                self.store.update({f"q.{layer}": q_rows, f"k.{layer}": keys,
                                   f"values.{layer}": values})
                return
            attn = self.vit.blocks[layer].attn
            scores = attn.scores(q_rows.to(self.dtype), keys.to(self.dtype), rows=self.rows)
            pooled = attn.softmax(scores, self.dtype).mean(dim=2)[:, None]  # [B, 1, H, N]
            self.map_tokens(layer, pooled, values)
        return hook

    def pattern_hook(self, layer: int):
        def hook(pattern: Tensor, hook: Any) -> None:
            rows, values = pattern[:, :, self.rows].to(self.dtype), self.scratch.pop(f"v.{layer}")
            if self.layer_reduces(layer):
                self.map_tokens(layer, rows.mean(dim=2)[:, None], values)
            else:
                self.store.update({f"pattern.{layer}": rows, f"values.{layer}": values})
        return hook

    def pooled_pattern(self, layer: int, weights: Tensor) -> Tensor:
        """``[B, G, H, N]`` the pattern's pooled rows contracted with the row weights ``[B, G,
        R]`` after the pass: from the hooked pattern, or rebuilt from the kept queries and keys
        in blocks of images and heads of at most :data:`PATTERN_BLOCK` bytes (cache-sized: far
        faster than one layer's whole pattern, and never more than one layer's)."""
        if f"pattern.{layer}" in self.store:
            return torch.einsum("bgr,bhrn->bghn", weights, self.store.pop(f"pattern.{layer}"))
        attn = self.vit.blocks[layer].attn
        q_rows, keys = self.store.pop(f"q.{layer}"), self.store.pop(f"k.{layer}")
        per_head = q_rows.shape[1] * keys.shape[1] * weights.element_size()
        heads = max(1, min(attn.n_heads, PATTERN_BLOCK // per_head))
        images = max(1, PATTERN_BLOCK // (per_head * attn.n_heads)) if heads == attn.n_heads else 1
        rows = []
        for start in range(0, len(keys), images):
            part = slice(start, start + images)
            blocks = []
            for first in range(0, attn.n_heads, heads):
                block = slice(first, first + heads)
                scores = attn.scores(q_rows[part, :, block].to(self.dtype),
                                     keys[part, :, block].to(self.dtype), self.rows, block)
                pattern = attn.softmax(scores, self.dtype)  # [b, h, R, N]
                blocks.append(torch.matmul(weights[part, None], pattern))  # [b, h, G, N]
            rows.append(torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0])
        return (torch.cat(rows) if len(rows) > 1 else rows[0]).transpose(1, 2)

    def token_buffer(self, values: Tensor, columns: int) -> Tensor:
        """The ``[B, L_s, N, H, X]`` output, allocated once and filled layer by layer (memory:
        the returned tensor, not a stack of copies)."""
        if "tokens" not in self.store:
            self.store["tokens"] = values.new_empty(
                values.shape[0], len(self.layers), values.shape[1], values.shape[2], columns,
                dtype=self.dtype)
        return self.store["tokens"]

    def map_tokens(self, layer: int, pooled_pattern: Tensor, values: Tensor) -> None:
        """Write one layer's token terms ``[B, N, H, X]`` (pooled pattern ``[B, G, H, N]``,
        values ``[B, N, H, d]``) into the output buffer."""
        maps = self.token_maps(layer)
        buffer = self.token_buffer(values, maps.shape[-1])
        buffer[:, self.layers.index(layer)] = token_terms(pooled_pattern, values.to(self.dtype),
                                                          maps)

    @contextmanager
    def attached(self) -> Iterator[None]:
        """The capture's hooks on the tower for the duration of the block, removed afterwards
        (also when it raises). Only these hooks are touched: ``HookedViT.hooks()`` would visit
        every hook point of the tower on exit, a measurable cost per call."""
        handles = []
        try:
            for name, hook in self.hooks():
                point = self.vit.hook_dict[name]
                handles.append((point, point.add_hook(hook)))
            yield
        finally:
            for point, handle in handles:
                handle.hook.remove()
                point.fwd_hooks.remove(handle)

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
            if self.granularity == "layer" or layer not in self.layers:  # else: from the heads
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
            norm = vit.blocks[layer].attn.ln
            if norm.exists and (is_hooked(norm.hook_scale) or is_hooked(norm.hook_normalized)):
                # The user's hooks already run this norm step by step; otherwise it stays
                # fused and its scale is recomputed from the kept rows (:meth:`row_scale`).
                hooks.append((prefix + "ln.hook_scale",
                              self.save(f"z_scale.{layer}", reduce=False)))
            if self.granularity != "token":
                continue
            if self.pattern_hooked[layer]:  # the pattern as the user's hooks left it
                hooks.append((prefix + "hook_v", self.save_scratch(f"v.{layer}")))
                hooks.append((prefix + "hook_pattern", self.pattern_hook(layer)))
            else:
                hooks.append((prefix + "hook_q", self.save_scratch("q")))
                hooks.append((prefix + "hook_k", self.save_scratch("k")))
                hooks.append((prefix + "hook_v", self.values_hook(layer)))
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
