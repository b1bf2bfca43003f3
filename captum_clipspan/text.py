"""Text banks, prompt templates and the zero-shot classifier built from them."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import registry
from .evaluation import correct, predict
from .hooked.clip import HookedCLIP, check_texts
from .validation import check_labels

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
    path = Path(name)
    if not path.is_file():
        raise ValueError(f"unknown text bank {str(name)!r}: use one of "
                         f"{[*BANKS, *registry.names('text_bank')]} or the path of a text file "
                         "with one description per line.")
    texts = _read_lines(path.read_text("utf-8"))
    if not texts:
        raise ValueError(f"the text bank file {path} has no non-empty lines.")
    return texts


def prompt_templates() -> list[str]:
    """The project's zero-shot prompt templates, each with one ``{}`` for the class name."""
    return _read_lines(_packaged("templates.txt"))


class ZeroShotClassifier:
    """Template-averaged class embeddings, usable as a classifier and as ``texts=``.

    Each class name is put into every template, the unit text embeddings are averaged and the
    mean is normalized again (CLIP's prompt ensembling).

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        classnames: the class names, in label order.
        templates: format strings with one ``{}`` (default: :func:`prompt_templates`), or ``["{}"]``
            to use the names as they are.

    Attributes:
        class_embeddings: ``[C, E]`` unit-norm class embeddings.

    Examples::

        >>> zs = cs.ZeroShotClassifier(clip, ["dog", "cat"])
        >>> zs.predict(images)                      # [B] class indices
        >>> cs.HeadContribution(clip).attribute(images, texts=zs, target=labels)  # [B, L, H]
    """

    def __init__(self, clip: HookedCLIP, classnames: Sequence[str],
                 templates: Sequence[str] | None = None) -> None:
        self.classnames = check_texts(list(classnames))
        self.templates = list(templates) if templates is not None else prompt_templates()
        bad = [t for t in self.templates if t.count("{}") != 1]
        if not self.templates or bad:
            raise ValueError(f"templates must be a non-empty list of strings with exactly one "
                             f"'{{}}' each; these are not: {bad[:3]}.")
        self.class_embeddings = _class_embeddings(
            clip, {name: [t.format(name) for t in self.templates] for name in self.classnames}
        )

    @classmethod
    def from_prompts(cls, clip: HookedCLIP, prompts: dict[str, Sequence[str]]
                     ) -> ZeroShotClassifier:
        """Classes from explicit prompts: ``{classname: [prompt, ...]}`` (averaged per class)."""
        if not prompts:
            raise ValueError("prompts must map at least one class name to its prompts.")
        classifier = cls.__new__(cls)
        classifier.classnames = check_texts(list(prompts))
        classifier.templates = []
        classifier.class_embeddings = _class_embeddings(clip, prompts)
        return classifier

    @classmethod
    def from_embeddings(cls, class_embeddings: Tensor, classnames: Sequence[str]
                        ) -> ZeroShotClassifier:
        """Classes from their embeddings ``[C, E]`` (normalized here), one per class name."""
        classnames = check_texts(list(classnames))
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
    flat = [prompt for name in names for prompt in check_texts(list(prompts[name]))]
    embeddings = clip.encode_text(flat).float()
    owner = torch.tensor([i for i, name in enumerate(names) for _ in prompts[name]])
    sums = torch.zeros(len(names), embeddings.shape[1]).index_add_(0, owner, embeddings.cpu())
    return torch.nn.functional.normalize(sums, dim=-1).to(embeddings.device)
