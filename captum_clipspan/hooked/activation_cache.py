"""TransformerLens' ``ActivationCache`` for a hooked ViT, as TransformerLens users know it.

TransformerLens' cache reads its model through ``model.cfg`` and ``model.blocks``; a
:class:`~captum_clipspan.hooked.vit.HookedViT` has the blocks but no ``cfg``, so this module gives
the cache a small view with one (:class:`ViTConfig`). Indexing (``cache["resid_pre", 3]``,
``cache["pattern", -1]``), ``stack_head_results``, ``decompose_resid``, ``accumulated_resid``,
``apply_ln_to_stack`` and ``stack_activation`` then work as they do for language models; what has
no meaning for an image tower (``logit_attrs``, ``logit_lens``: there is no vocabulary) is refused
with a pointer to :meth:`ViTActivationCache.to_image_embed`.

A ViT reads its embedding at the pooled position, so the TransformerLens ``pos_slice`` to pass is
``0`` (the class token) for class-token pooling; for mean pooling, slice the patch rows and average.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor
from transformer_lens import HookedRootModule
from transformer_lens.ActivationCache import ActivationCache

if TYPE_CHECKING:
    from .vit import HookedViT


@dataclass(frozen=True)
class ViTConfig:
    """The fields of TransformerLens' ``cfg`` that its ``ActivationCache`` reads, for a ViT.

    Attributes:
        n_layers: residual blocks. ``n_heads``, ``d_head``: per attention layer.
        d_model: residual width. ``d_mlp``: MLP hidden width (``None`` when not exposed).
        n_ctx: tokens per image (prefix tokens first, then the patch grid).
        normalization_type: ``"LN"`` (centering norms) or ``"RMS"``.
        final_rms: whether the final norm is an RMSNorm while the blocks use LayerNorm.
        attn_only: always ``False``: every block has an MLP.
    """

    n_layers: int
    n_heads: int
    d_head: int
    d_model: int
    d_mlp: int | None
    n_ctx: int
    normalization_type: str
    final_rms: bool = False
    attn_only: bool = False

    @classmethod
    def from_vit(cls, vit: HookedViT) -> ViTConfig:
        """The configuration of a hooked tower."""
        block = vit.blocks[0]
        block_ln = block.ln1 if block.ln1.exists else block.ln2
        centered = block_ln.centered if block_ln.exists else True
        final_centered = vit.ln_final.centered if vit.ln_final.exists else centered
        return cls(
            n_layers=vit.n_layers, n_heads=vit.n_heads, d_head=vit.d_head, d_model=vit.d_model,
            d_mlp=block.mlp.d_mlp if block.mlp.has_neurons else None, n_ctx=vit.n_tokens,
            normalization_type="LN" if centered else "RMS",
            final_rms=centered and not final_centered,
        )


class _TransformerLensView:
    """The hooked tower as TransformerLens' cache reads it: ``cfg`` added, the rest delegated."""

    def __init__(self, vit: HookedViT) -> None:
        self.vit = vit
        self.cfg = ViTConfig.from_vit(vit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.vit, name)


