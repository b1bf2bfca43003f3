"""TextSpan over a whole model: label every head with the texts that span its outputs (Sec. 4).

The math of one head is :func:`~captum_clipspan.attr.textspan_core.textspan`; this module runs it
for every cached head, collects the results in a :class:`TextSpanReport`, and evaluates them the
way the paper does: zero-shot accuracy when the chosen layers' heads are replaced by their
projections on the TextSpan basis and everything else is mean-ablated (Table 2/3).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..cache import DecompositionCache, cache_decomposition
from ..components import parse_component
from ..evaluation import ComponentMeans, ablated_embeddings, correct, mean_image_embedding
from ..hooked.clip import HookedCLIP, check_texts
from ..sources import ImageSource
from ..text import ZeroShotClassifier, text_bank
from ..text_cache import encode_texts_cached
from ..validation import check_labels, check_text_embeddings, resolve_head, resolve_layers
from .textspan_core import TextSpanResult, textspan


def _head_matrix(cache: DecompositionCache, layer: int, head: int,
                 rows: slice = slice(None)) -> Tensor:
    return cache.term(f"head.{layer}.{head}", rows)


class TextSpanReport(Mapping):
    """TextSpan results of many heads: a mapping ``(layer, head) -> TextSpanResult``, in
    ``(layer, head)`` order (``report[(11, 3)]``, ``for key in report``, ``report.items()``;
    ``report.results`` is the plain dict).

    Results hold no per-image reconstruction (it would be ``[K, E]`` per head); recompute it with
    :meth:`reconstruct` from the cache.
    """

    def __init__(self, results: dict[tuple[int, int], TextSpanResult]) -> None:
        self.results = dict(sorted(results.items()))

    def __getitem__(self, key: tuple[int, int]) -> TextSpanResult:
        if key not in self.results:
            raise KeyError(f"no TextSpan result for (layer, head) = {key}; "
                           f"available: {list(self.results)[:8]}...")
        return self.results[key]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def describe(self, layer: int, head: int, max_texts: int | None = None) -> str:
        """The texts chosen for one head, with cumulative variance explained, as a table."""
        result = self[(layer, head)]
        rows = list(zip(result.texts, result.variance_explained.tolist(), strict=True))[:max_texts]
        lines = [f"layer {layer}, head {head} (rank {result.rank})",
                 "  step  var. explained  text"]
        lines += [f"  {i:>4}  {v:>14.3f}  {t}" for i, (t, v) in enumerate(rows, start=1)]
        return "\n".join(lines)

    def to_frame(self) -> Any:
        """A DataFrame over all heads: layer, head, step, text, index, score, variance_explained."""
        import pandas as pd

        frames = []
        for (layer, head), result in self.results.items():
            frame = result.to_frame()
            frame.insert(0, "head", head)
            frame.insert(0, "layer", layer)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def plot(self, **kwargs: Any) -> Any:
        """:func:`~captum_clipspan.visualization.plot_textspan` of every head."""
        from ..visualization import plot_textspan

        return plot_textspan(self.results, **kwargs)

    def save(self, path: str | Path) -> None:
        """Write all results to one file (``torch.save`` of plain tensors, lists and ints)."""
        payload = {f"{layer}.{head}": {k: v for k, v in vars(result).items()}
                   for (layer, head), result in self.results.items()}
        torch.save(payload, path)

    @classmethod
    def load(cls, path: str | Path) -> TextSpanReport:
        """Read a report written by :meth:`save`."""
        payload = torch.load(path, map_location="cpu", weights_only=True)
        results = {}
        for key, values in payload.items():
            layer, head = (int(part) for part in key.split("."))
            results[(layer, head)] = TextSpanResult(**values)
        return cls(results)

    def reconstruct(self, head_outputs: Tensor, layer: int, head: int,
                    m: int | None = None) -> Tensor:
        """A head's outputs ``[K, E]`` projected on its first ``m`` basis texts, plus the mean."""
        mean = self[(layer, head)].mean.to(head_outputs)
        return mean + self._project(f"head.{layer}.{head}", head_outputs - mean, m)

    def accuracy(self, cache: DecompositionCache, classifier: ZeroShotClassifier,
                 m_values: Sequence[int] | None = None, chunk: int = 2048,
                 labels: Any = None) -> dict[str, float]:
        """Zero-shot accuracy with the report's heads replaced by their TextSpan projections.

        Every other component is mean-ablated: image ``i`` gets
        ``mean(embedding) + sum_heads proj_m(c_i - mean_head)``. Also reports the heads kept
        whole (``"heads, no projection"``) and the whole model (``"baseline"``).

        Args:
            cache: a :class:`~captum_clipspan.DecompositionCache` holding the report's heads.
            classifier: a :class:`~captum_clipspan.ZeroShotClassifier`.
            m_values: basis sizes to score (default: 1 .. the fewest texts of any head).
            chunk: images processed at once.
            labels: ``[N]`` class indices (default: the cache's labels).

        Returns:
            ``{"baseline": ..., "heads, no projection": ..., "m=1": ..., ...}``.
        """
        m_max = min(len(r.texts) for r in self.results.values())
        m_values = list(m_values) if m_values is not None else list(range(1, m_max + 1))
        if any(not 1 <= m <= m_max for m in m_values):
            raise ValueError(f"m values must be in 1..{m_max} (the fewest texts of any head).")
        labels = check_labels(cache.tensor("labels") if labels is None else labels, len(cache),
                              classifier.class_embeddings.shape[0])
        means = self.head_means(cache.layers, cache.n_heads)
        mean_embedding = mean_image_embedding(cache, chunk)
        class_embeddings = classifier.class_embeddings.float().cpu()
        kept = [f"head.{layer}.{head}" for layer, head in self.results]
        names = ["baseline", "heads, no projection"] + [f"m={m}" for m in m_values]
        hits = torch.zeros(len(names))
        for rows, block in cache.chunks(["image_embed", "heads"], chunk):
            settings = [block["image_embed"].float()[:, None],
                        ablated_embeddings(block, means, [kept], keep=True,
                                           mean_embedding=mean_embedding)]
            for m in m_values:
                settings.append(ablated_embeddings(
                    block, means, [kept], keep=True, mean_embedding=mean_embedding,
                    project=lambda name, deviation, m=m: self._project(name, deviation, m)))
            hits += correct(torch.cat(settings, dim=1), class_embeddings, labels[rows]).sum(0)
        return dict(zip(names, (hits / len(cache)).tolist(), strict=True))

    def head_means(self, layers: Sequence[int], n_heads: int) -> ComponentMeans:
        """The report's head means (what TextSpan centred on) as :class:`ComponentMeans` over
        ``layers`` x ``n_heads`` (heads not in the report are zero)."""
        first = next(iter(self.results.values())).mean
        heads = first.new_zeros(len(layers), n_heads, first.shape[-1]).float()
        for (layer, head), result in self.results.items():
            heads[list(layers).index(layer), head] = result.mean.float()
        return ComponentMeans({"heads": heads}, tuple(layers), "reference", 0)

    def _project(self, name: str, deviation: Tensor, m: int) -> Tensor:
        """A head's deviation from its mean projected on its first ``m`` basis texts."""
        component = parse_component(name)
        basis = self[(component.layer, component.head)].basis[:m].to(deviation)
        return (deviation @ basis.T) @ basis


