"""A TransformerLens-style hooked view of a live CLIP-family ViT image tower.

``HookedViT`` does not convert weights: a backend (``hooked/backends/``) describes the tower's
modules once (a :class:`~captum_clipspan.hooked.spec.TowerSpec`), and the hooked module calls them,
so ``hooked(x)`` equals the backend's own forward. Hook points follow TransformerLens names
(``blocks.3.attn.hook_pattern``), so ``run_with_cache`` and ``hooks()`` work as users expect, and
the per-layer weights are read through TransformerLens-style accessors (``W_Q``, ``W_O``, ``b_O``).

Attention runs on one of two paths. *Passthrough* calls the backend's own attention and is
bit-identical to it; it is used when nothing inside attention is hooked. *Split* computes q/k/v
with the backend's projections and passes every step through a hook point, so interventions
propagate. Norms are likewise expanded (to expose ``hook_scale``) only when one of their hook points
is hooked. A hook counts whether it was added by TransformerLens or as a plain PyTorch hook (as
Captum's layer methods add them).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import activation_cache
from .hook_points import HookedRootModule, HookPoint
from .spec import AttentionPoolSpec, AttentionSpec, BlockSpec, Context, MLPSpec, TowerSpec


def is_hooked(point: nn.Module) -> bool:
    """Whether any hook, TransformerLens' or a plain PyTorch one, is on ``point``."""
    return bool(point._forward_hooks or point._forward_pre_hooks or point._backward_hooks
                or point._backward_pre_hooks)


def _live(value: Any) -> Any:
    """A spec field that may be given as a zero-argument callable of the live weights."""
    return value() if callable(value) else value


def _register_quietly(owner: nn.Module, name: str, module: nn.Module | None) -> None:
    """Keep a backend module without registering it again (it already belongs to the tower)."""
    owner.__dict__[name] = module


