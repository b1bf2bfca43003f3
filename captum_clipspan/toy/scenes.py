"""Synthetic scenes with ground-truth attributes and object masks.

Every scene is a small RGB image showing one to three identical objects (same shape, color and
size) stacked in one vertical third of the image, over a background that has a color and a
texture. Seven attribute families describe a scene, see :data:`ATTRIBUTES`:

* ``shape``: the object outline (circle, square, triangle, cross, ring);
* ``color``: the object color (eight saturated colors);
* ``size``: object radius, small (6/64 of the side) or large (10/64);
* ``position``: the column the objects sit in (left, center, right third);
* ``count``: the number of objects (one, two, three);
* ``texture``: the background pattern (plain, striped, dotted, checkered);
* ``background``: the background color (black, white, gray, brown), never an object color.

Rendering is vectorized numpy over coordinate grids, without anti-aliasing, so an object pixel
has exactly the object color and :attr:`Scenes.masks` marks exactly those pixels. Scene ``i`` of
seed ``s`` depends only on ``(s, i)``: the random numbers come from a counter-based hash, so
``make_scenes(10, seed=s)`` is a prefix of ``make_scenes(100, seed=s)``, and pinning one family
with ``fixed`` leaves all other draws unchanged.

Splits, held out by construction (:data:`SPLITS`). A scene's random numbers are a bijective
function of its *scene ID* ``(stream, index)``: ``splitmix64(splitmix64(stream) ^ index)`` per
scene, a bijection of 64-bit words, then one independent word per slot. So two draws of one
stream coincide exactly when their indices do. The ``"train"`` split is every stream's indices
below 2**62: ``make_scenes(n, seed=s, start=j)`` is scenes ``j ... j + n - 1`` of stream ``s``, the
scenes the shipped toys were trained on (``scripts/train_toy_clip.py`` draws
``make_scenes(64, seed=0, start=step * 64)``, stream 0, indices below 1.3 million). The
``"validation"`` and ``"test"`` splits are further indices of that same stream 0,
``[2**62, 2**62 + 2**61)`` and ``[2**62 + 2**61, 2**63)``, with ``seed`` choosing a block of 2**32
of them, so no validation or test scene can be a scene the toys saw. (A toy trained on another
stream ``s != 0`` would share a scene with them only if ``splitmix64(s) ^ i ==
splitmix64(0) ^ j`` for some of its indices ``i``, a chance of about n_train * n_eval / 2**64.)
Evaluations take ``split="validation"`` (choices: reference sets, fitted lenses, oracles) or
``split="test"`` (the scores) and refuse ``"train"`` (:func:`held_out`).

Examples::

    >>> from captum_clipspan.toy.scenes import make_scenes, caption
    >>> scenes = make_scenes(4, seed=0, shape="circle")
    >>> scenes.images.shape, scenes.masks.shape, scenes.object_masks.shape
    ((4, 64, 64, 3), (4, 64, 64), (4, 3, 64, 64))
    >>> {a["shape"] for a in scenes.attributes}
    {'circle'}
    >>> caption({"color": "red", "shape": "circle"}, families=["color", "shape"])
    'a red circle'
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .render import CLUTTER_SLOTS, paint_clutter, shape_mask, texture_mask, uniforms

__all__ = [
    "ATTRIBUTES",
    "BACKGROUND_RGB",
    "COLOR_RGB",
    "FAMILIES",
    "HELD_OUT_SPLITS",
    "PREFIXES",
    "SPLITS",
    "Scenes",
    "SPURIOUS_PAIRS",
    "SpuriousCue",
    "SyntheticScenes",
    "TEMPLATES",
    "WORLDS",
    "caption",
    "caption_vocabulary",
    "family_prompts",
    "held_out",
    "make_scenes",
    "scene_ids",
    "sample_families",
    "zero_shot_prompts",
    "write_image_folder",
]

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": ("circle", "square", "triangle", "cross", "ring"),
    "color": ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink"),
    "size": ("small", "large"),
    "position": ("left", "center", "right"),
    "count": ("one", "two", "three"),
    "texture": ("plain", "striped", "dotted", "checkered"),
    "background": ("black", "white", "gray", "brown"),
}
"""Attribute family -> its values. The value order defines :meth:`Scenes.labels` indices."""

FAMILIES: tuple[str, ...] = tuple(ATTRIBUTES)

COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (20, 190, 40),
    "blue": (30, 70, 240),
    "yellow": (250, 220, 0),
    "purple": (140, 40, 200),
    "orange": (255, 130, 0),
    "cyan": (0, 210, 220),
    "pink": (255, 110, 190),
}
"""Object color -> RGB. All saturated, so never equal to a background tone."""

# (base, pattern) tones; every tone value is unique, so each pixel identifies the background.
BACKGROUND_RGB: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "black": ((15, 15, 15), (65, 65, 65)),
    "white": ((245, 245, 245), (195, 195, 195)),
    "gray": ((130, 130, 130), (165, 165, 165)),
    "brown": ((105, 65, 35), (150, 100, 60)),
}
"""Background color -> (base RGB, texture pattern RGB)."""

SIZE_RADIUS: dict[str, float] = {"small": 6 / 64, "large": 10 / 64}
"""Object radius as a fraction of the image side."""

PREFIXES: tuple[str, ...] = ("", "a photo of ", "an image of ", "a picture of ")
"""Caption prefixes; the zero-shot templates use the first three."""

_MAX_COUNT = 3
_PLURALS = {"cross": "crosses"}
_POSITION_PHRASE = {"left": "on the left", "center": "in the center", "right": "on the right"}
# Hash slots of the per-scene random numbers (one independent uniform per slot).
_SLOT_TEXTURE_X = len(FAMILIES)
_SLOT_TEXTURE_Y = _SLOT_TEXTURE_X + 1
_SLOT_JITTER = _SLOT_TEXTURE_Y + 1
_SLOT_CUE = _SLOT_JITTER + 2 * _MAX_COUNT
_SLOT_CLUTTER = _SLOT_CUE + 2

WORLDS: tuple[str, ...] = ("simple", "clutter")
"""The scene worlds: ``"simple"`` (the objects over a textured background) and ``"clutter"``
(the same scene, same attributes and masks, plus distractors and confetti in the objects' colors,
:func:`~captum_clipspan.toy.render.paint_clutter`, so that colour alone cannot segment it)."""

SPLITS: tuple[str, ...] = ("train", "validation", "test")
"""The scene splits; see the module docstring for how they are kept apart."""

HELD_OUT_SPLITS: tuple[str, ...] = SPLITS[1:]
"""The splits an evaluation may read."""

TRAIN_STREAM = 0
"""The stream (``seed``) the shipped toys were trained on; validation and test draw from it too."""

_TRAIN_END = 1 << 62
_SPLIT_START = {"validation": 1 << 62, "test": (1 << 62) + (1 << 61)}
_BLOCK = 1 << 32  # held-out scenes per seed
_HELD_OUT_SEEDS = 1 << 29  # blocks per held-out split: 2**29 * 2**32 = 2**61 indices

SPURIOUS_PAIRS: dict[str, str] = {
    "circle": "striped", "square": "dotted", "triangle": "checkered", "cross": "plain",
}
"""Shape -> the background texture it co-occurs with in the spurious toy's training scenes."""


