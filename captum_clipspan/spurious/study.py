"""The whole experiment: label heads, ablate the cue's heads, compare with random heads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from ..cache import DecompositionCache
from ..evaluation import ComponentMeans
from ..hooked.clip import HookedCLIP
from ..sources import ImageSource
from ..text import ZeroShotClassifier
from .ablation import ablate_heads, random_heads_baseline
from .concepts import Head, head_concept_scores, top_heads

# The whole experiment -------------------------------------------------------------------------

def spurious_cue_study(clip: HookedCLIP, reference: DecompositionCache | ImageSource,
                       data: DecompositionCache | ImageSource,
                       classifier: ZeroShotClassifier, concept: Any, labels: Any, groups: Any,
                       *, k: int = 4, draws: int = 5, seed: int = 0,
                       bank: Any = "general", text_embeddings: Tensor | None = None,
                       m: int = 10, center: bool = False, n_groups: int | None = None,
                       batch_size: int = 64, show_progress: bool = True) -> dict[str, Any]:
    """The paper's experiment end to end: label heads, ablate the cue's heads, compare.

    TextSpan labels every head on ``reference`` images, the ``k`` heads whose texts best
    cover ``concept`` (:func:`heads_matching`) are mean-ablated (means over ``reference``), and
    ``data`` is scored before, after, and with the best of ``draws`` random choices of ``k``
    heads (:func:`random_heads_baseline`).

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        reference: the images TextSpan and the means are computed on (a cache of this model, or
            images: a folder, a tensor ``[N, 3, H, W]`` of model inputs, a Dataset or a
            DataLoader), e.g. the training distribution; they need no labels.
        data: the labelled evaluation images (a cache or images).
        classifier: a :class:`~captum_clipspan.ZeroShotClassifier` of the classes.
        concept: the spurious cue, as for :func:`heads_matching` (a string, strings or text
            embeddings).
        labels: ``[N]`` class indices of ``data``, or ``None`` for the data's labels.
        groups: ``[N]`` group indices of ``data``.
        k: heads to ablate.
        draws: random draws of ``k`` heads for the baseline.
        seed: seed of the random draws.
        bank: TextSpan's text bank (a name, a path or a list of texts).
        text_embeddings: optional ``[M, E]`` embeddings of ``bank``.
        m: TextSpan texts per head.
        center: score the differences among the concept's texts (:func:`head_concept_scores`).
        n_groups: number of groups (see :func:`worst_group_accuracy`).
        batch_size: images per forward pass.
        show_progress: progress bars.

    Returns:
        ``{"heads", "concept_scores", "before", "after", "random", "report", "means"}``: the
        ablated heads (best first), every head's score, the :func:`worst_group_accuracy` dicts
        of the unmodified and the ablated model, the random baseline
        (:func:`random_heads_baseline`'s dict), the :class:`~captum_clipspan.TextSpanReport` and
        the :class:`~captum_clipspan.ComponentMeans` of ``reference`` (for further controls).

    Examples::

        >>> study = cs.spurious_cue_study(clip, reference_images, test, classifier,
        ...                               ["water", "forest", "beach"], None, test.groups,
        ...                               center=True)
        >>> print(cs.spurious_table(study))
    """
    import tempfile

    from ..attr.textspan import TextSpan
    from ..cache import cache_decomposition

    with tempfile.TemporaryDirectory() as scratch:
        cache = reference if isinstance(reference, DecompositionCache) else cache_decomposition(
            clip, reference, Path(scratch) / "reference", batch_size=batch_size,
            show_progress=show_progress)
        report = TextSpan(clip, bank=bank, text_embeddings=text_embeddings).fit(
            cache, m=m, show_progress=show_progress)
        means = ComponentMeans.from_cache(cache)
    scores = head_concept_scores(report, concept, clip, center=center)  # encodes concept once
    heads = top_heads(scores, k)
    ablated = ablate_heads(clip, means, heads, data, classifier, labels, groups, n_groups,
                           batch_size)
    random = random_heads_baseline(clip, means, data, classifier, labels, groups, k=k,
                                   draws=draws, seed=seed, n_groups=n_groups,
                                   batch_size=batch_size)
    return {"heads": heads, "concept_scores": scores, "before": ablated["before"],
            "after": ablated["after"], "random": random, "report": report, "means": means}


def spurious_table(study: dict[str, Any]) -> str:
    """A Markdown table of a :func:`spurious_cue_study`: accuracy before, after ablating the
    concept's heads, and after ablating the best random heads; when the study has them, the
    expectation over random head sets (``"random_expectation"``, from
    :func:`random_heads_expectation`) and the oracle (``"oracle"``: ``{"heads", "after"}``)."""
    def heads(pairs: Sequence[Head]) -> str:
        return ", ".join(f"{layer}.{head}" for layer, head in pairs)

    random = study["random"]
    rows = [("unmodified", "", study["before"]),
            ("concept heads ablated", heads(study["heads"]), study["after"]),
            (f"random heads ablated (best of {len(random['draws'])})", heads(random["heads"]),
             random["after"])]
    expectation = study.get("random_expectation")
    if expectation is not None:
        sets = (f"all {len(expectation['sets'])}" if expectation["exhaustive"]
                else f"{len(expectation['sets'])} sampled")
        rows.append((f"random heads ablated (mean over {sets} sets)", "", expectation["mean"]))
        rows += [(f"random heads ablated (expected best of {d})", "", scores)
                 for d, scores in expectation["best_of"].items()]
    if study.get("oracle") is not None:
        rows.append(("oracle heads (chosen on validation)", heads(study["oracle"]["heads"]),
                     study["oracle"]["after"]))
    lines = ["| model | heads ablated | average accuracy | worst-group accuracy |",
             "|---|---|---:|---:|"]
    lines += [f"| {name} | {pairs or '-'} | {scores['average']:.3f} | "
              f"{scores['worst_group']:.3f} |" for name, pairs, scores in rows]
    return "\n".join(lines)