class HookedNorm(nn.Module):
    """Hook points of one LayerNorm or RMSNorm (``hook_scale`` ``[..., 1]``, ``hook_normalized``).

    Given its scale ``s`` the norm is affine: ``weight * C x / s + bias``, with ``C`` the centering
    (LayerNorm) or the identity (RMSNorm). Accessors: ``w``, ``b``, ``eps``, ``centered``.
    """

    def __init__(self, norm: nn.Module | None) -> None:
        super().__init__()
        if isinstance(norm, nn.Identity):
            norm = None
        _register_quietly(self, "norm", norm)
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()
        if norm is not None:
            kind = type(norm).__name__.lower()
            if not isinstance(norm, (nn.LayerNorm, nn.RMSNorm)) and "rmsnorm" not in kind:
                raise TypeError(f"unsupported norm layer {type(norm).__name__}")

    @property
    def exists(self) -> bool:
        return self.norm is not None

    @property
    def centered(self) -> bool:
        return isinstance(self.norm, nn.LayerNorm)

    @property
    def w(self) -> Tensor | None:
        return getattr(self.norm, "weight", None)

    @property
    def b(self) -> Tensor | None:
        return getattr(self.norm, "bias", None)

    @property
    def eps(self) -> float:
        eps = getattr(self.norm, "eps", None)
        return 1e-6 if eps is None else float(eps)

    def scale(self, x: Tensor) -> Tensor:
        """``[..., 1]`` the scale ``s`` of inputs ``x`` ``[..., D]``, as ``hook_scale`` sees it
        (the one formula: the forward pass computes it here too)."""
        return self._scale_of_centered(self._centered(x))

    def _centered(self, x: Tensor) -> Tensor:
        if type(self.norm).__name__ == "LayerNormFp32":
            x = x.float()
        return x - x.mean(-1, keepdim=True) if self.centered else x

    def _scale_of_centered(self, x: Tensor) -> Tensor:
        return (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()

    def forward(self, x: Tensor) -> Tensor:
        if self.norm is None:
            return x
        if not (is_hooked(self.hook_scale) or is_hooked(self.hook_normalized)):
            return self.norm(x)
        out_dtype = x.dtype
        x = self._centered(x)
        scale = self.hook_scale(self._scale_of_centered(x))
        normalized = self.hook_normalized(x / scale)
        if self.w is not None:
            normalized = normalized * self.w
        if self.b is not None:
            normalized = normalized + self.b
        return normalized.to(out_dtype)


class HookedAttention(nn.Module):
    """Hook points and weights of one self-attention layer; shapes follow TransformerLens.

    ``hook_q``/``hook_k``/``hook_v``/``hook_z``: ``[B, N, H, d_head]`` (q and k as they enter the
    dot product: after qk-norm and rotary embeddings where the model has them); ``hook_attn_scores``
    and ``hook_pattern``: ``[B, H, N_query, N_key]``; ``hook_result``: ``[B, N, H, D]``, each
    head's share of the out-projection after LayerScale (the out-projection bias is in no head).
    ``ln`` is the norm over the concatenated heads (EVA's sub-LN), ``ln_out`` the norm on the
    output of a post-norm block (EVA02-E), when the model has them; with ``ln_out``,
    ``hook_result`` holds the heads' shares before it.

    Weights: ``W_Q``, ``W_K``, ``W_V`` ``[H, D, d_head]``, ``b_Q``/``b_K``/``b_V`` ``[H, d_head]``,
    ``W_O`` ``[H, d_head, D]``, ``b_O`` ``[D]``, ``layer_scale`` ``[D]`` (or ``None``).
    """

    def __init__(self, spec: AttentionSpec, layer_scale: Tensor | None) -> None:
        super().__init__()
        _register_quietly(self, "spec", spec)
        _register_quietly(self, "layer_scale", layer_scale)
        self.n_heads, self.d_head = spec.n_heads, spec.d_head
        self.scale = spec.scale if spec.scale is not None else spec.d_head ** -0.5
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()
        self.ln = HookedNorm(spec.z_norm)
        self.hook_result = HookPoint()
        self.ln_out = HookedNorm(spec.out_norm)
        self.force_split = False

    def _heads(self, weight: Tensor | None, bias: bool = False) -> Tensor | None:
        if weight is None:
            return None
        if bias:
            return weight.reshape(self.n_heads, self.d_head)
        return weight.reshape(self.n_heads, self.d_head, -1).transpose(1, 2)

    @property
    def W_Q(self) -> Tensor | None:  # noqa: N802 (TransformerLens' names)
        weights = _live(self.spec.qkv_weights)
        return self._heads(weights[0]) if weights else None

    @property
    def W_K(self) -> Tensor | None:  # noqa: N802
        weights = _live(self.spec.qkv_weights)
        return self._heads(weights[1]) if weights else None

    @property
    def W_V(self) -> Tensor | None:  # noqa: N802
        weights = _live(self.spec.qkv_weights)
        return self._heads(weights[2]) if weights else None

    @property
    def b_Q(self) -> Tensor | None:  # noqa: N802
        return self._heads(_live(self.spec.qkv_biases)[0], bias=True)

    @property
    def b_K(self) -> Tensor | None:  # noqa: N802
        return self._heads(_live(self.spec.qkv_biases)[1], bias=True)

    @property
    def b_V(self) -> Tensor | None:  # noqa: N802
        return self._heads(_live(self.spec.qkv_biases)[2], bias=True)

    @property
    def W_O(self) -> Tensor:  # noqa: N802
        """``[H, d_head, D]``: head ``h`` writes ``z_h @ W_O[h]``."""
        weight = self.spec.out_weight
        return weight.reshape(weight.shape[0], self.n_heads, self.d_head).permute(1, 2, 0)

    @property
    def b_O(self) -> Tensor:  # noqa: N802
        bias = self.spec.out_bias
        return bias if bias is not None else self.spec.out_weight.new_zeros(
            self.spec.out_weight.shape[0])

    def hooked_points(self) -> list[HookPoint]:
        return [self.hook_q, self.hook_k, self.hook_v, self.hook_attn_scores, self.hook_pattern,
                self.hook_z, self.ln.hook_scale, self.ln.hook_normalized, self.hook_result]

    def is_split(self) -> bool:
        return self.force_split or any(is_hooked(point) for point in self.hooked_points())

    def scores(self, q: Tensor, k: Tensor, rows: slice | None = None,
               heads: slice | None = None) -> Tensor:
        """Attention scores ``[B, H, N_q, N]`` of queries ``q`` ``[B, N_q, H, d]`` (the query
        rows ``rows`` of the sequence) against all keys, for the heads ``heads`` that ``q`` and
        ``k`` hold (all by default); the one score function of both the forward pass and the
        decomposition."""
        scores = torch.einsum("bqhd,bkhd->bhqk", q * self.scale, k)  # scale the smaller side
        if self.spec.score_bias is not None:
            bias = self.spec.score_bias()
            bias = bias if heads is None else bias[heads]
            scores = scores + (bias if rows is None else bias[:, rows]).to(scores.dtype)
        return scores

    def softmax(self, scores: Tensor, dtype: torch.dtype) -> Tensor:
        """The attention pattern from scores, in the model's softmax dtype, returned as
        ``dtype``; with :meth:`scores`, the one pattern function of the forward pass and the
        decomposition."""
        return scores.softmax(dim=-1, dtype=_live(self.spec.softmax_dtype)).to(dtype)

    def forward(self, x: Tensor, context: Context) -> Tensor:
        """Map the ``ln1`` output ``[B, N, D]`` to the attention output after LayerScale."""
        if self.is_split():
            return self._split(x, context)
        return self._output(self.spec.run(x, context))

    def _output(self, x: Tensor) -> Tensor:
        """The out-norm of a post-norm block, then LayerScale."""
        x = self.ln_out(x)
        return x if self.layer_scale is None else x * self.layer_scale

    def _split(self, x: Tensor, context: Context) -> Tensor:
        """Attention step by step through the hook points; output after LayerScale."""
        q, k, v = self.spec.project(x, context)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        explicit = _live(self.spec.softmax_dtype) is not None  # SDPA would not match it
        if explicit or is_hooked(self.hook_attn_scores) or is_hooked(self.hook_pattern):
            scores = self.hook_attn_scores(self.scores(q, k))
            pattern = self.hook_pattern(self.softmax(scores, v.dtype))
            z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        else:
            bias = self.spec.score_bias().to(q.dtype) if self.spec.score_bias else None
            z = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias,
                scale=self.scale,
            ).transpose(1, 2)
        z = self.hook_z(z)
        batch, n_tokens = z.shape[:2]
        flat = self.ln(z.reshape(batch, n_tokens, -1))
        if is_hooked(self.hook_result):
            per_head = torch.einsum("bnhd,hdD->bnhD",
                                    flat.reshape(batch, n_tokens, self.n_heads, self.d_head),
                                    self.W_O)
            if self.ln_out.exists:  # the norm acts on the sum: shares before it
                return self._output(self.hook_result(per_head).sum(dim=2) + self.b_O)
            per_head = self.hook_result(self._output(per_head))
            return per_head.sum(dim=2) + self._output(self.b_O)
        return self._output(F.linear(flat, self.spec.out_weight, self.spec.out_bias))


