"""Mean-ablation: which components matter (the paper's Sec. 3.2, Figure 2 and Table 1).

A component is ablated by replacing its output with its mean over a reference set. ``"direct"``
mode replaces only its direct term in the decomposition, without re-running the model; ``"total"``
mode re-runs the model with the component's output replaced inside the network (hooks), which also
captures its indirect effects through later layers.

Components are named as everywhere in the package (:mod:`captum_clipspan.components`):
``"embed"``, ``"attn.{l}"``, ``"mlp.{l}"``, ``"head.{l}.{h}"``, ``"ln_post.bias"``, ``"pool_mlp"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import Tensor

from ..cache import DecompositionCache
from ..components import LN_BIAS, POOL_MLP, parse_component, parse_components
from ..decomposition import CONVENTIONS, TERM_FIELDS, compute_dtype, decompose
from ..evaluation import (  # noqa: F401 (ComponentMeans and head_accuracy: public here too)
    ComponentMeans,
    ablated_embeddings,
    correct,
    deviations_from_means,
    head_accuracy,
)
from ..hooked.clip import HookedCLIP
from ..sources import ImageSource, as_dataset, iterate_batches
from ..validation import (
    check_images,
    check_labels,
    check_shapes,
    match_classes,
    resolve_layers,
)
from .base import ResolvedTexts, TargetType, TextsType


def component_means(clip: HookedCLIP, images: ImageSource, layers: Sequence[int] | None = None,
                    convention: str = "reference", batch_size: int = 64,
                    show_progress: bool = True) -> ComponentMeans:
    """Average every component over a reference set in one pass, for both ablation modes.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        images: an image folder, a tensor ``[N, 3, H, W]``, a Dataset or a DataLoader.
        layers: layers whose heads get direct means (``None``: all).
        convention: decomposition convention of the direct means.
        batch_size: images per forward pass.
        show_progress: show a progress bar.

    Examples::

        >>> means = cs.component_means(clip, reference_loader)
        >>> drop = cs.MeanAblation(clip, means).attribute(images, texts=zs, target=labels)
    """
    from tqdm.auto import tqdm

    chosen = resolve_layers(layers, clip.visual.n_layers)
    sums: dict[str, Tensor] = {}
    count = 0

    def accumulate(key: str, value: Tensor) -> None:
        value = value.detach().double().sum(0)
        sums[key] = sums[key] + value if key in sums else value

    def residual_hook(key: str) -> Callable:
        return lambda tensor, hook: accumulate(key, tensor)

    hooks = [("hook_embed", residual_hook("residual.embed"))]
    for layer in range(clip.visual.n_layers):
        hooks += [(f"blocks.{layer}.hook_attn_out", residual_hook(f"residual.attn_out.{layer}")),
                  (f"blocks.{layer}.hook_mlp_out", residual_hook(f"residual.mlp_out.{layer}")),
                  (f"blocks.{layer}.attn.hook_z", residual_hook(f"residual.z.{layer}"))]
    with tqdm(desc="component means", unit="img", disable=not show_progress) as progress:
        for batch, _ in iterate_batches(clip, images, batch_size):
            with clip.visual.hooks(fwd_hooks=hooks):
                parts = decompose(clip, batch, granularity="head", convention=convention,
                                  layers=chosen)
            for name in TERM_FIELDS:
                if getattr(parts, name) is not None:
                    accumulate(f"direct.{name}", getattr(parts, name))
            count += batch.shape[0]
            progress.update(batch.shape[0])
    if count == 0:
        raise ValueError("the reference set is empty.")
    direct_dtype = compute_dtype(clip.dtype)
    means = {k: (v / count).to(clip.dtype if k.startswith("residual") else direct_dtype)
             for k, v in sums.items()}
    n_layers = clip.visual.n_layers
    residual = {"embed": means["residual.embed"]}
    for name in ["attn_out", "mlp_out", "z"]:
        residual[name] = torch.stack([means[f"residual.{name}.{l}"] for l in range(n_layers)])
    direct = {k.split(".", 1)[1]: v for k, v in means.items() if k.startswith("direct.")}
    return ComponentMeans(direct, chosen, convention, count, residual)


class MeanAblation(PerturbationAttribution):
    """Change of the image-text score when components are replaced by their mean.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        means: :class:`ComponentMeans` from :func:`component_means` (both modes) or
            ``ComponentMeans.from_cache(cache)`` (direct mode only).
        mode: ``"direct"`` (replace the direct term; no re-run) or ``"total"`` (re-run with the
            component's output replaced inside the network).

    Examples::

        >>> ablation = cs.MeanAblation(clip, cs.component_means(clip, loader))
        >>> drop = ablation.attribute(images, texts=zs, target=labels, components="attn")
        >>> drop.shape    # [B, L]: change of each image's own class score per MSA layer
        >>> study = ablation.study(loader, zs)    # accuracy table and accumulated-layers curve
    """

    def __init__(self, clip: HookedCLIP, means: ComponentMeans, mode: str = "direct") -> None:
        if not isinstance(clip, HookedCLIP):
            raise TypeError(f"expected a HookedCLIP, got {type(clip).__name__}.")
        if not isinstance(means, ComponentMeans):
            raise TypeError("means must be ComponentMeans (cs.component_means(clip, data) or "
                            f"ComponentMeans.from_cache(cache)), got {type(means).__name__}.")
        if mode not in ("direct", "total"):
            raise ValueError(f"mode must be 'direct' or 'total', got {mode!r}.")
        if mode == "total" and not means.residual:
            raise ValueError("total mode needs residual-space means: compute them with "
                             "cs.component_means(clip, data); means from a cache hold only "
                             "direct terms.")
        if means.convention not in CONVENTIONS:
            raise ValueError(f"unknown convention {means.convention!r} in means.")
        _check_means_fit(clip, means)
        PerturbationAttribution.__init__(self, clip)
        self.clip, self.means, self.mode = clip, means, mode

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    @log_usage()
    def attribute(self, inputs: Tensor, texts: TextsType = None, target: TargetType = None,
                  components: str | Sequence[str] | Mapping[str, Sequence[str]] = "heads",
                  ) -> Tensor:
        """Score change per component (group) when it alone is mean-ablated.

        Args:
            inputs: ``[B, 3, H, W]`` preprocessed images.
            texts: string(s), text embeddings ``[T, E]``/``[E]``, a
                :class:`~captum_clipspan.ZeroShotClassifier`, or ``None`` (then the change of
                the normalized embedding itself, ``[..., E]``).
            target: ``None`` (every text) or one index per example into the texts (an int, a
                list of ints or a ``LongTensor [B]``); the last dimension ``T`` is then dropped.
            components: ``"heads"`` (``[B, L_s, H, T]``), ``"attn"``/``"mlp"`` (``[B, L, T]``),
                ``"layers"`` (``[B, R, T]``, the rows of
                :meth:`LayerContribution.row_names <captum_clipspan.LayerContribution.row_names>`),
                a list of component names (``[B, C, T]``) or ``{group: [names]}``
                (``[B, G, T]``: each group ablated together).

        Returns:
            Ablated score minus original score (negative: the component supported the target).
        """
        vit = self.clip.visual
        groups = parse_components(components, vit.n_layers, self.means.layers, vit.n_heads,
                                  self.means.whole_terms())
        if self.mode == "total" and any(n in (LN_BIAS, POOL_MLP) for m in groups.values()
                                        for n in m):
            raise ValueError(f"{LN_BIAS!r} and {POOL_MLP!r} are not outputs inside the network: "
                             "ablate them in direct mode.")
        resolved = ResolvedTexts.resolve(self.clip, texts, target, inputs.shape[0])
        if self.mode == "direct":
            changes = self._direct_changes(inputs, resolved, groups)
        else:
            changes = self._total_changes(inputs, resolved, groups)
        changes = resolved.select(changes)
        if isinstance(components, str) and components == "heads":
            return changes.reshape(changes.shape[0], len(self.means.layers), vit.n_heads,
                                   *changes.shape[2:])
        return changes

    def _direct_changes(self, inputs: Tensor, resolved: ResolvedTexts,
                        groups: dict[str, list[str]]) -> Tensor:
        parts = decompose(self.clip, inputs, granularity="head", convention=self.means.convention,
                          layers=self.means.layers, text_embeddings=resolved.text_embeddings)
        means = self.means.in_text_columns(resolved.text_embeddings)
        return -deviations_from_means(parts, means, groups).to(parts.embed.dtype)

    def _total_changes(self, inputs: Tensor, resolved: ResolvedTexts,
                       groups: dict[str, list[str]]) -> Tensor:
        check_images(inputs, self.clip.visual.image_size)
        texts = resolved.text_embeddings
        with torch.no_grad():
            clean = self.clip(inputs, texts)
            changes = []
            for members in groups.values():
                with self.clip.visual.hooks(fwd_hooks=self.replacement_hooks(members)):
                    changes.append(self.clip(inputs, texts) - clean)
        return torch.stack(changes, dim=1)

    def replacement_hooks(self, names: Sequence[str]) -> list[tuple[str, Callable]]:
        """Forward hooks that replace the named components' outputs by their residual means."""
        residual = self.means.residual
        hooks = []
        for name in names:
            component = parse_component(name)
            if component.kind == "embed":
                hooks.append(("hook_embed", _replace_with(residual["embed"])))
            elif component.kind in ("attn", "mlp"):
                layer, key = component.layer, f"{component.kind}_out"
                hooks.append((f"blocks.{layer}.hook_{key}", _replace_with(residual[key][layer])))
            elif component.kind == "head":
                layer, head = component.layer, component.head
                hooks.append((f"blocks.{layer}.attn.hook_z",
                              _replace_with(residual["z"][layer][:, head], head=head)))
            else:
                raise ValueError(f"{name!r} is not an output inside the network.")
        return hooks

    def study(self, data: ImageSource | DecompositionCache, classifier: Any,
              labels: Any = None, batch_size: int = 64,
              show_progress: bool = True) -> AblationStudy:
        """Zero-shot accuracy with all MLPs, all MSAs, and MSA layers ``0..l`` mean-ablated.

        ``data`` must carry labels (class sub-folders, ``(image, label)`` items, or a cache with
        labels), or ``labels`` gives them (``[N]`` class indices). Labels of class sub-folders
        (and of a cache of them) are matched to ``classifier.classnames`` by name, whatever
        their order; a sub-folder that is not a class name is refused. ``"direct"`` mode reads a
        :class:`~captum_clipspan.DecompositionCache` without any forward pass (or decomposes the
        images); ``"total"`` re-runs the model for each of the ``L + 3`` settings.
        """
        from tqdm.auto import tqdm

        n_layers = self.clip.visual.n_layers
        settings = {"baseline": [], "mlps ablated": [f"mlp.{l}" for l in range(n_layers)],
                    "attn ablated": [f"attn.{l}" for l in range(n_layers)]}
        for layer in range(n_layers):
            settings[f"attn 0..{layer} ablated"] = [f"attn.{l}" for l in range(layer + 1)]
        hits = torch.zeros(len(settings), dtype=torch.long)
        total = 0
        class_embeddings = classifier.class_embeddings
        with tqdm(desc=f"{self.mode} ablation study", unit="img",
                  disable=not show_progress) as progress:
            override = None if labels is None else check_labels(
                labels, len(labels), class_embeddings.shape[0])
            if not isinstance(data, DecompositionCache):
                data = as_dataset(self.clip, data)  # a folder path: its labels are named
            mapping = match_classes(data, classifier, labels)
            for terms, batch_labels in self._study_batches(data, batch_size):
                if override is not None:
                    batch_labels = override[total:total + batch_labels.shape[0]]
                batch_labels = check_labels(batch_labels, batch_labels.shape[0],
                                            class_embeddings.shape[0], mapping)
                for index, members in enumerate(settings.values()):
                    embeddings = terms(members)
                    hits[index] += int(correct(embeddings, class_embeddings, batch_labels).sum())
                total += batch_labels.shape[0]
                progress.update(batch_labels.shape[0])
        accuracy = (hits.double() / max(total, 1)).tolist()
        values = dict(zip(settings, accuracy, strict=True))
        return AblationStudy(values["baseline"], values["mlps ablated"], values["attn ablated"],
                             accuracy[3:], total, self.mode)

    def _study_batches(self, data: Any, batch_size: int):
        """Yield ``(embedding_with(names), labels)`` per batch for the study's settings."""
        if isinstance(data, DecompositionCache):
            if self.mode == "total":
                raise ValueError("total mode re-runs the model: pass images, not a cache.")
            data.check_model(self.clip)
            for _, parts in data.chunks(["embed", "attns", "mlps", "image_embed", "labels"],
                                        batch_size):
                yield self._direct_embedding(parts), parts["labels"]
            return
        for images, labels in iterate_batches(self.clip, data, batch_size):
            if self.mode == "direct":
                parts = decompose(self.clip, images, granularity="layer",
                                  convention=self.means.convention)
                yield self._direct_embedding(parts), labels
            else:
                yield self._total_embedding(images), labels

    def _direct_embedding(self, parts: Any) -> Callable[[Sequence[str]], Tensor]:
        return lambda names: ablated_embeddings(parts, self.means, [names], layers=())[:, 0]

    def _total_embedding(self, images: Tensor) -> Callable[[Sequence[str]], Tensor]:
        def embedding(names: Sequence[str]) -> Tensor:
            with torch.no_grad(), self.clip.visual.hooks(fwd_hooks=self.replacement_hooks(names)):
                return self.clip(images)
        return embedding


def _check_means_fit(clip: HookedCLIP, means: ComponentMeans) -> None:
    """Refuse means of another model (their shapes differ from this model's)."""
    vit = clip.visual
    tokens, layers = vit.n_tokens, vit.n_layers
    check_shapes(means.residual, {"embed": (tokens, vit.d_model),
                                  "attn_out": (layers, tokens, vit.d_model),
                                  "mlp_out": (layers, tokens, vit.d_model),
                                  "z": (layers, tokens, vit.n_heads, vit.d_head)},
                 "the residual means")
    if any(not 0 <= layer < layers for layer in means.layers):
        raise ValueError(f"the means hold head layers {list(means.layers)}, but this model has "
                         f"{layers} layers; compute them with this model.")
    check_shapes(means.direct, {"embed": (clip.embed_dim,),
                                "attns": (layers, clip.embed_dim),
                                "mlps": (layers, clip.embed_dim),
                                "heads": (len(means.layers), vit.n_heads, clip.embed_dim)},
                 "the direct means")


def _replace_with(mean: Tensor, head: int | None = None) -> Callable:
    def hook(tensor: Tensor, hook: Any) -> Tensor:
        tensor = tensor.clone()
        value = mean.to(tensor)
        if head is None:
            tensor[:] = value
        else:
            tensor[:, :, head] = value
        return tensor
    return hook


@dataclass
class AblationStudy:
    """Zero-shot accuracies of a mean-ablation study (the paper's Table 1 and Figure 2).

    Attributes:
        baseline: accuracy of the unablated model.
        mlps_ablated: accuracy with every MLP layer mean-ablated.
        msa_ablated: accuracy with every MSA layer mean-ablated.
        accumulated: ``[L]``: accuracy with MSA layers ``0..l`` mean-ablated.
        count: images evaluated.
        mode: ``"direct"`` or ``"total"``.
    """

    baseline: float
    mlps_ablated: float
    msa_ablated: float
    accumulated: list[float]
    count: int
    mode: str

    def table(self) -> dict[str, float]:
        """``{"baseline": ..., "MLPs ablated": ..., "MSAs ablated": ...}`` (Table 1)."""
        return {"baseline": self.baseline, "MLPs ablated": self.mlps_ablated,
                "MSAs ablated": self.msa_ablated}

    def to_frame(self) -> Any:
        """A DataFrame: the Table 1 rows, then one row per accumulated layer."""
        import pandas as pd

        rows = [(name, value) for name, value in self.table().items()]
        rows += [(f"MSA 0..{layer} ablated", value) for layer, value in
                 enumerate(self.accumulated)]
        return pd.DataFrame(rows, columns=["setting", "accuracy"]).set_index("setting")