@dataclass(frozen=True)
class SpuriousCue:
    """A planted correlation: family ``cue`` follows family ``target`` with probability ``p``.

    A scene's ``target`` value is drawn among the keys of ``pairs`` only; with probability ``p``
    its ``cue`` is ``pairs[target]``, otherwise one of the other ``cue`` values, uniformly. The
    other families stay independent. With ``p = 0.95`` a shape and its texture co-occur in 95%
    of the scenes, as birds and their habitat do in Waterbirds.

    Examples::

        >>> s = make_scenes(1000, seed=0, spurious=SpuriousCue(p=0.95))
        >>> round(float(np.mean([SPURIOUS_PAIRS[a["shape"]] == a["texture"]
        ...                      for a in s.attributes])), 2)
        0.95
    """

    target: str = "shape"
    cue: str = "texture"
    pairs: Mapping[str, str] = field(default_factory=lambda: dict(SPURIOUS_PAIRS))
    p: float = 0.95

    def __post_init__(self) -> None:
        if self.target == self.cue:
            raise ValueError(f"target and cue must be two families, got {self.target!r} twice")
        if not self.pairs:
            raise ValueError("pairs must map at least one target value to a cue value")
        for value, cue in self.pairs.items():
            _check_value(self.target, value), _check_value(self.cue, cue)
        if not 0.0 <= float(self.p) <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {self.p!r}")

    def apply(self, labels: dict[str, np.ndarray], u_target: np.ndarray, u_coin: np.ndarray,
              u_other: np.ndarray) -> None:
        """Overwrite ``labels[target]``/``labels[cue]`` in place from three uniforms per scene."""
        keys = np.array([_check_value(self.target, v) for v in self.pairs])
        cues = np.array([_check_value(self.cue, self.pairs[v]) for v in self.pairs])
        pick = np.minimum((u_target * len(keys)).astype(np.int64), len(keys) - 1)
        labels[self.target] = keys[pick]
        k = len(ATTRIBUTES[self.cue])
        other = np.minimum((u_other * (k - 1)).astype(np.int64), k - 2)
        other = other + (other >= cues[pick])  # one of the k - 1 other values
        labels[self.cue] = np.where(u_coin < self.p, cues[pick], other)


