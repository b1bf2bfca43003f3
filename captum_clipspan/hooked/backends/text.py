"""What a CLIP family gives :class:`~captum_clipspan.hooked.clip.HookedCLIP` beside its image tower.

The image side of a family is a :class:`~captum_clipspan.hooked.spec.TowerSpec`; the rest is a
:class:`TextBackend`: the family's whole model, its tokenizer and text tower, the image transform,
the learned temperature, and which weights decide the text embeddings. One subclass per family
(:mod:`.open_clip_text`, :mod:`.transformers_text`).
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

__all__ = ["TextBackend"]


class TextBackend(ABC):
    """A CLIP family's model around its image tower: tokenizer, text tower, image transform.

    Subclasses set :attr:`family` and :attr:`image_prefixes` and implement :attr:`tokenizer`,
    :attr:`image_tower`, :meth:`tokenize` and :meth:`encode_tokens`.

    Args:
        model: the family's whole CLIP model (both towers); switched to eval mode, with a
            warning, when it is in training mode.
        preprocess: the image transform, PIL image -> ``[3, S, S]``, or ``None``.
        model_name: the name the model was loaded by, if any.

    Attributes:
        model: the whole model.
        preprocess: the image transform (settable).
        model_name: the name the model was loaded by, or ``None``.
    """

    family: ClassVar[str]
    """The family's name, as in messages (``"open_clip"``, ``"transformers"``)."""
    image_prefixes: ClassVar[tuple[str, ...]]
    """Prefixes of the image tower's names in ``model.state_dict()``; every other entry decides
    the text embeddings (or the temperature)."""

    def __init__(self, model: nn.Module, preprocess: Callable | None = None,
                 model_name: str | None = None) -> None:
        if model.training:
            warnings.warn(f"the {self.family} model was in training mode; switching it to eval "
                          "mode.", stacklevel=4)
            model.eval()
        self.model = model
        self.preprocess = preprocess
        self.model_name = model_name

    @property
    @abstractmethod
    def tokenizer(self) -> Callable:
        """The family's tokenizer.

        Raises:
            ValueError: the model came without one and none can be found.
        """

    @property
    @abstractmethod
    def image_tower(self) -> nn.Module:
        """The module a :class:`~captum_clipspan.hooked.vit.HookedViT` wraps."""

    @abstractmethod
    def tokenize(self, texts: list[str]) -> Any:
        """Tokens of ``texts``, on the model's device, as :meth:`encode_tokens` takes them."""

    @abstractmethod
    def encode_tokens(self, tokens: Any) -> Tensor:
        """Unnormalized text embeddings ``[T, E]`` of :meth:`tokenize`'s output."""

    def encode_text(self, texts: str | Sequence[str] | Any) -> Tensor:
        """Unnormalized text embeddings ``[T, E]`` of strings or of :meth:`tokenize`'s output."""
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, (list, tuple)):
            texts = self.tokenize(list(texts))
        return self.encode_tokens(texts)

    def text_parameters(self) -> dict[str, Tensor]:
        """The named weights and buffers that decide the text embeddings (everything outside the
        image tower), for the text-embedding cache's fingerprint."""
        state = self.model.state_dict()
        return {name: tensor for name, tensor in state.items()
                if not name.startswith(self.image_prefixes)}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def logit_scale(self) -> Tensor:
        """The learned temperature as a multiplier (``exp`` of the stored log-scale), a 0-d
        tensor: ``logits = logit_scale * cosine (+ logit_bias)``."""
        return self.model.logit_scale.detach().exp()

    @property
    def logit_bias(self) -> Tensor | None:
        """The learned logit bias of sigmoid-loss models (SigLIP), else ``None``."""
        bias = getattr(self.model, "logit_bias", None)
        return bias.detach() if bias is not None else None