class TextSpan:
    """TextSpan (the paper's Algorithm 1) for every head of the chosen layers.

    TextSpan reads a dataset and returns a report, so it is not a Captum ``Attribution``: build
    it with a text bank, then :meth:`fit` it to a cache or to images.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        bank: the text bank: a bank name (``"general"``, ``"words"``, ``"toy"``), the path of a
            text file with one description per line, or a list of descriptions.
        text_embeddings: optional precomputed ``[M, E]`` embeddings of the bank. Otherwise the
            bank is encoded once, with a progress bar, and kept in the same on-disk cache as the
            ``clipspan`` command's (:func:`~captum_clipspan.text_cache.encode_texts_cached`), so
            a second run with this model and bank reads it in a fraction of a second.
        cache_texts: read and write that cache (``False``: encode every time, write nothing).

    Examples::

        >>> span = cs.TextSpan(clip, bank="general")
        >>> report = span.fit(loader, layers=[-4, -3, -2, -1], m=10, cache_path="cache/")
        >>> print(report.describe(layer=11, head=3))
        >>> report[(11, 3)].texts[:3]
        >>> report.to_frame().to_csv("heads.csv")
    """

    def __init__(self, clip: HookedCLIP, bank: str | Path | Sequence[str] = "general",
                 text_embeddings: Tensor | None = None, cache_texts: bool = True) -> None:
        if not isinstance(clip, HookedCLIP):
            raise TypeError(f"expected a HookedCLIP, got {type(clip).__name__}.")
        self.clip = clip
        self.texts = text_bank(bank) if isinstance(bank, (str, Path)) else check_texts(bank)
        if text_embeddings is not None:
            text_embeddings = check_text_embeddings(text_embeddings, clip.embed_dim)
            if text_embeddings.shape[0] != len(self.texts):
                raise ValueError(f"got {text_embeddings.shape[0]} text embeddings for "
                                 f"{len(self.texts)} texts.")
        self._text_embeddings = text_embeddings
        self.cache_texts = cache_texts

    @property
    def text_embeddings(self) -> Tensor:
        """``[M, E]`` unit-norm embeddings of the bank (encoded on first use)."""
        return self.encode_bank()

    def encode_bank(self, show_progress: bool = True) -> Tensor:
        """``[M, E]`` unit-norm embeddings of the bank: given, read from the text-embedding
        cache, or encoded (with a progress bar when ``show_progress``) and cached."""
        if self._text_embeddings is None:
            encoded = encode_texts_cached(self.clip, self.texts, show_progress=show_progress,
                                          use_cache=self.cache_texts)
            self._text_embeddings = encoded.float().to(self.clip.device)
        return self._text_embeddings

    def fit(self, data: DecompositionCache | ImageSource, layers: Sequence[int] | None = None,
            heads: Sequence[int] | None = None, m: int = 10, rank: int | None = 80,
            normalize_scoring: bool = False, centered_span: bool = False,
            cache_path: str | Path | None = None, batch_size: int = 64,
            show_progress: bool = True) -> TextSpanReport:
        """Run TextSpan on every chosen head.

        Args:
            data: a :class:`~captum_clipspan.DecompositionCache` of this model, or images (a
                folder, tensor, Dataset or DataLoader) to cache first.
            layers: layers to explain (``None``: every cached layer).
            heads: head indices to explain in each layer (``None``: all).
            m: texts per head.
            rank: restrict the bank to the span of the top-``rank`` right singular vectors of
                each head's outputs (default 80, the authors'; ``None``: the numerical rank).
            normalize_scoring: score by variance along unit text directions (``True``) or
                along the projected, unnormalized vectors as the authors' code does (``False``,
                the default).
            centered_span: take the singular vectors of the centered outputs (``True``) or of
                the outputs before centering, as the authors' code does (``False``, the
                default). See :func:`~captum_clipspan.attr.textspan_core.textspan`.
            cache_path: where to cache images (default: a temporary folder, removed after).
            batch_size: images per forward pass when caching.
            show_progress: progress bars (caching the images, encoding the bank, the heads).

        Returns:
            A :class:`TextSpanReport`, a mapping ``(layer, head) -> TextSpanResult``.
        """
        from tqdm.auto import tqdm

        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= len(self.texts):
            raise ValueError(f"m must be an int in 1..{len(self.texts)} (the bank size), "
                             f"got {m!r}.")
        with tempfile.TemporaryDirectory() as scratch:
            bank = self.encode_bank(show_progress)  # its own bar, not a stalled head bar
            cache = data if isinstance(data, DecompositionCache) else cache_decomposition(
                self.clip, data, cache_path or Path(scratch) / "cache", layers=layers,
                batch_size=batch_size, show_progress=show_progress)
            cache.check_model(self.clip)
            chosen = cache.layers if layers is None else resolve_layers(
                layers, self.clip.visual.n_layers)
            missing = [layer for layer in chosen if layer not in cache.layers]
            if missing:
                raise ValueError(f"layers {missing} are not in the cache (cached: "
                                 f"{list(cache.layers)}).")
            head_ids = range(cache.n_heads) if heads is None else [
                resolve_head(head, cache.n_heads) for head in heads]
            keys = [(layer, head) for layer in chosen for head in head_ids]
            results = {}
            for layer, head in tqdm(keys, desc="TextSpan", unit="head",
                                    disable=not show_progress):
                result = textspan(_head_matrix(cache, layer, head), bank,
                                  self.texts, m, rank=rank, normalize_scoring=normalize_scoring,
                                  centered_span=centered_span)
                result.reconstruction = None  # [K, E] per head: recompute with reconstruct()
                results[(layer, head)] = result
        return TextSpanReport(results)


def random_bank(size: int, width: int, seed: int = 0) -> Tensor:
    """``[size, width]`` random unit vectors: the baseline bank of the paper's evaluation."""
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(size, width, generator=generator), dim=-1)