@dataclass
class Scenes:
    """A batch of rendered scenes.

    Attributes:
        images: uint8 RGB images, shape ``[N, H, W, 3]``.
        masks: bool union of all object pixels, shape ``[N, H, W]``.
        object_masks: bool per-object masks, shape ``[N, 3, H, W]``; slot ``k`` is empty when
            the scene has ``k`` or fewer objects.
        attributes: one ``{family: value}`` dict per scene, covering every family.
        captions: one caption per scene naming every attribute.
        split: the split the scenes were drawn from (:data:`SPLITS`).
        world: the scenes' world (:data:`WORLDS`).
        clutter: bool distractor pixels ``[N, H, W]`` of a ``"clutter"`` world (confetti
            excluded), ``None`` in the simple world. Captions never name distractors.

    Examples::

        >>> s = make_scenes(2, seed=1)
        >>> len(s), s.tensors().shape, s.labels("count").shape
        (2, torch.Size([2, 3, 64, 64]), (2,))
    """

    images: np.ndarray
    masks: np.ndarray
    object_masks: np.ndarray
    attributes: list[dict[str, str]]
    captions: list[str]
    split: str = "train"
    world: str = "simple"
    clutter: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.attributes)

    def labels(self, family: str) -> np.ndarray:
        """Indices of each scene's value within ``ATTRIBUTES[family]``.

        Args:
            family: an attribute family, e.g. ``"shape"``.

        Returns:
            int64 array of shape ``[N]``.

        Raises:
            ValueError: if ``family`` is unknown.
        """
        values = ATTRIBUTES[_check_family(family)]
        lookup = {v: i for i, v in enumerate(values)}
        return np.array([lookup[a[family]] for a in self.attributes], dtype=np.int64)

    def tensors(self) -> torch.Tensor:
        """Images as a float tensor in ``[0, 1]`` of shape ``[N, 3, H, W]``."""
        return torch.from_numpy(self.images).permute(0, 3, 1, 2).float().div_(255.0)


def _check_family(family: str) -> str:
    if family not in ATTRIBUTES:
        raise ValueError(f"unknown attribute family {family!r}; valid families: {list(FAMILIES)}")
    return family


def _check_value(family: str, value: str) -> int:
    _check_family(family)
    if value not in ATTRIBUTES[family]:
        valid = list(ATTRIBUTES[family])
        raise ValueError(f"unknown value {value!r} for family {family!r}; valid values: {valid}")
    return ATTRIBUTES[family].index(value)


def held_out(split: str) -> str:
    """``split`` if an evaluation may read it (``"validation"`` or ``"test"``).

    Raises:
        ValueError: for ``"train"`` (the scenes the toys were trained on) or an unknown split.

    Examples::

        >>> held_out("test")
        'test'
    """
    if split == "train":
        raise ValueError("split='train' holds the scenes the toys were trained on; an evaluation "
                         f"reads one of {list(HELD_OUT_SPLITS)}.")
    if split not in HELD_OUT_SPLITS:
        raise ValueError(f"unknown split {split!r}; an evaluation reads one of "
                         f"{list(HELD_OUT_SPLITS)}.")
    return split


