"""Removing spurious cues: the paper's Waterbirds experiment (Sec. 5.1), as reusable pieces.

A zero-shot classifier that leans on a spurious cue (the background of a bird photo) fails on the
groups where the cue and the class disagree. The paper finds the heads whose TextSpan texts
describe the cue, mean-ablates their direct terms and measures worst-group accuracy before and
after, against ablating the same number of random heads (the best of several draws,
"top-random"):

* :func:`~captum_clipspan.evaluation.worst_group_accuracy` scores predictions per group;
* :class:`WaterbirdsDataset` reads the Waterbirds ``metadata.csv`` layout;
* :func:`head_concept_scores` and :func:`heads_matching` rank heads of a
  :class:`~captum_clipspan.TextSpanReport` by how well their texts cover a concept;
* :func:`ablate_heads` and :func:`random_heads_baseline` ablate heads with
  :func:`~captum_clipspan.evaluation.ablated_embeddings` (direct mode) and report both accuracies.

Examples::

    >>> cache = cs.cache_decomposition(clip, data, "cache/")
    >>> report = cs.TextSpan(clip, bank=cs.text_bank("general")).fit(cache, m=10)
    >>> heads = cs.heads_matching(report, "a photo of a place", clip=clip, k=4)
    >>> means = cs.ComponentMeans.from_cache(cache)
    >>> study = cs.ablate_heads(clip, means, heads, cache, classifier, labels, groups)
    >>> study["before"]["worst_group"], study["after"]["worst_group"]
    >>> cs.random_heads_baseline(clip, means, cache, classifier, labels, groups, k=4)["after"]
"""

from __future__ import annotations

from ..evaluation import worst_group_accuracy
from .ablation import (
           ablate_heads,
           expected_best_of,
           head_sets_accuracy,
           oracle_heads,
           random_heads_baseline,
           random_heads_expectation,
)
from .concepts import head_concept_scores, heads_matching
from .study import spurious_cue_study, spurious_table
from .waterbirds import WaterbirdsDataset

__all__ = ["WaterbirdsDataset", "ablate_heads", "expected_best_of", "head_concept_scores",
           "head_sets_accuracy", "heads_matching", "oracle_heads", "random_heads_baseline",
           "random_heads_expectation", "spurious_cue_study", "spurious_table",
           "worst_group_accuracy"]