class HookedMLP(nn.Module):
    """Hook points and weights of one MLP; shapes follow TransformerLens.

    ``hook_pre`` ``[B, N, n]``: the pre-activation (of the gate, for a gated MLP);
    ``hook_pre_linear``: the linear branch of a gated MLP (SwiGLU); ``hook_post``: the hidden units
    ``p`` that the out-projection reads (for a gated MLP, the product). ``ln`` is the norm over
    the hidden units (EVA's sub-LN in SwiGLU), ``ln_out`` the norm on the output of a post-norm
    block (EVA02-E), when the model has them.

    Weights: ``W_out`` ``[n, D]`` (hidden unit ``k`` writes ``p_k W_out[k]``), ``b_out`` ``[D]``,
    ``layer_scale`` ``[D]`` (the block's ``ls2``, or ``None``).

    The backend's own MLP runs whole (bit-identical) unless one of these hook points is hooked.
    An MLP the backend describes only as a whole (``has_neurons`` false) always runs whole, and
    its hook points stay idle.
    """

    def __init__(self, spec: MLPSpec, layer_scale: Tensor | None = None) -> None:
        super().__init__()
        _register_quietly(self, "spec", spec)
        _register_quietly(self, "layer_scale", layer_scale)
        self.hook_pre = HookPoint()
        self.hook_pre_linear = HookPoint()
        self.hook_post = HookPoint()
        self.ln = HookedNorm(spec.inner_norm)
        self.ln_out = HookedNorm(spec.out_norm)

    @property
    def has_neurons(self) -> bool:
        """Whether the hidden units are exposed (``hook_post``, ``W_out``)."""
        return self.spec.pre is not None and self.spec.out_weight is not None

    @property
    def d_mlp(self) -> int:
        """``n``, the number of hidden units."""
        return self.spec.out_weight.shape[1]

    @property
    def W_out(self) -> Tensor:  # noqa: N802 (TransformerLens' names)
        """``[n, D]``: row ``k`` is what hidden unit ``k`` writes per unit of activation."""
        return self.spec.out_weight.T

    @property
    def b_out(self) -> Tensor:
        """``[D]`` the out-projection bias (zeros without one)."""
        bias = self.spec.out_bias
        return bias if bias is not None else self.spec.out_weight.new_zeros(
            self.spec.out_weight.shape[0])

    def hooked_points(self) -> list[HookPoint]:
        return [self.hook_pre, self.hook_pre_linear, self.hook_post, self.ln.hook_scale,
                self.ln.hook_normalized, self.ln_out.hook_scale, self.ln_out.hook_normalized]

    def forward(self, x: Tensor) -> Tensor:
        spec = self.spec
        if spec.pre is None or not any(is_hooked(point) for point in self.hooked_points()):
            return spec.run(x)
        hidden = spec.act(self.hook_pre(spec.pre(x)))
        if spec.pre_linear is not None:
            hidden = hidden * self.hook_pre_linear(spec.pre_linear(x))
        return self.ln_out(spec.post(self.ln(self.hook_post(hidden))))


