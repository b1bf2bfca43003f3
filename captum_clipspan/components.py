"""The one component namespace: names of the decomposition's terms, shared by every API.

A CLIP ViT's image embedding is the sum of these direct terms (see :mod:`.decomposition`):

* ``"embed"``: the embeddings (patch, class token, position);
* ``"attn.{l}"``: attention layer ``l`` (all its heads and its output bias);
* ``"mlp.{l}"``: MLP layer ``l``;
* ``"head.{l}.{h}"``: head ``h`` of attention layer ``l``;
* ``"ln_post.bias"``: the final norm's bias (a term of its own in the ``"centered"``
  convention);
* ``"pool_mlp"``: an attention pool's own MLP (SigLIP, PE-Core).

:meth:`LayerContribution.row_names <captum_clipspan.LayerContribution.row_names>` lists the
whole-layer names in row order, :class:`~captum_clipspan.MeanAblation` ablates any of them,
:meth:`DecompositionCache.term <captum_clipspan.DecompositionCache.term>` reads one, and the
ablation tables use them, so a name from one API is accepted by the next. The attention layers
were called ``"msa.{l}"`` before; that spelling is still read, with a ``FutureWarning``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

__all__ = ["Component", "direct_term", "head_names", "layer_names", "parse_component",
           "parse_components"]

EMBED = "embed"
LN_BIAS = "ln_post.bias"
POOL_MLP = "pool_mlp"

FIELDS = {"embed": "embed", "attn": "attns", "mlp": "mlps", "head": "heads",
          LN_BIAS: "ln_bias", POOL_MLP: "pool_mlp"}
"""Component kind -> the field of a :class:`~captum_clipspan.Decomposition` (and of a cache and
of :class:`~captum_clipspan.ComponentMeans`' ``direct``) that holds its terms."""

_PATTERN = re.compile(
    r"^(?:(embed|ln_post\.bias|pool_mlp)|(attn|mlp)\.(\d+)|head\.(\d+)\.(\d+))$")


@dataclass(frozen=True)
class Component:
    """A parsed component name: ``kind`` (a key of :data:`FIELDS`), its layer and head."""

    kind: str
    layer: int | None = None
    head: int | None = None

    @property
    def name(self) -> str:
        if self.kind == "head":
            return f"head.{self.layer}.{self.head}"
        return self.kind if self.layer is None else f"{self.kind}.{self.layer}"


def parse_component(name: str) -> Component:
    """``"attn.3"`` -> ``Component("attn", 3)``; raises ``ValueError`` for other strings."""
    match = _PATTERN.match(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(f"unknown component {name!r}: use 'embed', 'attn.L', 'mlp.L', "
                         f"'head.L.H', 'ln_post.bias' or 'pool_mlp'.")
    single, kind, layer, head_layer, head = match.groups()
    if single is not None:
        return Component(single)
    if kind is not None:
        return Component(kind, int(layer))
    return Component("head", int(head_layer), int(head))


def layer_names(n_layers: int, centered: bool = False, pool_mlp: bool = False) -> list[str]:
    """The whole-layer terms in residual order: ``embed, attn.0, mlp.0, ...``, then
    ``ln_post.bias`` (``centered``) and ``pool_mlp`` (towers with a pool MLP)."""
    names = [EMBED] + [f"{kind}.{layer}" for layer in range(n_layers) for kind in ("attn", "mlp")]
    return names + ([LN_BIAS] if centered else []) + ([POOL_MLP] if pool_mlp else [])


def head_names(head_layers: Sequence[int], n_heads: int) -> list[str]:
    """``head.{l}.{h}`` for every head of ``head_layers``."""
    return [f"head.{layer}.{head}" for layer in head_layers for head in range(n_heads)]


def parse_components(spec: str | Sequence[str] | Mapping[str, Sequence[str]], n_layers: int,
                     head_layers: Sequence[int], n_heads: int,
                     available: Sequence[str] = (EMBED,)) -> dict[str, list[str]]:
    """Groups of component names from a preset, a list of names or ``{group: [names]}``.

    Presets: ``"heads"`` (every head of ``head_layers``), ``"attn"``, ``"mlp"``, ``"layers"``
    (:func:`layer_names`: ``embed``, the attention and MLP layers in residual order, then the
    ``available`` extras).

    Args:
        spec: a preset, a name, a list of names (one group each) or ``{group: [names]}``.
        n_layers: the model's layers.
        head_layers: the layers whose heads have terms.
        n_heads: heads per layer.
        available: the optional whole terms there are (``"ln_post.bias"``, ``"pool_mlp"``)
            besides ``"embed"``.

    Returns:
        ``{group: [canonical names]}``.
    """
    presets = {"heads": head_names(head_layers, n_heads),
               "attn": [f"attn.{layer}" for layer in range(n_layers)],
               "mlp": [f"mlp.{layer}" for layer in range(n_layers)],
               "layers": layer_names(n_layers, LN_BIAS in available, POOL_MLP in available)}
    if isinstance(spec, str):
        if spec in presets:
            return {name: [name] for name in presets[spec]}
        spec = [spec]
    groups = dict(spec) if isinstance(spec, Mapping) else {name: [name] for name in spec}
    if not groups:
        raise ValueError("no components given.")
    checked = {}
    for group, members in groups.items():
        if isinstance(members, str):
            raise TypeError(f"group {group!r} must be a list of names, got the string "
                            f"{members!r}.")
        checked[group] = [_check(name, n_layers, head_layers, n_heads, available, presets)
                          for name in members]
    return checked


def _check(name: str, n_layers: int, head_layers: Sequence[int], n_heads: int,
           available: Sequence[str], presets: Mapping[str, Any]) -> str:
    hint = (f"use 'embed', 'attn.L', 'mlp.L' (L < {n_layers}), 'head.L.H' (L in "
            f"{list(head_layers)}, H < {n_heads}), {[n for n in available if n != EMBED]} or a "
            f"preset {sorted(presets)}")
    try:
        component = parse_component(name)
    except ValueError:
        raise ValueError(f"unknown component {name!r}: {hint}.") from None
    if component.kind in ("attn", "mlp") and component.layer >= n_layers or (
            component.kind == "head" and (component.layer not in head_layers
                                          or component.head >= n_heads)) or (
            component.layer is None and component.kind not in (EMBED, *available)):
        raise ValueError(f"unknown component {name!r}: {hint}.")
    return component.name


def direct_term(parts: Any, name: str, head_layers: Sequence[int]) -> Tensor:
    """One component's direct term ``[..., X]`` from a decomposition, a cache's tensors or a
    means dict (fields named as in :data:`FIELDS`)."""
    get = parts.get if isinstance(parts, Mapping) else lambda key: getattr(parts, key)
    component = parse_component(name)
    values = get(FIELDS[component.kind])
    if values is None:
        raise ValueError(f"there is no {name!r} term here (its field "
                         f"{FIELDS[component.kind]!r} is empty).")
    if component.kind == "head":
        return values[..., list(head_layers).index(component.layer), component.head, :]
    if component.layer is not None:
        return values[..., component.layer, :]
    return values