class ViTActivationCache(ActivationCache):
    """TransformerLens' ``ActivationCache`` over one run of a hooked ViT.

    Also a read-only mapping of hook names to tensors (``name in cache``, ``cache.get(name)``),
    like the plain dict :meth:`HookedViT.run_with_cache` returned before.

    Args:
        cache_dict: hook name -> activation, from ``HookedRootModule.run_with_cache``.
        vit: the :class:`~captum_clipspan.hooked.vit.HookedViT` that produced them.
        has_batch_dim: ``False`` when run with ``remove_batch_dim=True``.

    Examples::

        >>> embed, cache = clip.visual.run_with_cache(images)
        >>> cache["pattern", -1].shape                       # [B, H, N, N]
        >>> heads, labels = cache.stack_head_results(pos_slice=0, apply_ln=True,
        ...                                          return_labels=True)   # [L*H, B, D]
        >>> cache.to_image_embed(heads).shape                # [L*H, B, E]: each head's term
    """

    def __init__(self, cache_dict: dict[str, Tensor], vit: HookedViT,
                 has_batch_dim: bool = True) -> None:
        super().__init__(cache_dict, _TransformerLensView(vit), has_batch_dim=has_batch_dim)
        self.vit = vit

    def __contains__(self, key: object) -> bool:
        return key in self.cache_dict

    def get(self, key: str, default: Any = None) -> Any:
        """The activation at hook ``key``, or ``default``."""
        return self.cache_dict.get(key, default)

    def compute_head_results(self) -> None:
        """Per-head results come only from ``hook_result`` (TransformerLens would rebuild them
        from ``hook_z @ W_O``, which misses LayerScale and sub-LN norms of ViTs)."""
        missing = [layer for layer in range(self.vit.n_layers)
                   if f"blocks.{layer}.attn.hook_result" not in self.cache_dict]
        if missing:
            raise KeyError(
                f"per-head results of layers {missing} are not in the cache; run "
                "run_with_cache with a names_filter that keeps 'attn.hook_result' (or none)."
            )

    def stack_head_results(self, layer: int = -1, *args: Any, **kwargs: Any) -> Any:
        """TransformerLens' ``stack_head_results``: ``[layer * H, *batch_and_pos, D]`` each head's
        output (after LayerScale) in the residual stream; ``hook_result`` must be cached."""
        self.compute_head_results()
        return super().stack_head_results(layer, *args, **kwargs)

    def apply_ln_to_stack(self, residual_stack: Tensor, layer: int | None = None,
                          mlp_input: bool = False, pos_slice: Any = None,
                          batch_slice: Any = None, has_batch_dim: bool = True,
                          recompute_ln: bool = False) -> Tensor:
        """TransformerLens' ``apply_ln_to_stack``; the final norm of a tower that normalizes
        after the pool acts on pooled stacks ``[C, B, D]`` only (``pos_slice=0``)."""
        final = layer is None or layer in (-1, self.vit.n_layers)
        if final and self.vit.final_ln_after_pool and not recompute_ln:
            return self._apply_pooled_ln(residual_stack, batch_slice)
        return super().apply_ln_to_stack(residual_stack, layer, mlp_input, pos_slice,
                                         batch_slice, has_batch_dim, recompute_ln)

    def _apply_pooled_ln(self, residual_stack: Tensor, batch_slice: Any) -> Tensor:
        scale = self["ln_final.hook_scale"]  # [B, 1]: one scale per pooled vector
        if batch_slice is not None:
            scale = scale[batch_slice] if not isinstance(batch_slice, int) else scale[[batch_slice]]
        if residual_stack.dim() != scale.dim() + 1:
            raise ValueError(
                "this tower's final norm acts on the pooled vector, so the stack must be pooled "
                f"first ([components, B, D]), got shape {list(residual_stack.shape)}; pass "
                "pos_slice=0 for class-token pooling, or average the patch rows."
            )
        if self.vit.ln_final.centered:
            residual_stack = residual_stack - residual_stack.mean(dim=-1, keepdim=True)
        return residual_stack / scale

    def to_image_embed(self, residual_stack: Tensor) -> Tensor:
        """Map a stack already through :meth:`apply_ln_to_stack` at the final layer to the image
        embedding space: the final norm's weight, then the projection (no norm bias, no
        projection bias: those are the readout's constant, one term on its own).

        ``[..., D] -> [..., E]``. For a stack of all residual terms at the pooled position, the
        result plus the constant sums to ``encode_image`` — the paper's decomposition with each
        term centered on its own (``cs.decompose(..., convention="centered")``).
        """
        if self.vit.pool_type == "attn":
            raise ValueError(
                "this tower pools with attention, which is not linear in the residual stream "
                "alone; use cs.decompose (it reads the pool's attention weights) instead."
            )
        weight = self.vit.ln_final.w
        stack = residual_stack if weight is None else residual_stack * weight
        proj = self.vit.proj
        return stack if proj is None else stack @ proj

    def logit_attrs(self, *args: Any, **kwargs: Any) -> Tensor:
        """Not for image towers: there are no tokens to read logits of."""
        raise NotImplementedError(
            "an image tower has no vocabulary; project the stack with to_image_embed and take "
            "dot products with text embeddings (or use cs.HeadContribution with texts=)."
        )

    def logit_lens(self, *args: Any, **kwargs: Any) -> Tensor:
        """Not for image towers: see :meth:`logit_attrs`."""
        return self.logit_attrs(*args, **kwargs)


def run_with_cache(vit: HookedViT, *model_args: Any, return_cache_object: bool = True,
                   **kwargs: Any) -> tuple[Tensor, ViTActivationCache | dict[str, Tensor]]:
    """TransformerLens' ``run_with_cache`` on ``vit``, its activations as a
    :class:`ViTActivationCache` (``return_cache_object=False``: the plain dict), as
    ``HookedTransformer.run_with_cache`` does for language models.

    Args:
        vit: the hooked tower.
        *model_args: the images ``[B, 3, H, W]``.
        return_cache_object: wrap the activations (default) or return the dict.
        **kwargs: ``HookedRootModule.run_with_cache`` options (``names_filter``, ``device``,
            ``remove_batch_dim``, ``incl_bwd``, ``pos_slice``, ...).

    Returns:
        ``(image embeddings [B, E], cache)``.
    """
    out, cache_dict = HookedRootModule.run_with_cache(vit, *model_args, **kwargs)
    if not return_cache_object:
        return out, cache_dict
    return out, ViTActivationCache(cache_dict, vit,
                                   has_batch_dim=not kwargs.get("remove_batch_dim", False))