class HookedBlock(nn.Module):
    """One residual block: ``x + ls1 * attn(ln1(x))`` then ``+ ls2 * mlp(ln2(x))``."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        _register_quietly(self, "spec", spec)
        self.hook_resid_pre = HookPoint()
        self.ln1 = HookedNorm(spec.ln1)
        self.attn = HookedAttention(spec.attention, spec.ls1)
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.ln2 = HookedNorm(spec.ln2)
        self.mlp = HookedMLP(spec.mlp, spec.ls2)
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    @property
    def ls2(self) -> Tensor | None:
        return self.spec.ls2

    def forward(self, x: Tensor, context: Context) -> Tensor:
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.ln1(x), context)))
        mlp_out = self.mlp(self.ln2(x))
        if self.spec.ls2 is not None:
            mlp_out = mlp_out * self.spec.ls2
        return self.hook_resid_post(x + self.hook_mlp_out(mlp_out))


class HookedAttentionPool(nn.Module):
    """Hook points of an attention pool (``pool.hook_pattern`` ``[B, G, Q, N]``, ``pool.hook_z``
    ``[B, Q, G, d]``, ``pool.hook_mlp_out`` ``[B, Q, D]``; ``pool.ln_k`` for CoCa's key norm).

    Weights: ``W_V`` ``[G, D, d]``, ``b_V`` ``[G, d]``, ``W_O`` ``[G, d, D_out]``, ``b_O``.
    """

    def __init__(self, spec: AttentionPoolSpec) -> None:
        super().__init__()
        _register_quietly(self, "spec", spec)
        self.n_heads, self.d_head = spec.n_heads, spec.d_head
        self.scale = spec.scale if spec.scale is not None else spec.d_head ** -0.5
        self.ln_k = HookedNorm(spec.kv_norm)
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()
        self.hook_mlp_out = HookPoint()

    @property
    def W_V(self) -> Tensor:  # noqa: N802
        return _live(self.spec.v_weight).reshape(self.n_heads, self.d_head, -1).transpose(1, 2)

    @property
    def b_V(self) -> Tensor | None:  # noqa: N802
        bias = _live(self.spec.v_bias)
        return None if bias is None else bias.reshape(self.n_heads, self.d_head)

    @property
    def W_O(self) -> Tensor:  # noqa: N802
        weight = self.spec.out_weight
        return weight.reshape(weight.shape[0], self.n_heads, self.d_head).permute(1, 2, 0)

    @property
    def b_O(self) -> Tensor | None:  # noqa: N802
        return self.spec.out_bias

    @property
    def pos_embed(self) -> Tensor | None:
        """``[N, D]`` added to the tokens before the key/value projections, or ``None``."""
        return self.spec.pos_embed

    @property
    def has_mlp(self) -> bool:
        """Whether the pool has its own residual MLP branch (``pool.hook_mlp_out``)."""
        return self.spec.mlp is not None

    @property
    def n_queries(self) -> int:
        return self.spec.query().shape[0]

    def query_weights(self, like: Tensor) -> Tensor:
        """``[Q]`` how the query outputs are combined into the pooled vector."""
        weights = like.new_zeros(self.n_queries)
        if self.spec.select == "mean":
            return weights + 1.0 / self.n_queries
        weights[0] = 1.0
        return weights

    def forward(self, x: Tensor) -> Tensor:
        x = self.ln_k(x)
        points = (self.hook_pattern, self.hook_z, self.hook_mlp_out, self.ln_k.hook_scale,
                  self.ln_k.hook_normalized)
        if not any(is_hooked(point) for point in points):
            return self.spec.run(x)
        spec = self.spec
        q = spec.query().to(x.dtype)  # [Q, G, d]
        k, v = spec.project_kv(x)  # [B, N, G, d]
        scores = torch.einsum("qgd,bngd->bgqn", q, k) * self.scale
        pattern = self.hook_pattern(scores.softmax(dim=-1))
        z = self.hook_z(torch.einsum("bgqn,bngd->bqgd", pattern, v))
        out = F.linear(z.reshape(*z.shape[:2], -1), spec.out_weight, spec.out_bias)
        if spec.mlp is not None:
            out = out + self.hook_mlp_out(spec.mlp(out))
        return out[:, 0] if spec.select == "first" else out.mean(dim=1)


class HookedViT(HookedRootModule):
    """A live CLIP-family ViT image tower with TransformerLens hook points.

    Hook names: ``hook_patch_embed`` (patch tokens ``[B, P, D]``), ``hook_embed`` (the first
    residual term ``[B, N, D]``: class/register tokens, positions and pre-norm included),
    ``blocks.{l}.hook_resid_pre``, ``blocks.{l}.ln1.hook_scale``,
    ``blocks.{l}.attn.hook_q|k|v|attn_scores|pattern|z|result``, ``blocks.{l}.attn.ln.hook_scale``
    (sub-LN towers), ``blocks.{l}.hook_attn_out``, ``blocks.{l}.hook_resid_mid``,
    ``blocks.{l}.ln2.hook_scale``, ``blocks.{l}.mlp.hook_pre|pre_linear|post`` (hidden units
    ``[B, N, n]``), ``blocks.{l}.mlp.ln|ln_out.hook_scale`` (sub-LN, post-norm towers),
    ``blocks.{l}.hook_mlp_out``, ``blocks.{l}.hook_resid_post``,
    ``ln_final.hook_scale|normalized`` (the final norm, before or after the pool),
    ``pool.hook_pattern|z|mlp_out`` (attention pools), ``hook_pooled`` (``[B, D]``, before the
    projection) and ``hook_image_embed`` (``[B, E]``).

    One ``HookedViT`` can be shared by threads: hooks are per thread (a forward pass runs only
    the hooks its own thread added, :mod:`~captum_clipspan.hooked.hook_points`) and calls that
    must not interleave hold ``lock``.

    Args:
        visual: the image tower (``model.visual`` of an open_clip model, a ``transformers``
            vision model, ...) or a :class:`~captum_clipspan.hooked.spec.TowerSpec`. It stays the
            owner of the weights; the hooked module only calls its submodules.

    Examples::

        >>> model = open_clip.create_model("ViT-B-16").eval()
        >>> hooked = HookedViT(model.visual)
        >>> embed, cache = hooked.run_with_cache(images, names_filter=lambda n: "pattern" in n)
        >>> cache["blocks.11.attn.hook_pattern"].shape  # [B, H, N, N]
    """

    def __init__(self, visual: nn.Module | TowerSpec) -> None:
        from .backends import tower_spec

        spec = visual if isinstance(visual, TowerSpec) else tower_spec(visual)
        super().__init__()
        _register_quietly(self, "spec", spec)
        _register_quietly(self, "_source", visual)
        self.model = spec.module
        self.family = spec.family
        self.n_layers = len(spec.blocks)
        self.n_heads = spec.blocks[0].attention.n_heads
        self.d_head = spec.blocks[0].attention.d_head
        self.hook_patch_embed = HookPoint()
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList(HookedBlock(block) for block in spec.blocks)
        readout = spec.readout
        self.ln_final = HookedNorm(readout.final_norm)
        self.pool = (HookedAttentionPool(readout.attention_pool)
                     if readout.attention_pool is not None else None)
        self.hook_pooled = HookPoint()
        self.hook_image_embed = HookPoint()
        self.image_size = tuple(spec.image_size)
        self.grid_size = tuple(spec.grid_size)
        self.n_prefix_tokens = spec.n_prefix_tokens
        self.n_tokens = self.grid_size[0] * self.grid_size[1] + self.n_prefix_tokens
        self.d_model = self._infer_width()
        self.output_dim = self.proj.shape[1] if self.proj is not None else self._pooled_width()
        self.setup()

    def __reduce__(self) -> tuple[type[HookedViT], tuple[nn.Module]]:
        """Copies and pickles rebuild the hooked view over the copied tower, since the spec's
        functions close over the original tower's modules; they start with no hooks and a lock
        of their own."""
        if isinstance(self._source, TowerSpec):
            raise TypeError("a HookedViT built from a TowerSpec cannot be copied or pickled (its "
                            "functions close over the original modules); build it from the "
                            "tower module, HookedViT(visual), to copy it.")
        return type(self), (self._source,)

    def _infer_width(self) -> int:
        return self.spec.blocks[0].attention.out_weight.shape[0]

    def _pooled_width(self) -> int:
        pool = self.spec.readout.attention_pool
        return pool.out_weight.shape[0] if pool is not None else self.d_model

    def setup(self) -> None:
        """Name our own modules and hook points only; the backend's modules stay untouched."""
        self.mod_dict, self.hook_dict = {}, {}
        for name, module in self.named_modules():
            if name in ("", "model") or name.startswith("model."):
                continue
            module.name = name
            self.mod_dict[name] = module
            if isinstance(module, HookPoint):
                self.hook_dict[name] = module

    def run_with_cache(self, *args: Any, **kwargs: Any) -> tuple[Tensor, Any]:
        """TransformerLens' ``run_with_cache``: the cache is a
        :class:`~captum_clipspan.hooked.activation_cache.ViTActivationCache`
        (``return_cache_object=False``: the plain dict)."""
        return activation_cache.run_with_cache(self, *args, **kwargs)

    # Readout description, for the decomposition --------------------------------------------
    @property
    def pool_type(self) -> str:
        """``"tok"``, ``"avg"`` or ``"attn"``: how the tower pools its tokens."""
        return {"token": "tok", "mean": "avg", "attention": "attn"}[self.spec.readout.pool]

    @property
    def pool_rows(self) -> slice:
        """The token rows the pool reads, as a slice of ``[0, N)``."""
        rows = self.spec.readout.pool_rows
        return slice(rows, rows + 1) if isinstance(rows, int) else rows

    @property
    def n_pool_rows(self) -> int:
        """How many token rows the pool reads."""
        return len(range(self.n_tokens)[self.pool_rows])

    @property
    def final_ln_after_pool(self) -> bool:
        return self.spec.readout.final_norm_after_pool

    @property
    def proj(self) -> Tensor | None:
        """``[D_out, E]`` everything linear after the pool, as one matrix (``None``: identity)."""
        proj = self.spec.readout.proj
        return proj() if callable(proj) else proj

    @property
    def proj_bias(self) -> Tensor | None:
        """``[E]`` the bias of the maps after the pool, or ``None``."""
        bias = self.spec.readout.proj_bias
        return bias() if callable(bias) else bias

    # TransformerLens-style stacked weights ---------------------------------------------------
    @property
    def W_O(self) -> Tensor:  # noqa: N802
        """``[L, H, d_head, D]``."""
        return torch.stack([block.attn.W_O for block in self.blocks])

    @property
    def b_O(self) -> Tensor:  # noqa: N802
        """``[L, D]``."""
        return torch.stack([block.attn.b_O for block in self.blocks])

    @property
    def dtype(self) -> torch.dtype:
        return self.spec.blocks[0].attention.out_weight.dtype

    @property
    def device(self) -> torch.device:
        return self.spec.blocks[0].attention.out_weight.device

    def check_images(self, images: Tensor) -> None:
        """Raise a clear error unless ``images`` is a finite ``[B, 3, H, W]`` batch of this size."""
        if not isinstance(images, Tensor):
            raise TypeError(
                f"images must be a torch.Tensor [B, 3, {self.image_size[0]}, "
                f"{self.image_size[1]}], got {type(images).__name__}; use "
                "HookedCLIP.preprocess_images for PIL images."
            )
        expected = (3, *self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images must have shape [B, {', '.join(map(str, expected))}] for this model, got "
                f"{list(images.shape)}; resize with HookedCLIP.preprocess_images."
            )
        if not images.is_floating_point():
            raise TypeError(f"images must be a floating-point tensor, got {images.dtype}.")
        # One reduction first: a NaN or an infinity makes the sum non-finite (an overflowing
        # sum of finite values then passes the exact check).
        total = images.sum(dtype=torch.promote_types(images.dtype, torch.float32))
        if not torch.isfinite(total) and not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values.")

    def embed(self, images: Tensor) -> tuple[Tensor, Context]:
        """Patch embedding, prefix tokens, positions and pre-norm: ``[B, N, D]`` and the context
        every attention layer receives (rotary tables)."""
        patches = self.hook_patch_embed(self.spec.patchify(images))
        tokens, context = self.spec.assemble(patches)
        return self.hook_embed(tokens), context

    def pool_tokens(self, residual: Tensor) -> Tensor:
        """Final norm and pooling of the final residual stream ``[B, N, D]`` -> ``[B, D_out]``."""
        readout = self.spec.readout
        if not readout.final_norm_after_pool:
            residual = self.ln_final(residual)
        if readout.pool == "token":
            pooled = residual[:, readout.pool_rows]
        elif readout.pool == "mean":
            pooled = residual[:, readout.pool_rows].mean(dim=1)
        else:
            pooled = self.pool(residual[:, readout.pool_rows])
        return self.ln_final(pooled) if readout.final_norm_after_pool else pooled

    def forward(self, images: Tensor) -> Tensor:
        """Image embeddings ``[B, E]``, equal to the backend's own forward."""
        with self.lock:
            x, context = self.embed(images)
            for block in self.blocks:
                x = block(x, context)
            pooled = self.hook_pooled(self.pool_tokens(x))
            return self.hook_image_embed(self.spec.readout.project(pooled))
