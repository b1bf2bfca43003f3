"""Text banks, prompt templates and the zero-shot classifier built from them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import registry
from .evaluation import correct, predict
from .hooked.clip import HookedCLIP
from .validation import check_labels, check_texts, read_lines

BANKS = ("general", "words")
"""The banks shipped with the package; packages register more (:mod:`.registry`), e.g. ``"toy"``."""


def _read_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _packaged(name: str) -> str:
    return resources.files("captum_clipspan").joinpath("text_banks", name).read_text("utf-8")


def text_bank(name: str | Path = "general") -> list[str]:
    """A list of short descriptions for TextSpan.

    Args:
        name: ``"general"`` (image descriptions: colors, textures, places, styles, objects, ...),
            ``"words"`` (common concrete English words), ``"toy"`` (the attribute phrases of
            the synthetic scenes, for the toy model), or the path of a UTF-8 text file with one
            description per line (blank lines are skipped).

    Returns:
        The descriptions, in file order.

    Examples::

        >>> bank = cs.text_bank("general")
        >>> len(bank) >= 2000
        True
    """
    if isinstance(name, str) and name in BANKS:
        return _read_lines(_packaged(f"{name}.txt"))
    registered = registry.lookup("text_bank", name)
    if registered is not None:
        return list(registered())
    if not isinstance(name, (str, Path)):
        raise TypeError(f"a text bank is a name or a file path, got {type(name).__name__}; pass "
                        "a list of texts as bank= directly.")
    if not Path(name).is_file():
        raise ValueError(f"unknown text bank {str(name)!r}: use one of "
                         f"{[*BANKS, *registry.names('text_bank')]} or the path of a text file "
                         "with one description per line.")
    return read_lines(name, "text bank file")


def prompt_templates() -> list[str]:
    """The project's zero-shot prompt templates, each with one ``{}`` for the class name."""
    return _read_lines(_packaged("templates.txt"))


class ZeroShotClassifier:
    """Template-averaged class embeddings, usable as a classifier and as ``texts=``.

    Each class name is put into every template, the unit text embeddings are averaged and the
    mean is normalized again (CLIP's prompt ensembling).

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        classnames: the class names, in label order (a list, never one string), or a mapping
            ``{class name: name in the prompts}`` (e.g. ``{"n02084071": "dog"}`` for folders
            named by id). Labels that carry names (an image folder's sub-folders) are matched
            to the class names by name, not by position.
        templates: format strings with one ``{}`` (default: :func:`prompt_templates`), or ``["{}"]``
            to use the names as they are.

    Attributes:
        classnames: the class names (the mapping's keys).
        class_embeddings: ``[C, E]`` unit-norm class embeddings.

    Examples::

        >>> zs = cs.ZeroShotClassifier(clip, ["dog", "cat"])
        >>> zs.predict(images)                      # [B] class indices
        >>> cs.HeadContribution(clip).attribute(images, texts=zs, target=labels)  # [B, L, H]
    """

    def __init__(self, clip: HookedCLIP, classnames: Sequence[str] | Mapping[str, str],
                 templates: Sequence[str] | None = None) -> None:
        spoken = dict(classnames) if isinstance(classnames, Mapping) else None
        self.classnames = _check_classnames(list(spoken) if spoken is not None else classnames)
        if spoken is not None:
            check_texts(list(spoken.values()), "the prompt names of classnames")
        self.templates = (check_texts(templates, "templates", single=False)
                          if templates is not None else prompt_templates())
        bad = [t for t in self.templates if t.count("{}") != 1]
        if bad:
            raise ValueError(f"templates must be a non-empty list of strings with exactly one "
                             f"'{{}}' each; these are not: {bad[:3]}.")
        spoken = spoken or {name: name for name in self.classnames}
        self.class_embeddings = _class_embeddings(
            clip, {name: [t.format(spoken[name]) for t in self.templates]
                   for name in self.classnames})

    @classmethod
    def from_prompts(cls, clip: HookedCLIP, prompts: dict[str, Sequence[str]]
                     ) -> ZeroShotClassifier:
        """Classes from explicit prompts: ``{classname: [prompt, ...]}`` (averaged per class)."""
        if not isinstance(prompts, Mapping) or not prompts:
            raise TypeError(f"prompts must map at least one class name to a list of prompts, got "
                            f"{prompts!r}.")
        classifier = cls.__new__(cls)
        classifier.classnames = _check_classnames(list(prompts))
        classifier.templates = []
        classifier.class_embeddings = _class_embeddings(clip, prompts)
        return classifier

    @classmethod
    def from_embeddings(cls, class_embeddings: Tensor, classnames: Sequence[str]
                        ) -> ZeroShotClassifier:
        """Classes from their embeddings ``[C, E]`` (normalized here), one per class name."""
        classnames = _check_classnames(classnames)
        if not isinstance(class_embeddings, Tensor) or class_embeddings.dim() != 2 or (
                class_embeddings.shape[0] != len(classnames)):
            raise ValueError(f"class_embeddings must be a tensor [{len(classnames)}, E] (one row "
                             f"per class name), got "
                             f"{getattr(class_embeddings, 'shape', type(class_embeddings))}.")
        classifier = cls.__new__(cls)
        classifier.classnames = classnames
        classifier.templates = []
        classifier.class_embeddings = torch.nn.functional.normalize(
            class_embeddings.detach().float(), dim=-1)
        return classifier

    def __len__(self) -> int:
        return len(self.classnames)

    def accuracy(self, embeddings: Tensor, labels: Any) -> float:
        """The fraction of image embeddings ``[N, E]`` classified as their labels ``[N]``."""
        labels = check_labels(labels, embeddings.shape[0], len(self))
        return float(correct(embeddings, self.class_embeddings, labels).double().mean())

    def logits(self, image_embeddings: Tensor) -> Tensor:
        """Cosine similarities ``[B, C]`` of (any-norm) image embeddings ``[B, E]``."""
        image_embeddings = torch.nn.functional.normalize(image_embeddings.float(), dim=-1)
        return image_embeddings @ self.class_embeddings.to(image_embeddings.device).T

    def predict(self, images: Tensor, clip: HookedCLIP | None = None) -> Tensor:
        """Class indices ``[B]``; ``images`` are embeddings ``[B, E]``, or images with ``clip``."""
        if clip is not None:
            with torch.no_grad():
                images = clip.encode_image(images)
        return predict(images, self.class_embeddings)


def _class_embeddings(clip: HookedCLIP, prompts: dict[str, Sequence[str]]) -> Tensor:
    """Average each class's unit prompt embeddings and normalize again: ``[C, E]``."""
    names = list(prompts)
    lists = [check_texts(prompts[name], f"the prompts of {name!r}", single=False)
             for name in names]
    embeddings = clip.encode_text([prompt for texts in lists for prompt in texts]).float()
    owner = torch.tensor([i for i, texts in enumerate(lists) for _ in texts])
    sums = torch.zeros(len(names), embeddings.shape[1]).index_add_(0, owner, embeddings.cpu())
    return torch.nn.functional.normalize(sums, dim=-1).to(embeddings.device)


def _check_classnames(classnames: Any) -> list[str]:
    """A list of distinct class names (a string is one class name too many characters)."""
    names = check_texts(classnames, "classnames", single=False)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"classnames must be distinct (labels are matched to them by name), "
                         f"got {repeated} more than once.")
    return names
