"""open_clip's text side: a ``CLIP``/``CustomTextCLIP``/``CoCa`` model's tokenizer and text tower,
and loading a model by name and pretrained tag."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ...validation import resolve_precision
from .text import TextBackend

__all__ = ["OpenCLIPText", "load_open_clip"]


class OpenCLIPText(TextBackend):
    """An open_clip model's text side.

    Args:
        model: an open_clip ``CLIP``, ``CustomTextCLIP`` or ``CoCa`` (anything with ``.visual``
            and ``.encode_text``).
        tokenizer: maps a list of strings to token ids ``[T, context_length]``; loaded lazily
            with ``open_clip.get_tokenizer(model_name)`` when omitted (a tokenizer that lives on
            the Hugging Face Hub and is not cached fails at once without a network:
            :class:`~captum_clipspan.hooked.backends.hub.HubUnreachableError`).
        preprocess: the image transform (open_clip's validation transform).
        model_name: the open_clip model name, used to find the tokenizer.

    Raises:
        TypeError: ``model`` is not an open_clip CLIP model.
    """

    family = "open_clip"
    image_prefixes = ("visual.",)

    def __init__(self, model: nn.Module, tokenizer: Callable | None = None,
                 preprocess: Callable | None = None, model_name: str | None = None) -> None:
        if not hasattr(model, "visual") or not hasattr(model, "encode_text"):
            raise TypeError(f"expected an open_clip CLIP model (with .visual and .encode_text), "
                            f"got {type(model).__name__}.")
        super().__init__(model, preprocess=preprocess, model_name=model_name)
        self._tokenizer = tokenizer

    @property
    def tokenizer(self) -> Callable:
        if self._tokenizer is None:
            if self.model_name is None:
                raise ValueError("this HookedCLIP has no tokenizer; pass tokenizer= to "
                                 "from_open_clip, or pass text embeddings instead of strings.")
            import open_clip

            from .hub import check_tokenizer_reachable

            check_tokenizer_reachable(self.model_name)  # not ~47 s of retries per call
            self._tokenizer = open_clip.get_tokenizer(self.model_name)
        return self._tokenizer

    @property
    def image_tower(self) -> nn.Module:
        return self.model.visual

    def tokenize(self, texts: list[str]) -> Tensor:
        return self.tokenizer(texts).to(self.device)

    def encode_tokens(self, tokens: Tensor) -> Tensor:
        return self.model.encode_text(tokens)


def load_open_clip(model_name: str, pretrained: str | None = None,
                   device: str | torch.device = "cpu", precision: str = "fp32",
                   other_models: Sequence[str] = (), **kwargs: Any) -> OpenCLIPText:
    """Create an open_clip model by name and pretrained tag, with its transform.

    Args:
        model_name: an open_clip model name (``open_clip.list_models()``).
        pretrained: a pretrained tag (``open_clip.list_pretrained()``), a local checkpoint path,
            or ``None`` for random weights.
        device: where to put the model.
        precision: open_clip precision (``"fp32"``, ``"fp16"``, ``"bf16"``, ``"pure_fp16"``,
            ``"pure_bf16"``; see :func:`~captum_clipspan.validation.resolve_precision`).
        other_models: names the caller accepts besides open_clip's, listed in the error for an
            unknown name.
        **kwargs: passed to ``open_clip.create_model_and_transforms``.

    Raises:
        ValueError: an unknown model name or tag, a checkpoint path that does not exist, or a
            file that is not a checkpoint of this model.
        HubUnreachableError: the weights are not cached and the Hub cannot be reached (at once,
            not after minutes of retries).
    """
    import open_clip

    from .hub import check_weights_reachable

    precision, _ = resolve_precision(precision)
    if model_name not in open_clip.list_models():
        also = f"{list(other_models)} or of " if other_models else ""
        raise ValueError(f"unknown model {model_name!r}: use one of {also}open_clip.list_models() "
                         "(e.g. 'ViT-B-16', 'ViT-L-14').")
    checkpoint = _checkpoint_file(model_name, pretrained)
    check_weights_reachable(model_name, pretrained)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=device, precision=precision, **kwargs
        )
    except Exception as error:
        if checkpoint is None:
            raise
        # torch.load and load_state_dict fail on a foreign file in many ways (KeyError,
        # UnpicklingError, RuntimeError, ...); the user needs to know which file and why.
        raise ValueError(f"pretrained file {checkpoint} is not an open_clip checkpoint of "
                         f"{model_name} ({type(error).__name__}: {error}); give a state dict "
                         "saved from this model, or a pretrained tag "
                         "(open_clip.list_pretrained()).") from error
    return OpenCLIPText(model.eval(), preprocess=preprocess, model_name=model_name)


def _checkpoint_file(model_name: str, pretrained: Any) -> Path | None:
    """The local checkpoint ``pretrained`` names, ``None`` for a known tag or no weights.

    Raises:
        TypeError: ``pretrained`` is not a string or path.
        ValueError: it is neither a tag of ``model_name`` nor an existing file.
    """
    import open_clip

    if pretrained is None:
        return None
    if not isinstance(pretrained, (str, Path)):
        raise TypeError(f"pretrained must be a tag, a checkpoint path or None, got "
                        f"{type(pretrained).__name__}.")
    if Path(pretrained).is_file():
        return Path(pretrained)
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if str(pretrained) not in tags and not open_clip.get_pretrained_cfg(model_name,
                                                                       str(pretrained)):
        raise ValueError(f"pretrained {str(pretrained)!r} is neither a tag of {model_name} "
                         f"({', '.join(tags) or 'none'}) nor an existing checkpoint file.")
    return None