def scene_ids(n: int, seed: int = 0, start: int = 0,
              split: str = "train") -> tuple[int, np.ndarray]:
    """The scene IDs ``(stream, indices [n])`` of ``make_scenes(n, seed, start=start,
    split=split)``: scenes with equal IDs are the same scene; different IDs never share their
    random numbers.

    Raises:
        ValueError: for an unknown split, a held-out ``seed`` outside ``[0, 2**29)``, or indices
            past the split's range.

    Examples::

        >>> stream, ids = scene_ids(3, seed=1, split="test")
        >>> stream, int(ids[0]) == 2**62 + 2**61 + 2**32
        (0, True)
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {list(SPLITS)}.")
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
    if split == "train":
        if start + n > _TRAIN_END:
            raise ValueError(f"training scenes have indices below 2**62, got {start} + {n}")
        return int(seed), np.arange(start, start + n, dtype=np.int64)
    if isinstance(seed, bool) or not 0 <= int(seed) < _HELD_OUT_SEEDS:
        raise ValueError(f"a {split} seed is an int in [0, 2**29), got {seed!r}")
    if start + n > _BLOCK:
        raise ValueError(f"a {split} seed holds 2**32 scenes, got start {start} + n {n}")
    first = _SPLIT_START[split] + int(seed) * _BLOCK + start
    return TRAIN_STREAM, np.arange(first, first + n, dtype=np.int64)


def _resolve_fixed(size: int | str, fixed: Mapping[str, str]) -> tuple[int, dict[str, int]]:
    pinned = dict(fixed)
    if isinstance(size, str):
        # ``size`` is both the image side and an attribute family; a string means the family.
        pinned["size"] = size
        size = 64
    if int(size) < 16:
        raise ValueError(f"image size must be >= 16 pixels, got {size}")
    return int(size), {f: _check_value(f, v) for f, v in pinned.items()}


def make_scenes(
    n: int, seed: int = 0, size: int | str = 64, *, start: int = 0, split: str = "train",
    spurious: SpuriousCue | None = None, world: str = "simple", **fixed: str
) -> Scenes:
    """Render ``n`` random scenes.

    Args:
        n: number of scenes.
        seed: random seed. Scene ``i`` depends only on ``(seed, start + i, split)`` and
            ``fixed``; in a held-out split, an int in ``[0, 2**29)``.
        size: image side in pixels (default 64). A string pins the ``size`` attribute family
            instead (``make_scenes(4, size="small")``), keeping 64-pixel images.
        start: index of the first scene, to render disjoint chunks of one stream.
        split: ``"train"`` (default: the training stream ``seed``), ``"validation"`` or
            ``"test"`` (held out from every training scene of stream 0, see the module
            docstring); evaluations pass one of the last two.
        spurious: a :class:`SpuriousCue` planting a correlation between two families
            (applied before ``fixed``, so pinning both families of a cue renders one group).
        world: ``"simple"`` (default) or ``"clutter"`` (:data:`WORLDS`): scene ``i`` of the
            clutter world is scene ``i`` of the simple world with distractors and confetti
            painted over its background.
        **fixed: ``family=value`` pairs pinning attribute families, e.g. ``shape="circle"``.

    Returns:
        A :class:`Scenes` batch with images ``[n, size, size, 3]``.

    Raises:
        ValueError: for an unknown family or value (the message lists the valid ones).

    Examples::

        >>> s = make_scenes(8, seed=3, color="red", count="two")
        >>> sorted({a["color"] for a in s.attributes}), int(s.object_masks[0].any((1, 2)).sum())
        (['red'], 2)
    """
    side, pinned = _resolve_fixed(size, fixed)
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}; choose from {list(WORLDS)}.")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    stream, index = scene_ids(n, seed, start, split)
    u = uniforms(stream, index, _SLOT_CLUTTER + (CLUTTER_SLOTS if world == "clutter" else 0))

    labels: dict[str, np.ndarray] = {}
    for j, family in enumerate(FAMILIES):
        k = len(ATTRIBUTES[family])
        labels[family] = np.minimum((u[:, j] * k).astype(np.int64), k - 1)
    if spurious is not None:
        spurious.apply(labels, u[:, FAMILIES.index(spurious.target)], u[:, _SLOT_CUE],
                       u[:, _SLOT_CUE + 1])
    for family, value in pinned.items():
        labels[family][:] = value

    coords = np.arange(side, dtype=np.float32) + 0.5
    xs, ys = coords[None, None, :], coords[None, :, None]

    radius = np.array([SIZE_RADIUS[v] for v in ATTRIBUTES["size"]])[labels["size"]] * side
    count = labels["count"] + 1
    column = side / 3.0
    col_center = (labels["position"] + 0.5) * column
    object_masks = np.zeros((n, _MAX_COUNT, side, side), dtype=bool)
    for k in range(_MAX_COUNT):
        slot_h = side / count
        jx = np.maximum(0.0, column / 2 - radius - 0.5)
        jy = np.maximum(0.0, slot_h / 2 - radius - 1.0)
        cx = col_center + (2 * u[:, _SLOT_JITTER + 2 * k] - 1) * jx
        cy = (k + 0.5) * slot_h + (2 * u[:, _SLOT_JITTER + 2 * k + 1] - 1) * jy
        active = count > k
        for s_idx, shape in enumerate(ATTRIBUTES["shape"]):
            sel = np.nonzero(active & (labels["shape"] == s_idx))[0]
            if sel.size:
                dx = xs - cx[sel, None, None].astype(np.float32)
                dy = ys - cy[sel, None, None].astype(np.float32)
                r = radius[sel, None, None].astype(np.float32)
                object_masks[sel, k] = shape_mask(shape, dx, dy, r)
    masks = object_masks.any(axis=1)

    ix = np.arange(side, dtype=np.int64)
    pattern = np.zeros((n, side, side), dtype=bool)
    phase_x = (u[:, _SLOT_TEXTURE_X] * side).astype(np.int64)
    phase_y = (u[:, _SLOT_TEXTURE_Y] * side).astype(np.int64)
    for t_idx, texture in enumerate(ATTRIBUTES["texture"]):
        sel = np.nonzero(labels["texture"] == t_idx)[0]
        if sel.size and texture != "plain":
            x = ix[None, None, :] + phase_x[sel, None, None]
            y = ix[None, :, None] + phase_y[sel, None, None]
            pattern[sel] = texture_mask(texture, x, y, side)

    base = np.array([BACKGROUND_RGB[v][0] for v in ATTRIBUTES["background"]], dtype=np.uint8)
    patt = np.array([BACKGROUND_RGB[v][1] for v in ATTRIBUTES["background"]], dtype=np.uint8)
    obj = np.array([COLOR_RGB[v] for v in ATTRIBUTES["color"]], dtype=np.uint8)
    bg = labels["background"]
    images = np.where(pattern[..., None], patt[bg][:, None, None], base[bg][:, None, None])
    images = np.where(masks[..., None], obj[labels["color"]][:, None, None], images)
    images = np.ascontiguousarray(images, dtype=np.uint8)
    clutter = (paint_clutter(images, masks, labels["position"], obj, u[:, _SLOT_CLUTTER:])
               if world == "clutter" else None)

    attributes = [{f: ATTRIBUTES[f][int(labels[f][i])] for f in FAMILIES} for i in range(n)]
    captions = [caption(a) for a in attributes]
    return Scenes(
        images=images,
        masks=masks,
        object_masks=object_masks,
        attributes=attributes,
        captions=captions,
        split=split,
        world=world,
        clutter=clutter,
    )


def sample_families(
    rng: np.random.Generator,
    p_single: float = 0.3,
    p_each: float | Mapping[str, float] = 0.5,
    single_weights: Mapping[str, float] | None = None,
) -> list[str]:
    """Draw the families a training caption names.

    With probability ``p_single`` one family alone, so each family is seen alone; otherwise
    each family independently with probability ``p_each`` (at least one).

    Args:
        rng: numpy random generator.
        p_single: probability of naming exactly one family.
        p_each: inclusion probability, a float or a ``{family: p}`` mapping (missing: 0.5).
        single_weights: relative odds of each family being the single one (missing: 1);
            uniform by default.

    Returns:
        Families in :data:`FAMILIES` order.
    """
    weights = np.array([(single_weights or {}).get(f, 1.0) for f in FAMILIES], dtype=float)
    if rng.random() < p_single:
        return [FAMILIES[int(rng.choice(len(FAMILIES), p=weights / weights.sum()))]]
    probs = [p_each.get(f, 0.5) if isinstance(p_each, Mapping) else p_each for f in FAMILIES]
    chosen = [f for f, p in zip(FAMILIES, probs, strict=True) if rng.random() < p]
    return chosen or [FAMILIES[int(rng.choice(len(FAMILIES), p=weights / weights.sum()))]]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(
    attrs: Mapping[str, str],
    families: Iterable[str] | None = None,
    rng: np.random.Generator | None = None,
    prefix: str | None = None,
) -> str:
    """Describe a scene in words, naming the attributes of ``families`` only.

    The grammar is ``[prefix] (a|an|<count>) [size] [color] (<shape>|object)[s] [position]
    [on a [background] [texture] background]``, e.g. ``"two small blue squares on the left"``,
    ``"a photo of an object on a striped background"``.

    Args:
        attrs: ``{family: value}``; must hold every family that is named.
        families: families to name. ``None`` names a random subset (see
            :func:`sample_families`) when ``rng`` is given, and every family otherwise.
        rng: random generator for the subset and the prefix.
        prefix: text put in front, e.g. ``"a photo of "``; ``None`` draws one of
            :data:`PREFIXES` when ``rng`` is given and uses ``""`` otherwise.

    Returns:
        The lowercase caption.

    Raises:
        ValueError: for an unknown family or value.

    Examples::

        >>> caption({"count": "two", "size": "small", "color": "blue", "shape": "square",
        ...          "position": "left"})
        'two small blue squares on the left'
        >>> caption({"background": "black", "texture": "striped"}, prefix="a photo of ")
        'a photo of an object on a black striped background'
    """
    if families is None:
        families = sample_families(rng) if rng is not None else [f for f in FAMILIES if f in attrs]
    named = set(families)
    for f in named:
        if f not in attrs:
            raise ValueError(f"caption names family {f!r} but attrs has no value for it")
        _check_value(f, attrs[f])
    if prefix is None:
        prefix = PREFIXES[int(rng.integers(len(PREFIXES)))] if rng is not None else ""

    plural = "count" in named and attrs["count"] != "one"
    noun = attrs["shape"] if "shape" in named else "object"
    if plural:
        noun = _PLURALS.get(noun, noun + "s")
    words = [attrs[f] for f in ("size", "color") if f in named] + [noun]
    head = attrs["count"] if "count" in named else _article(words[0])
    parts = [head, *words]
    if "position" in named:
        parts.append(_POSITION_PHRASE[attrs["position"]])
    bg_words = [attrs[f] for f in ("background", "texture") if f in named]
    if bg_words:
        parts += ["on", _article(bg_words[0]), *bg_words, "background"]
    return prefix + " ".join(parts)


TEMPLATES: tuple[str, ...] = tuple(f"{prefix}a {{}}" for prefix in PREFIXES[:3])
"""Class-name templates in the toy's own words (``"a photo of a {}"``), for a
:class:`~captum_clipspan.ZeroShotClassifier` of a toy: the package's general templates use words
the toy tokenizer does not know."""


def zero_shot_prompts(family: str, value: str) -> list[str]:
    """Prompts naming only ``family=value``, one per template (prefixes ``""``, photo, image).

    Examples::

        >>> zero_shot_prompts("position", "left")
        ['an object on the left', 'a photo of an object on the left', 'an image of an object on the left']
    """  # noqa: E501
    _check_value(family, value)
    return [caption({family: value}, families=[family], prefix=p) for p in PREFIXES[:3]]


def family_prompts(family: str, values: Sequence[str] | None = None) -> dict[str, list[str]]:
    """``{value: zero_shot_prompts(family, value)}`` for the family's values (or ``values``):
    the prompts of a zero-shot classifier over one family."""
    return {value: zero_shot_prompts(family, value)
            for value in (ATTRIBUTES[family] if values is None else values)}


def caption_vocabulary() -> list[str]:
    """Every word the caption grammar and zero-shot prompts can produce, sorted."""
    words = {"a", "an", "on", "the", "in", "of", "background", "object", "objects"}
    for p in PREFIXES:
        words.update(p.split())
    for values in ATTRIBUTES.values():
        words.update(values)
    words.update(_PLURALS.get(s, s + "s") for s in ATTRIBUTES["shape"])
    for phrase in _POSITION_PHRASE.values():
        words.update(phrase.split())
    return sorted(words)


class SyntheticScenes(torch.utils.data.Dataset):
    """Map-style dataset of synthetic scenes, rendered lazily in cached chunks.

    Item ``i`` is scene ``i`` of :func:`make_scenes` with the same seed, whatever ``n`` is.

    Args:
        n: number of scenes.
        seed: random seed.
        size: image side in pixels.
        label: an attribute family; when given, items are ``(image, label_index)``.
        transform: callable applied to the float image tensor ``[3, H, W]`` in ``[0, 1]``.
        split: the scenes' split (:data:`SPLITS`; evaluations: ``"validation"`` or ``"test"``).
        world: the scenes' world (:data:`WORLDS`).

    Examples::

        >>> ds = SyntheticScenes(10, seed=0, label="shape", split="test")
        >>> image, y = ds[3]
        >>> image.shape, ATTRIBUTES["shape"][y] == ds.attributes(3)["shape"]
        (torch.Size([3, 64, 64]), True)
    """

    _CHUNK = 256
    _MAX_CACHED = 4

    def __init__(
        self,
        n: int,
        seed: int = 0,
        size: int = 64,
        label: str | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        split: str = "train",
        world: str = "simple",
    ) -> None:
        if label is not None:
            _check_family(label)
        if world not in WORLDS:
            raise ValueError(f"unknown world {world!r}; choose from {list(WORLDS)}.")
        self.world = world
        scene_ids(int(n), int(seed), 0, split)  # refuses a bad split or seed now, not per item
        self.split = split
        self.n, self.seed, self.size = int(n), int(seed), int(size)
        self.label, self.transform = label, transform
        self._cache: dict[int, Scenes] = {}

    def __len__(self) -> int:
        return self.n

    def _chunk(self, c: int) -> Scenes:
        if c not in self._cache:
            if len(self._cache) >= self._MAX_CACHED:
                self._cache.pop(next(iter(self._cache)))
            start = c * self._CHUNK
            count = min(self._CHUNK, self.n - start)
            self._cache[c] = make_scenes(count, self.seed, self.size, start=start,
                                         split=self.split, world=self.world)
        return self._cache[c]

    def scene(self, index: int) -> Scenes:
        """The full :class:`Scenes` record (masks, caption, ...) of one item, batch of one."""
        index = self._check_index(index)
        chunk, j = self._chunk(index // self._CHUNK), index % self._CHUNK
        return Scenes(
            images=chunk.images[j : j + 1],
            masks=chunk.masks[j : j + 1],
            object_masks=chunk.object_masks[j : j + 1],
            attributes=chunk.attributes[j : j + 1],
            captions=chunk.captions[j : j + 1],
            split=self.split,
            world=self.world,
            clutter=None if chunk.clutter is None else chunk.clutter[j : j + 1],
        )

    def attributes(self, index: int) -> dict[str, str]:
        """Attribute dict of item ``index``."""
        index = self._check_index(index)
        return self._chunk(index // self._CHUNK).attributes[index % self._CHUNK]

    def _check_index(self, index: int) -> int:
        if index < 0:
            index += self.n
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} scenes")
        return index

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, int]:
        index = self._check_index(index)
        chunk, j = self._chunk(index // self._CHUNK), index % self._CHUNK
        image = torch.from_numpy(chunk.images[j]).permute(2, 0, 1).float().div_(255.0)
        if self.transform is not None:
            image = self.transform(image)
        if self.label is None:
            return image
        return image, ATTRIBUTES[self.label].index(chunk.attributes[j][self.label])


def write_image_folder(path: str | Path, n: int, seed: int = 0, size: int = 64,
                       split: str = "train", world: str = "simple") -> Path:
    """Write ``n`` scenes as PNG files plus a ``labels.csv`` for command-line demos.

    Args:
        path: output folder, created if needed.
        n: number of scenes.
        seed: random seed.
        size: image side in pixels.
        split: the scenes' split (:data:`SPLITS`; evaluations: ``"validation"`` or ``"test"``).
        world: the scenes' world (:data:`WORLDS`).

    Returns:
        The folder. It holds ``00000.png``, ``00001.png``, ... and ``labels.csv`` with columns
        ``file``, one per family, and ``caption``.

    Examples::

        >>> folder = write_image_folder("/tmp/scenes", 4)  # doctest: +SKIP
    """
    from PIL import Image

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    fields: Sequence[str] = ("file", *FAMILIES, "caption")
    with open(folder / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for start in range(0, n, 1024):
            scenes = make_scenes(min(1024, n - start), seed, size, start=start, split=split,
                                 world=world)
            for j, image in enumerate(scenes.images):
                name = f"{start + j:05d}.png"
                Image.fromarray(image).save(folder / name)
                row = {"file": name, **scenes.attributes[j], "caption": scenes.captions[j]}
                writer.writerow(row)
    return folder
