"""The spurious-cue toy: a toy CLIP trained where shape and background texture co-occur.

``scripts/train_toy_clip.py --spurious 0.95`` trains it on scenes whose shape is one of
:data:`~captum_clipspan.toy.scenes.SPURIOUS_PAIRS` and whose texture is the paired one 95% of the
time (:class:`~captum_clipspan.toy.scenes.SpuriousCue`), so that its zero-shot shape prediction
leans on the background, as a CLIP's bird prediction leans on the habitat in Waterbirds. The
groups are shape x texture: the four "majority" groups follow the pairing, the twelve
"minority" groups break it.

* :func:`balanced_groups` renders held-out scenes, the same number per group;
* :func:`group_shape_accuracy` scores an open_clip model on them (used while training);
* :func:`shape_classifier` is the zero-shot shape classifier of a :class:`HookedCLIP`;
* :func:`spurious_benchmark` runs the paper's experiment end to end on the shipped toy.

Examples::

    >>> study = spurious_benchmark(k=2)        # loads HookedCLIP.from_pretrained("toy-spurious")
    >>> study["before"]["worst_group"], study["after"]["worst_group"]
    >>> print(cs.spurious_table(study))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .scenes import (
    ATTRIBUTES,
    SPURIOUS_PAIRS,
    SpuriousCue,
    family_prompts,
    held_out,
    make_scenes,
    zero_shot_prompts,
)

__all__ = ["SHAPES", "TEXTURES", "GroupedScenes", "balanced_groups", "group_shape_accuracy",
           "reference_scenes", "shape_classifier", "spurious_benchmark", "texture_concept"]

SHAPES: tuple[str, ...] = tuple(SPURIOUS_PAIRS)
"""The shapes of the spurious toy, in label order."""

TEXTURES: tuple[str, ...] = ATTRIBUTES["texture"]
"""The background textures, in group order (group = shape index * 4 + texture index)."""

_HELD_OUT_SEED = 54321  # seeds of the held-out splits (scenes.py: off the training stream)
_REFERENCE_SEED = 4242
_ORACLE_SEED = 777


@dataclass
class GroupedScenes:
    """Held-out scenes of every shape x texture group.

    Attributes:
        images: float images in ``[0, 1]``, ``[N, 3, 64, 64]``.
        labels: shape indices into :data:`SHAPES`, ``[N]``.
        groups: ``shape * len(TEXTURES) + texture``, ``[N]``.
        group_names: ``"circle/striped"``, ... one per group index.
        majority: ``[N]`` bool, whether the scene follows the training pairing.
    """

    images: Tensor
    labels: Tensor
    groups: Tensor
    group_names: list[str]
    majority: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def balanced_groups(n_per_group: int, seed: int = _HELD_OUT_SEED,
                    split: str = "test", world: str = "simple") -> GroupedScenes:
    """``n_per_group`` scenes of each shape x texture group (other attributes random).

    Group ``g`` is rendered from scene indices ``g * n_per_group ...`` of ``seed`` with its shape
    and texture pinned, so the groups share no scene and the set is the same on every call.
    ``split`` is ``"test"`` (default) or ``"validation"`` (e.g. to choose an oracle);
    ``"train"`` is refused. ``world`` is the scenes' world (:data:`~captum_clipspan.toy.scenes.
    WORLDS`).
    """
    if isinstance(n_per_group, bool) or not isinstance(n_per_group, int) or n_per_group < 1:
        raise ValueError(f"n_per_group must be a positive int, got {n_per_group!r}.")
    held_out(split)
    images, labels, groups, names, majority = [], [], [], [], []
    for s, shape in enumerate(SHAPES):
        for t, texture in enumerate(TEXTURES):
            g = s * len(TEXTURES) + t
            scenes = make_scenes(n_per_group, seed=seed, start=g * n_per_group, split=split,
                                 world=world, shape=shape, texture=texture)
            images.append(scenes.tensors())
            labels += [s] * n_per_group
            groups += [g] * n_per_group
            majority += [SPURIOUS_PAIRS[shape] == texture] * n_per_group
            names.append(f"{shape}/{texture}")
    return GroupedScenes(torch.cat(images), torch.tensor(labels), torch.tensor(groups), names,
                         torch.tensor(majority))


@torch.no_grad()
def group_shape_accuracy(model: Any, tokenizer: Callable[[list[str]], Tensor],
                         n_per_group: int = 50, batch_size: int = 256,
                         split: str = "validation", world: str = "simple") -> dict[str, float]:
    """Zero-shot shape accuracy of an open_clip toy on :func:`balanced_groups` of ``split``
    (default ``"validation"``: training monitors it) in ``world``.

    Returns:
        ``{"shape_average", "shape_majority", "shape_minority", "shape_worst_group"}``.
    """
    from ..evaluation import worst_group_accuracy
    from ..text import ZeroShotClassifier
    from . import toy_preprocess

    data = balanced_groups(n_per_group, split=split, world=world)
    device = next(model.parameters()).device
    prompts = family_prompts("shape", SHAPES)
    flat = [p for per_shape in prompts.values() for p in per_shape]
    text = model.encode_text(tokenizer(flat).to(device), normalize=True)
    classifier = ZeroShotClassifier.from_embeddings(  # prompt ensembling, as from_prompts
        text.view(len(SHAPES), -1, text.shape[-1]).mean(1), SHAPES)
    predictions = torch.cat([
        classifier.predict(model.encode_image(
            toy_preprocess(data.images[i:i + batch_size]).to(device))).cpu()
        for i in range(0, len(data), batch_size)])
    correct = (predictions == data.labels).float()
    scores = worst_group_accuracy(predictions, data.labels, data.groups, len(data.group_names))
    return {"shape_average": float(correct.mean()),
            "shape_majority": float(correct[data.majority].mean()),
            "shape_minority": float(correct[~data.majority].mean()),
            "shape_worst_group": float(scores["worst_group"])}


def shape_classifier(clip: Any) -> Any:
    """The zero-shot shape classifier of :data:`SHAPES` (template-averaged prompts)."""
    from .probes import family_classifier

    return family_classifier(clip, "shape", SHAPES)


def reference_scenes(n: int, p: float = 0.95, seed: int = _REFERENCE_SEED,
                     split: str = "validation", world: str = "simple") -> Tensor:
    """``n`` unlabelled scenes of the training distribution (shape and texture paired with
    probability ``p``), held out from training (``split``: ``"validation"`` by default, or
    ``"test"``): the reference set of TextSpan and the means."""
    return make_scenes(n, seed=seed, split=held_out(split), spurious=SpuriousCue(p=p),
                       world=world).tensors()


def texture_concept() -> list[str]:
    """The spurious cue as texts: every zero-shot prompt of every background texture."""
    return [prompt for texture in TEXTURES for prompt in zero_shot_prompts("texture", texture)]


def spurious_benchmark(clip: Any = None, concept: Any = None, k: int = 2, draws: int = 5,
                       n_reference: int = 2000, n_per_group: int = 100, m: int = 8,
                       center: bool = True, seed: int = 0, batch_size: int = 200,
                       show_progress: bool = True, scene_seed: int = _HELD_OUT_SEED,
                       reference_seed: int = _REFERENCE_SEED, controls: bool = True,
                       best_of: tuple[int, ...] = (5, 20),
                       oracle_seed: int = _ORACLE_SEED,
                       toy: str | None = None) -> dict[str, Any]:
    """The paper's spurious-cue experiment on the spurious toy, with ground-truth groups.

    TextSpan (the ``"toy"`` bank) labels the heads on :func:`reference_scenes`, the ``k``
    heads that best span ``concept`` are mean-ablated, and zero-shot shape classification
    (:func:`shape_classifier`) is scored on :func:`balanced_groups` before, after, and with the
    best of ``draws`` random sets of ``k`` heads (:func:`~captum_clipspan.spurious_cue_study`).

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP` of a toy (default: the shipped
            ``"toy-spurious"``).
        concept: the cue (default: :func:`texture_concept`).
        k: heads to ablate (default 2 of the toy's 16: with more, the best of the random draws
            often holds a texture head too).
        draws: random draws for the baseline.
        n_reference: reference scenes.
        n_per_group: held-out scenes per shape x texture group (16 groups).
        m: TextSpan texts per head.
        center: score heads on the differences among the concept's texts.
        seed: seed of the random draws.
        batch_size: images per forward pass.
        show_progress: progress bars.
        scene_seed: seed of the scored groups (test split).
        reference_seed: seed of the reference scenes (validation split).
        controls: also score every choice of ``k`` heads
            (:func:`~captum_clipspan.spurious.random_heads_expectation`, with ``best_of``) and the
            oracle: the set with the best worst group on balanced groups of the validation split
            (``oracle_seed``, ``n_per_group`` each), scored on the test groups.
        best_of: numbers of random draws whose expected best is reported.
        oracle_seed: seed of the validation groups the oracle is chosen on.
        toy: the shipped toy whose world the scenes are drawn from, and the model loaded when
            ``clip`` is ``None`` (default: ``clip``'s own name, else ``"toy-spurious"``; e.g.
            ``"toy-clutter-spurious"``).

    Returns:
        :func:`~captum_clipspan.spurious_cue_study`'s dict, plus ``"groups"`` (the group
        names) and ``"majority"`` / ``"minority"``: mean accuracy over the 4 groups that follow
        the training pairing and the 12 that break it, before, after and for the random heads;
        with ``controls``, ``"random_expectation"`` and ``"oracle"`` (``{"heads", "after",
        "validation"}``).
    """
    from ..hooked.clip import HookedCLIP
    from ..spurious import spurious_cue_study
    from . import toy_preprocess
    from .model import TOY_MODELS, toy_world

    if toy is None:  # the clip's own world when it is a shipped toy
        name = getattr(clip, "model_name", None)
        toy = name if name in TOY_MODELS else "toy-spurious"
    world = toy_world(toy)
    if clip is None:
        clip = HookedCLIP.from_pretrained(toy)
    data = balanced_groups(n_per_group, seed=scene_seed, world=world)
    classifier = shape_classifier(clip)
    study = spurious_cue_study(
        clip, toy_preprocess(reference_scenes(n_reference, seed=reference_seed, world=world)),
        toy_preprocess(data.images), classifier,
        texture_concept() if concept is None else concept, data.labels,
        data.groups, k=k, draws=draws, seed=seed, bank="toy", m=m, center=center,
        n_groups=len(data.group_names), batch_size=batch_size, show_progress=show_progress)
    if controls:
        study.update(_controls(clip, study["means"], data, classifier, k, best_of, n_per_group,
                               oracle_seed, seed, batch_size, world))
    majority = set(data.groups[data.majority].tolist())
    for kind, chosen in (("majority", sorted(majority)),
                         ("minority", sorted(set(data.groups.tolist()) - majority))):
        study[kind] = {setting: sum(scores["per_group"][g] for g in chosen) / len(chosen)
                       for setting, scores in (("before", study["before"]),
                                               ("after", study["after"]),
                                               ("random", study["random"]["after"]))}
    study["groups"] = data.group_names
    return study


def _controls(clip: Any, means: Any, data: GroupedScenes, classifier: Any, k: int,
              best_of: tuple[int, ...], n_per_group: int, oracle_seed: int, seed: int,
              batch_size: int, world: str) -> dict[str, Any]:
    """Every choice of ``k`` heads on the test groups, and the oracle chosen on validation."""
    from ..spurious import ablate_heads, oracle_heads, random_heads_expectation
    from . import toy_preprocess

    n_groups = len(data.group_names)
    expectation = random_heads_expectation(
        clip, means, toy_preprocess(data.images), classifier, data.labels, data.groups, k,
        best_of=best_of, seed=seed, n_groups=n_groups, batch_size=batch_size)
    validation = balanced_groups(n_per_group, seed=oracle_seed, split="validation", world=world)
    chosen = random_heads_expectation(
        clip, means, toy_preprocess(validation.images), classifier, validation.labels,
        validation.groups, k, best_of=(), seed=seed, n_groups=n_groups, batch_size=batch_size)
    heads = oracle_heads(chosen)
    scored = ablate_heads(clip, means, heads, toy_preprocess(data.images), classifier,
                          data.labels, data.groups, n_groups, batch_size)
    best = chosen["after"][chosen["sets"].index(heads)]
    return {"random_expectation": expectation,
            "oracle": {"heads": heads, "after": scored["after"], "validation": best}}
