"""``explore``: a static, offline site for a model's heads, built from a decomposition cache and
a TextSpan report."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..attr.textspan import TextSpanReport
from ..cache import DecompositionCache
from ..hooked.clip import HookedCLIP
from ..retrieval import head_similarity, nearest_neighbors
from ..text import ZeroShotClassifier
from .images import ImageRows, write_thumbnail
from .maps import PatchMaps, encode_int8, head_patch_maps, plan_maps
from .neurons import NeuronsArg, load_neuron_reports, neuron_pages
from .scores import head_scores
from .selection import TextBases, TopImages, featured_rows, top_images
from .site import THUMBS, clear_thumbnails, write_site

__all__ = ["explore"]


def explore(cache: DecompositionCache | str | Path, report: TextSpanReport | str | Path,
            out_dir: str | Path, *, clip: HookedCLIP | None = None,
            images: Sequence[str | Path] | None = None,
            classifier: ZeroShotClassifier | None = None, labels: Any = None,
            n_images: int = 4, n_neighbors: int = 6, spotlight: int = 12,
            max_patch_maps: int = 2000, thumb_size: int = 96, batch_size: int = 64,
            neurons: NeuronsArg | None = None, neuron_images: int = 6,
            max_neuron_images: int = 2000, title: str | None = None,
            show_progress: bool = True) -> Path:
    """Write the explorer: ``out_dir/index.html``, its scripts, data and thumbnails. The site
    opens by double-click (``file://``), fetches nothing and runs no model.

    Pages: the head grid (layers x heads) coloured by a chosen score; a head's TextSpan texts
    with its top and bottom images along each (patch maps on them), nearest neighbours through
    the head and the heads most like it; an image's coordinates along every head's texts and its
    patch maps per head; a search that filters heads by a word in their texts. With
    ``neurons``: a neuron list per MLP layer (filtered by the same search) and a page per neuron
    with its texts and coefficients, its variance explained and its top images.

    Args:
        cache: a :class:`~captum_clipspan.DecompositionCache` or its folder.
        report: a :class:`~captum_clipspan.TextSpanReport` or a file written by its ``save``.
        out_dir: the site's folder (created; files of an earlier build are replaced).
        clip: the model that wrote the cache. With it, thumbnails show what the model sees and
            carry patch maps (:class:`~captum_clipspan.PatchContribution`); without it they are
            centre crops without maps.
        images: one image file per cache row (default: the cache's files, for a cache of an image
            folder).
        classifier: a :class:`~captum_clipspan.ZeroShotClassifier` for the mean-ablation scores
            (default: the cache's class names, with ``clip``, when its images are labelled).
        labels: ``[N]`` class indices for ``classifier`` (default: the cache's labels).
        n_images: top and bottom images per text on a head's page.
        n_neighbors: nearest neighbours per query image on a head's page.
        spotlight: images whose pages show every head's patch maps.
        max_patch_maps: the most (image, head) pairs given patch maps (each costs a share of a
            forward pass); head pages come first, then the spotlight images.
        thumb_size: the largest thumbnail side in pixels.
        batch_size: images per forward pass for the patch maps (each image's maps of every
            head come from one pass).
        neurons: a :class:`~captum_clipspan.NeuronReport` of this model, a file written by
            its ``save``, or a list of either, at most one per MLP layer. Their top images are
            shown where the lens read this cache's image files; otherwise their pages show
            texts only and say so.
        neuron_images: top images per neuron page.
        max_neuron_images: the most images the neuron pages add to the site's thumbnails.
        title: the page title (default: the model's name and the image count).
        show_progress: status lines and progress bars on stderr.

    Returns:
        The path of ``index.html``.

    Examples::

        >>> cache = cs.cache_decomposition(clip, "photos/", "cache/")
        >>> report = cs.TextSpan(clip, bank="general").fit(cache, m=5)
        >>> cs.explore(cache, report, "explorer/", clip=clip)   # open explorer/index.html
        >>> layer9 = cs.NeuronLens(clip, layer=9, bank="general").fit("photos/")   # a report
        >>> cs.explore(cache, report, "explorer/", clip=clip, neurons=layer9)   # + neuron pages
    """
    started = time.perf_counter()
    cache = cache if isinstance(cache, DecompositionCache) else DecompositionCache.open(cache)
    report = report if isinstance(report, TextSpanReport) else TextSpanReport.load(report)
    for name, value in (("n_images", n_images), ("n_neighbors", n_neighbors),
                        ("thumb_size", thumb_size), ("batch_size", batch_size),
                        ("neuron_images", neuron_images)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    if isinstance(max_neuron_images, bool) or not isinstance(max_neuron_images, int) or (
            max_neuron_images < 0):
        raise ValueError(f"max_neuron_images must be an int >= 0, got {max_neuron_images!r}.")
    if len(cache) < 2:
        raise ValueError(f"the explorer needs a cache of at least 2 images, got {len(cache)}.")
    if clip is not None:
        cache.check_model(clip)
    reports = [] if neurons is None else load_neuron_reports(neurons, cache.meta["fingerprint"])
    rows = ImageRows(_image_files(cache, images), None if clip is None else clip.preprocess)
    if classifier is None and clip is not None and cache.classes and labels is None and (
            cache.labels >= 0).all():
        classifier = ZeroShotClassifier(clip, cache.classes)

    timings: dict[str, float] = {}
    last = [started, "setup"]

    def step(message: str, name: str) -> None:
        """Say what comes next; time what came before (the breakdown in the last line)."""
        now = time.perf_counter()
        timings[last[1]] = timings.get(last[1], 0.0) + now - last[0]
        last[:] = [now, name]
        if show_progress and message:
            print(f"clipspan explore: {message}", file=sys.stderr, flush=True)

    step(f"scoring {len(cache.layers) * cache.n_heads} heads over {len(cache)} images", "scores")
    scores = head_scores(cache, report, classifier, labels)
    bases = TextBases.from_report(report, cache)
    tops = top_images(cache, bases, n_images)
    step("nearest neighbours and head similarity", "neighbours")
    neighbours = _neighbours(cache, bases, tops, min(n_neighbors, len(cache) - 1))
    similarity = head_similarity(cache).matrix
    chosen = list(dict.fromkeys(tops.top[:, 0, 0].tolist()))[:max(spotlight, 0)]
    featured = featured_rows(tops, [row for found in neighbours for near in found.values()
                                    for row, _ in near] + chosen)
    if reports:
        step(f"pages of {sum(map(len, reports))} neurons in {len(reports)} layers", "neurons")
    pages = neuron_pages(reports, rows.files, neuron_images, max_neuron_images, featured)
    featured += pages.rows
    maps = None
    if clip is not None and max_patch_maps > 0:
        step("patch maps of the thumbnails (one decomposition pass per image)", "maps")
        # Per head: the top and bottom image of every text, then the second ones, ...
        order = torch.stack([tops.top, tops.bottom], -1).transpose(1, 2)  # [K, n, m, 2]
        plan = plan_maps([order[k, :, :bases.counts[k]].flatten().tolist()
                          for k in range(len(bases.heads))], chosen, max_patch_maps)
        maps = head_patch_maps(clip, rows, bases, plan, batch_size, show_progress)
    step(f"{len(featured)} thumbnails", "thumbnails")
    out = Path(out_dir)
    clear_thumbnails(out, keep=[f"{row}.jpg" for row in featured])
    (out / THUMBS).mkdir(parents=True, exist_ok=True)
    for row in featured:
        write_thumbnail(rows.view(row), out / THUMBS / f"{row}.jpg", thumb_size)
    step("", "data")
    data = {
        "title": title or f"{cache.meta.get('model_name') or 'model'}: heads over "
                          f"{len(cache)} images",
        "model": cache.meta.get("model_name"), "n_images": len(cache),
        "layers": list(cache.layers), "n_heads": cache.n_heads, "n_layers": cache.n_layers,
        "convention": cache.convention, "spotlight": chosen,
        "grid": list(maps.grid) if maps is not None else None,
        "max_patch_maps": max_patch_maps if clip is not None else 0,
        "scores": [score.to_json() for score in scores],
        "heads": _heads_json(cache, report, bases, tops, maps, neighbours, similarity),
        "m": bases.basis.shape[1],
        "images": _images_json(cache, rows, bases, tops, maps, featured, classifier, labels),
        "neurons": pages.layers,
    }
    index = write_site(out, data)
    step("", "")
    breakdown = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
    if show_progress:
        print(f"clipspan explore: wrote {index} in {time.perf_counter() - started:.1f} s "
              f"({breakdown}); open it in a browser", file=sys.stderr, flush=True)
    return index


def _image_files(cache: DecompositionCache, images: Sequence[str | Path] | None) -> list[Path]:
    files = list(cache.files if images is None else images)
    if not files:
        raise ValueError("this cache was not made from an image folder, so it names no image "
                         "files; pass images= (one image file per cache row).")
    if len(files) != len(cache):
        raise ValueError(f"images must name one file per cache row ({len(cache)}), got "
                         f"{len(files)}.")
    return [Path(file) for file in files]


def _neighbours(cache: DecompositionCache, bases: TextBases, tops: TopImages,
                k: int) -> list[dict[int, list[tuple[int, float]]]]:
    """Per head, for the top image of each of its texts: its ``k`` nearest neighbours through
    the head (cosine of the head's direct effects)."""
    found = []
    for index, (layer, head) in enumerate(bases.heads):
        queries = dict.fromkeys(tops.top[index, :bases.counts[index], 0].tolist())
        near = {}
        for query in queries:
            result = nearest_neighbors(cache, layer, head, query, k=k)
            near[query] = [(row, round(score, 4)) for row, score in
                           zip(result.indices.tolist(), result.scores.tolist(), strict=True)]
        found.append(near)
    return found


def _rounded(values: torch.Tensor, digits: int = 4) -> list:
    return torch.round(values.float(), decimals=digits).tolist()


def _heads_json(cache: DecompositionCache, report: TextSpanReport, bases: TextBases,
                tops: TopImages, maps: PatchMaps | None,
                neighbours: list[dict[int, list[tuple[int, float]]]],
                similarity: torch.Tensor) -> list[dict[str, Any]]:
    heads = []
    for k, (layer, head) in enumerate(bases.heads):
        result, m = report[(layer, head)], bases.counts[k]
        explained = result.variance_explained.float()
        row = similarity[bases.rows[k]]
        order = [int(i) for i in row.abs().argsort(descending=True) if i != bases.rows[k]][:5]
        heads.append({
            "key": f"{layer}.{head}", "layer": layer, "head": head, "rank": result.rank,
            "texts": list(result.texts),
            "explained": _rounded(100 * explained, 2),
            "gain": _rounded(100 * torch.diff(explained, prepend=explained.new_zeros(1)), 2),
            "top": tops.top[k, :m].tolist(), "top_scores": _rounded(tops.top_scores[k, :m]),
            "bottom": tops.bottom[k, :m].tolist(),
            "bottom_scores": _rounded(tops.bottom_scores[k, :m]),
            "coef_scale": _rounded(tops.scale[k, :m], 5),
            "map_scale": None if maps is None else _rounded(maps.scale[k, :m], 5),
            "similarity": _rounded(row.reshape(len(cache.layers), cache.n_heads), 3),
            "similar": [[f"{cache.layers[i // cache.n_heads]}.{i % cache.n_heads}",
                         round(float(row[i]), 3)] for i in order],
            "neighbours": {str(query): near for query, near in neighbours[k].items()},
        })
    return heads


def _images_json(cache: DecompositionCache, rows: ImageRows, bases: TextBases, tops: TopImages,
                 maps: PatchMaps | None, featured: list[int],
                 classifier: ZeroShotClassifier | None, labels: Any) -> dict[str, Any]:
    """Per featured image: its thumbnail, label, coordinates along every head's texts (int8 on
    each text's range, ``tops.scale``) and its patch maps per head."""
    names = (classifier.classnames if classifier is not None else cache.classes) or []
    coordinates = bases.coordinates(cache.tensor("heads", featured))
    coordinates = coordinates / tops.scale.clamp_min(1e-30)
    values = cache.tensor("labels") if labels is None else torch.as_tensor(labels)
    labels = values[featured].tolist()
    images = {}
    for i, row in enumerate(featured):
        label = labels[i]
        entry = {"thumb": f"{THUMBS}/{row}.jpg", "name": rows.files[row].name,
                 "label": names[label] if 0 <= label < len(names) else None,
                 "coefs": encode_int8(coordinates[i])}
        if maps is not None:
            entry["maps"] = {str(k): code for k in range(len(bases.heads))
                             if (code := maps.encoded(row, k)) is not None}
        images[str(row)] = entry
    return images
