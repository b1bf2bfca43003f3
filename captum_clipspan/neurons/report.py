"""The result of the neuron lens: :class:`NeuronReport`, each neuron of one MLP layer read in
words (its second-order effect's first principal component as a sparse sum of texts)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..cache.fingerprint import model_fingerprint

__all__ = ["NeuronReport"]

REPORT_VERSION = 1


@dataclass(eq=False)
class NeuronReport:
    """Each neuron of one MLP layer: the mean and main direction of its second-order effect on
    the image embedding, that direction in words, and the images where the effect is largest.

    ``n`` is the number of neurons read (``neurons``), ``k`` the top images kept per neuron, ``m``
    the texts per neuron, ``E`` the joint-space width. Rows follow ``neurons``; methods take
    neuron indices of the MLP layer (``report.describe(1234)``).

    Attributes:
        layer: the MLP layer.
        neurons: ``[n]`` the neuron indices.
        mean: ``[n, E]`` each neuron's second-order effect averaged over the images.
        mean_norm: ``[n]`` the average norm of the effect, ``E ||phi_n||``.
        centered_norm: ``[n]`` the average norm of the centered effect, ``E ||phi_n - mean||``.
        component: ``[n, E]`` the first principal component of the top images' centered effects
            (unit norm, the authors' sign rule).
        component_variance: ``[n]`` the fraction of the top images' squared centered norm along
            ``component``.
        text_indices: ``[n, m]`` the bank rows of the sparse decomposition of ``component``,
            largest coefficient magnitude first.
        text_coefficients: ``[n, m]`` their coefficients (over the preprocessed bank).
        text_variance: ``[n]`` the same fraction as ``component_variance`` along the sparse texts'
            reconstruction of the component.
        text_cosine: ``[n]`` the cosine of that reconstruction with ``component``.
        top_images: ``[n, k]`` the dataset rows of each neuron's images with the largest centered
            norm, largest first (``-1``: fewer images than ``k``).
        top_norms: ``[n, k]`` those norms.
        top_share: ``[n]`` the fraction of the whole dataset's squared centered norm held by the
            top images.
        texts: the text bank.
        count: the number of images.
        convention: the decomposition convention of the effects.
        fingerprint: the model's weight hash (:func:`~captum_clipspan.cache.model_fingerprint`).
        model_name: the model's name, if known.
        files: the image file of each dataset row for an image folder, else ``[]``.
    """

    layer: int
    neurons: Tensor
    mean: Tensor
    mean_norm: Tensor
    centered_norm: Tensor
    component: Tensor
    component_variance: Tensor
    text_indices: Tensor
    text_coefficients: Tensor
    text_variance: Tensor
    text_cosine: Tensor
    top_images: Tensor
    top_norms: Tensor
    top_share: Tensor
    texts: list[str]
    count: int
    convention: str
    fingerprint: str
    model_name: str | None = None
    files: list[str] | None = None

    def __len__(self) -> int:
        return self.neurons.shape[0]

    def row(self, neuron: int) -> int:
        """The report row of an MLP neuron index."""
        valid = isinstance(neuron, numbers.Integral) and not isinstance(neuron, bool)
        matches = torch.nonzero(self.neurons == int(neuron)) if valid else []
        if not len(matches):
            shown = self.neurons[:8].tolist()
            raise ValueError(f"neuron {neuron!r} is not in this report of layer {self.layer} "
                             f"(it holds {len(self)} neurons: {shown}{'...' * (len(self) > 8)}).")
        return int(matches[0, 0])

    def texts_of(self, neuron: int, count: int | None = None) -> list[tuple[str, float]]:
        """``[(text, coefficient)]`` of one neuron, largest magnitude first, zeros left out."""
        row = self.row(neuron)
        pairs = [(self.texts[int(index)], float(value)) for index, value in
                 zip(self.text_indices[row], self.text_coefficients[row], strict=True)
                 if value != 0]
        return pairs[:count]

    def images_of(self, neuron: int, count: int | None = None) -> Tensor:
        """``[<= k]`` the dataset rows of one neuron's top images, largest effect first."""
        rows = self.top_images[self.row(neuron)]
        return rows[rows >= 0][:count]

    def strongest(self, count: int | None = None) -> list[int]:
        """Neuron indices by decreasing ``centered_norm`` (the size of their varying effect)."""
        order = self.centered_norm.argsort(descending=True, stable=True)[:count]
        return self.neurons[order].tolist()

    def describe(self, neuron: int, max_texts: int = 10) -> str:
        """One neuron as text: its effect size, variance explained and sparse texts."""
        row = self.row(neuron)
        lines = [f"layer {self.layer}, neuron {neuron}: effect {float(self.centered_norm[row]):.4g}"
                 f" (mean norm {float(self.mean_norm[row]):.4g}), first component explains "
                 f"{float(self.component_variance[row]):.1%} of its top images, the texts "
                 f"{float(self.text_variance[row]):.1%} (cosine "
                 f"{float(self.text_cosine[row]):.2f})",
                 "  rank  coefficient  text"]
        lines += [f"  {rank:>4}  {value:>+11.4f}  {text}" for rank, (text, value) in
                  enumerate(self.texts_of(neuron, max_texts), start=1)]
        return "\n".join(lines)

    def to_frame(self, max_texts: int = 5) -> Any:
        """A DataFrame with one row per neuron, strongest first: layer, neuron, effect,
        mean_norm, component_variance, text_variance, text_cosine, top_share, texts (the first
        ``max_texts``, ``"; "``-joined, ``-`` before negative ones) and top_images (first 5)."""
        import pandas as pd

        records = []
        for neuron in self.strongest():
            row = self.row(neuron)
            texts = "; ".join(("-" if value < 0 else "") + text
                              for text, value in self.texts_of(neuron, max_texts))
            records.append({
                "layer": self.layer, "neuron": neuron,
                "effect": float(self.centered_norm[row]), "mean_norm": float(self.mean_norm[row]),
                "component_variance": float(self.component_variance[row]),
                "text_variance": float(self.text_variance[row]),
                "text_cosine": float(self.text_cosine[row]),
                "top_share": float(self.top_share[row]),
                "texts": texts, "top_images": self.images_of(neuron, 5).tolist()})
        return pd.DataFrame.from_records(records)

    def plot(self, neurons: Sequence[int] | None = None, max_texts: int = 8,
             **kwargs: Any) -> Any:
        """:func:`~captum_clipspan.visualization.plot_neuron_texts` of ``neurons`` (default: the
        8 strongest)."""
        from ..visualization.neurons import plot_neuron_texts

        return plot_neuron_texts(self, self.strongest(8) if neurons is None else neurons,
                                 max_texts=max_texts, **kwargs)

    def check_model(self, clip: Any) -> None:
        """Raise unless the report was computed with these model weights."""
        if self.fingerprint != model_fingerprint(clip):
            raise ValueError(f"this neuron report was computed with another model "
                             f"({self.model_name!r}, fingerprint {self.fingerprint}); use a "
                             "report of this model.")

    def save(self, path: str | Path) -> None:
        """Write the report to one file (``torch.save`` of tensors, lists, ints and strings)."""
        payload = {f.name: getattr(self, f.name) for f in fields(self)}
        torch.save({"version": REPORT_VERSION, "kind": "NeuronReport", **payload}, path)

    @classmethod
    def load(cls, path: str | Path) -> NeuronReport:
        """Read a report written by :meth:`save`."""
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("kind") != "NeuronReport":
            raise ValueError(f"{path} is not a saved NeuronReport.")
        if payload.get("version") != REPORT_VERSION:
            raise ValueError(f"{path} is a NeuronReport of format {payload.get('version')}; "
                             f"this version reads format {REPORT_VERSION}.")
        return cls(**{f.name: payload[f.name] for f in fields(cls)})
