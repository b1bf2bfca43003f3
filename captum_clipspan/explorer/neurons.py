"""The explorer's neuron pages: each :class:`~captum_clipspan.NeuronReport`'s neurons (their
sparse texts, variance explained and top images) as page data, with the reports' image rows
tied to the cache's rows through the image files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..neurons.report import NeuronReport

__all__ = ["NeuronPages", "load_neuron_reports", "neuron_pages"]

NeuronsArg = NeuronReport | str | Path | Sequence[NeuronReport | str | Path]


def load_neuron_reports(neurons: NeuronsArg, fingerprint: str | None = None
                        ) -> list[NeuronReport]:
    """``neurons=`` of :func:`~captum_clipspan.explore` as a list of reports, one per layer.

    Args:
        neurons: a :class:`~captum_clipspan.NeuronReport`, the path of one written by its
            ``save``, or a list of either.
        fingerprint: the cache's model fingerprint; a report of another model is refused.

    Raises:
        ValueError: a file that is no saved report, a report of another model, or two reports
            of one layer.

    Examples::

        >>> reports = load_neuron_reports(["lens-1.pt", "lens-2.pt"], cache.meta["fingerprint"])
    """
    items = [neurons] if isinstance(neurons, (NeuronReport, str, Path)) else list(neurons)
    reports = []
    for item in items:
        if isinstance(item, NeuronReport):
            report = item
        elif isinstance(item, (str, Path)):
            try:
                report = NeuronReport.load(item)
            except ValueError:
                raise
            except Exception as error:  # torch.load's errors name pickling, not the file
                raise ValueError(f"{item} is not a saved NeuronReport (write one with "
                                 f"NeuronLens(...).fit(...).save(path)): {error}") from error
        else:
            raise TypeError(f"neurons must be NeuronReports or their files, got "
                            f"{type(item).__name__}.")
        if fingerprint is not None and report.fingerprint != fingerprint:
            raise ValueError(f"the neuron report of layer {report.layer} was computed with "
                             f"another model ({report.model_name!r}, fingerprint "
                             f"{report.fingerprint}) than the cache's ({fingerprint}); fit the "
                             "lens with the cache's model.")
        reports.append(report)
    layers = [report.layer for report in reports]
    if len(set(layers)) != len(layers):
        raise ValueError(f"give one neuron report per layer, got layers {layers}.")
    return sorted(reports, key=lambda report: report.layer)


@dataclass
class NeuronPages:
    """The neuron reports as page data.

    Attributes:
        layers: one JSON-ready dict per report (see :func:`neuron_pages`).
        rows: the cache rows the neuron pages show, without repeats (their thumbnails are
            needed).
    """

    layers: list[dict[str, Any]] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)


def neuron_pages(reports: Sequence[NeuronReport], files: Sequence[str | Path],
                 n_images: int = 6, max_images: int = 2000,
                 shown: Sequence[int] = ()) -> NeuronPages:
    """Each report's neurons, strongest first, with their texts and top images as cache rows.

    A report's image rows are dataset rows of the images its lens was fitted on. They are tied
    to cache rows through the image files (``report.files``, same file = same image); a report
    fitted on tensors or a Dataset names no files and shows texts only, and so does a report
    whose files are not the cache's (each layer's ``note`` says which).

    Args:
        reports: the reports (:func:`load_neuron_reports`).
        files: the image file of each cache row.
        n_images: top images per neuron at most.
        max_images: the most cache rows the neuron pages add to ``shown`` (each costs a
            thumbnail); taken in turn across neurons, strongest first (every neuron's first
            image, then every neuron's second, ...); a neuron keeps its images up to its first
            one over the limit.
        shown: rows the site shows anyway (free).

    Returns:
        :class:`NeuronPages`. Per layer: ``layer``, ``count`` (images the lens read), ``tied``
        (its rows are cache rows), ``note``, ``texts`` (the bank texts some neuron uses) and
        ``neurons``: per neuron ``neuron``, ``effect`` (``centered_norm``), ``mean_norm``,
        ``pc_variance``, ``text_variance`` (percent), ``cosine``, ``top_share`` (percent),
        ``texts`` (``[index into texts, coefficient]``, largest first) and ``top``
        (``[cache row, norm]``, largest first; ``[]`` untied).

    Examples::

        >>> pages = neuron_pages([report], cache.files, n_images=6)
        >>> pages.layers[0]["neurons"][0]["texts"][:2]   # [[3, 0.0077], [0, -0.0063]]
    """
    index = {os.path.realpath(file): row for row, file in enumerate(files)}
    pages = NeuronPages()
    wanted: list[list[tuple[int, float]]] = []  # per neuron of every layer: (cache row, norm)
    entries: list[dict[str, Any]] = []
    for report in reports:
        used: dict[str, int] = {}
        tied = [index.get(os.path.realpath(file)) for file in report.files or []]
        found = sum(row is not None for row in tied)
        if not report.files:
            note = ("This report's lens read images given as tensors or a Dataset, not an image "
                    "folder, so its images cannot be tied to this site's images: texts only.")
        elif not found:
            note = ("None of the images this report's lens read are this cache's images (no "
                    "file in common), so its top images are not shown: texts only.")
        elif found < len(tied):
            note = (f"{found} of the {len(tied)} images this report's lens read are this "
                    "cache's images; its top images outside the cache are left out.")
        else:
            note = None
        neurons = []
        for neuron in report.strongest():
            row = report.row(neuron)
            texts = [[used.setdefault(text, len(used)), _significant(value)]
                     for text, value in report.texts_of(neuron)]
            top = [(tied[image], _significant(norm)) for image, norm in zip(
                report.top_images[row].tolist(), report.top_norms[row].tolist(), strict=True)
                if 0 <= image < len(tied) and tied[image] is not None][:n_images]
            wanted.append(top)
            entry = {
                "neuron": neuron, "effect": _significant(report.centered_norm[row]),
                "mean_norm": _significant(report.mean_norm[row]),
                "pc_variance": round(100 * float(report.component_variance[row]), 2),
                "text_variance": round(100 * float(report.text_variance[row]), 2),
                "cosine": _significant(report.text_cosine[row]),
                "top_share": round(100 * float(report.top_share[row]), 2),
                "texts": texts, "top": []}
            entries.append(entry)
            neurons.append(entry)
        pages.layers.append({"layer": report.layer, "count": report.count,
                             "convention": report.convention, "tied": found > 0, "note": note,
                             "texts": list(used), "neurons": neurons})
    free, added, full = set(shown), {}, set()  # full: neurons whose next image is over budget
    for depth in range(max((len(top) for top in wanted), default=0)):
        for i, (entry, top) in enumerate(zip(entries, wanted, strict=True)):
            if depth >= len(top) or i in full:
                continue
            row = top[depth][0]
            if row not in free and row not in added:
                if len(added) >= max_images:
                    full.add(i)
                    continue
                added[row] = None
            entry["top"].append(list(top[depth]))
    pages.rows = list(added)
    return pages


def _significant(value: Any, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits (the effects' scale depends on the model)."""
    return float(f"{float(value):.{digits}g}")
