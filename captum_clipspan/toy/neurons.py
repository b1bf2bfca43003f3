"""The neuron lens on the shipped toy, scored against the scenes' known attributes.

For each MLP layer: how large the neurons' second-order effects are next to their first-order
(direct) effects, how much of each neuron's top images the first principal component explains,
and whether the sparse texts of the neurons with the largest effects name attributes that their
top images really have (every toy bank text names one ``family = value``).

Examples::

    >>> from captum_clipspan.toy.neurons import neuron_table, markdown_table
    >>> print(markdown_table(neuron_table(layers=(0, 1, 2))))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..decomposition.neuron_maps import first_order
from ..hooked.clip import HookedCLIP
from ..neurons import NeuronLens, NeuronReport
from .scenes import ATTRIBUTES, Scenes, make_scenes, zero_shot_prompts

__all__ = ["COLUMNS", "attribute_hits", "markdown_table", "neuron_table", "text_attributes"]

COLUMNS = {
    "layer": "layer",
    "second_norm": "2nd-order norm",
    "first_norm": "1st-order norm",
    "ratio": "2nd / 1st",
    "component_variance": "PC var. (all)",
    "top_component_variance": "PC var. (top)",
    "top_text_variance": "text var. (top)",
    "hit_rate": "text names the planted attr. (top)",
    "purity": "top-image purity (top)",
}
"""The table's columns and their headers."""


def text_attributes() -> dict[str, tuple[str, str]]:
    """Each toy bank text -> the ``(family, value)`` it names."""
    return {prompt: (family, value) for family, values in ATTRIBUTES.items()
            for value in values for prompt in zero_shot_prompts(family, value)}


def _purity(has: np.ndarray, rows: np.ndarray) -> float:
    """How far the top images' share of a value is from its base rate toward all of them."""
    base = has.mean()
    return float((has[rows].mean() - base) / max(1.0 - base, 1e-12))


def attribute_hits(report: NeuronReport, scenes: Scenes,
                   neurons: Sequence[int]) -> tuple[float, float]:
    """Whether each neuron's sparse texts name the attribute that sets its top images apart.

    A neuron's top images set apart the family whose most common value among them is furthest
    above its base rate (``(share - base) / (1 - base)``, so that families with few and many values
    compare). The neuron's texts name it when its first text (largest coefficient magnitude)
    names a value of that family. The bank is centered before the decomposition, so a family's
    value is often named by contrast (``-dotted +checkered -plain`` for striped images): the
    family, not the value, is scored.

    Returns:
        ``(hit rate, mean purity)`` over ``neurons``: the fraction of neurons whose first text
        names the family that sets their top images apart, and that family's purity.
    """
    named = text_attributes()
    hits, purities = [], []
    for neuron in neurons:
        rows = report.images_of(neuron).numpy()
        purity = {family: max(_purity(np.array([scene[family] == value
                                                for scene in scenes.attributes]), rows)
                              for value in values)
                  for family, values in ATTRIBUTES.items()}
        best = max(purity, key=purity.get)
        texts = report.texts_of(neuron, 1)
        hits.append(bool(texts) and named[texts[0][0]][0] == best)
        purities.append(purity[best])
    return float(np.mean(hits)), float(np.mean(purities))


def _first_order_norms(clip: HookedCLIP, images: torch.Tensor, layer: int,
                       batch_size: int) -> torch.Tensor:
    """``[n]`` each neuron's mean ``||first-order effect - its mean||`` over ``images``."""
    effects = torch.cat([first_order(clip, part, layer).cpu()
                         for part in images.split(batch_size)])
    return (effects - effects.mean(0)).norm(dim=-1).mean(0)


def neuron_table(clip: HookedCLIP | None = None, layers: Sequence[int] = (0, 1, 2),
                 n_images: int = 400, seed: int = 2024, top: int = 10, top_k: int = 20,
                 n_components: int = 4, batch_size: int = 100) -> list[dict[str, Any]]:
    """Fit the lens on toy scenes for each layer and score it (:data:`COLUMNS`).

    Args:
        clip: the toy (default: ``HookedCLIP.from_pretrained("toy")``).
        layers: MLP layers to read.
        n_images: test-split scenes (drawn with ``seed``; held out from training by construction).
        seed: the scenes' seed.
        top: how many of the strongest neurons the ``top`` columns average.
        top_k: top images per neuron.
        n_components: texts per neuron.
        batch_size: images per forward pass.

    Returns:
        One dict per layer: ``second_norm`` and ``first_norm`` (the mean over neurons of the
        average centered effect norm), their ``ratio``, ``component_variance`` (mean over every
        neuron), and over the ``top`` strongest neurons ``top_component_variance``,
        ``top_text_variance``, ``hit_rate`` and ``purity`` (:func:`attribute_hits`).
    """
    clip = HookedCLIP.from_pretrained("toy") if clip is None else clip
    scenes = make_scenes(n_images, seed=seed, split="test")
    images = clip.preprocess_images(list(scenes.images))
    rows = []
    for layer in layers:
        report = NeuronLens(clip, layer, bank="toy", top_k=top_k,
                            n_components=n_components).fit(images, batch_size=batch_size,
                                                            show_progress=False)
        strongest = report.strongest(top)
        rows_of = [report.row(neuron) for neuron in strongest]
        first = float(_first_order_norms(clip, images, layer, batch_size).mean())
        second = float(report.centered_norm.mean())
        hit_rate, purity = attribute_hits(report, scenes, strongest)
        rows.append({"layer": layer, "second_norm": second, "first_norm": first,
                     "ratio": second / first,
                     "component_variance": float(report.component_variance.mean()),
                     "top_component_variance": float(report.component_variance[rows_of].mean()),
                     "top_text_variance": float(report.text_variance[rows_of].mean()),
                     "hit_rate": hit_rate, "purity": purity})
    return rows


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`neuron_table` as a Markdown table."""
    lines = ["| " + " | ".join(COLUMNS.values()) + " |",
             "|" + "|".join("---:" for _ in COLUMNS) + "|"]
    for row in rows:
        cells = [str(row[key]) if key == "layer" else f"{row[key]:.3g}" for key in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
