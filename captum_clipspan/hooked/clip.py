"""``HookedCLIP``: a hooked image tower beside a family's text side (tokenizer, text tower,
image transform), one class for every family."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import (
    check_count,
    check_images,
    check_text_embeddings,
    check_texts,
    resolve_precision,
)
from .backends.text import TextBackend
from .vit import HookedViT

__all__ = ["HookedCLIP", "check_texts"]  # check_texts: public here too (it lives in validation)


class HookedCLIP(nn.Module):
    """A CLIP whose image tower is a :class:`HookedViT`, beside its family's text side.

    Build one with :meth:`from_pretrained`, :meth:`from_open_clip` or :meth:`from_transformers`.
    ``model`` is the family's whole model, ``visual`` the hooked image tower, ``text`` the
    :class:`~captum_clipspan.hooked.backends.text.TextBackend` (tokenizer, text tower, image
    transform).

    Args:
        text: the family's text side; it holds the whole model.
        visual: the hooked image tower; default: ``HookedViT(text.image_tower)``.

    Examples::

        >>> clip = HookedCLIP.from_pretrained("ViT-B-16", "laion2b_s34b_b88k")
        >>> images = clip.preprocess_images([Image.open("dog.jpg")])      # [1, 3, 224, 224]
        >>> texts = clip.encode_text(["a photo of a dog", "a photo of a cat"])  # [2, E]
        >>> clip(images, texts)                                           # cosines [1, 2]
    """

    def __init__(self, text: TextBackend, visual: HookedViT | None = None) -> None:
        super().__init__()
        if not isinstance(text, TextBackend):
            raise TypeError(f"expected a TextBackend (HookedCLIP.from_open_clip(model) or "
                            f"HookedCLIP.from_transformers(model) build one), got "
                            f"{type(text).__name__}.")
        self.text = text
        self.model = text.model
        self.visual = visual if visual is not None else HookedViT(text.image_tower)

    @classmethod
    def from_open_clip(cls, model: nn.Module, tokenizer: Callable | None = None,
                       preprocess: Callable | None = None,
                       model_name: str | None = None) -> HookedCLIP:
        """Wrap a live open_clip model; weights stay open_clip's.

        Args:
            model: an open_clip ``CLIP`` or ``CustomTextCLIP`` with a ViT image tower.
            tokenizer: maps a list of strings to token ids (``open_clip.get_tokenizer(name)``);
                loaded lazily from ``model_name`` when omitted.
            preprocess: the image transform (open_clip's validation transform), used by
                :meth:`preprocess_images`.
            model_name: the open_clip model name, used to find the tokenizer.
        """
        from .backends.open_clip_text import OpenCLIPText

        return cls(OpenCLIPText(model, tokenizer=tokenizer, preprocess=preprocess,
                                model_name=model_name))

    @classmethod
    def from_pretrained(cls, model_name: str, pretrained: str | None = None,
                        device: str | torch.device = "cpu", precision: str = "fp32",
                        **kwargs: Any) -> HookedCLIP:
        """Load an open_clip model by name and pretrained tag, or a shipped toy model.

        Args:
            model_name: an open_clip model name (``open_clip.list_models()``) or a registered
                model (:mod:`~captum_clipspan.registry`; the shipped toys ``"toy"`` and
                ``"toy-spurious"``).
            pretrained: an open_clip pretrained tag (``open_clip.list_pretrained()``), a local
                checkpoint path, or ``None`` for random weights.
            device: where to put the model.
            precision: ``"fp32"``, ``"fp16"``, ``"bf16"`` (open_clip's mixed precision: norms
                stay fp32), ``"pure_fp16"``, ``"pure_bf16"``, or a dtype (``torch.bfloat16``);
                a registered model is cast to the dtype. Anything else is refused.
            **kwargs: passed to ``open_clip.create_model_and_transforms``.

        Raises:
            ValueError: an unknown name or precision, a pretrained tag for a registered model,
                or a local checkpoint file that is not one of this model.
            HubUnreachableError: the weights are not cached and the Hub cannot be reached.
        """
        from .. import registry
        from .backends.open_clip_text import load_open_clip

        precision, dtype = resolve_precision(precision)
        if not isinstance(model_name, str):
            raise TypeError(f"model_name must be a string, got {type(model_name).__name__}.")
        loader = registry.lookup("model", model_name)
        if loader is not None:
            if pretrained is not None:
                raise ValueError(f"the {model_name!r} model ships its own weights; got "
                                 f"pretrained={pretrained!r}, which does not apply to it.")
            model, tokenizer, preprocess = loader(device=device)
            return cls.from_open_clip(model.to(dtype), tokenizer=tokenizer,
                                      preprocess=preprocess, model_name=model_name)
        return cls(load_open_clip(model_name, pretrained, device=device, precision=precision,
                                  other_models=registry.names("model"), **kwargs))

    @classmethod
    def from_transformers(cls, model_or_repo_id: nn.Module | str, processor: Any = None,
                          device: str | torch.device = "cpu",
                          dtype: torch.dtype | None = None) -> HookedCLIP:
        """Wrap a Hugging Face CLIP-family model, or load one by repo id.

        Supported: ``CLIPModel``, ``MetaClip2Model``, ``AltCLIPModel``, ``ChineseCLIPModel``,
        ``CLIPSegModel`` and ``SiglipModel`` (both towers), and the vision-only
        ``CLIPVisionModel[WithProjection]``, ``MetaClip2VisionModel[WithProjection]``,
        ``AltCLIPVisionModel``, ``ChineseCLIPVisionModel``, ``CLIPSegVisionModel`` and
        ``SiglipVisionModel`` (the image side only: :meth:`encode_text` raises a
        ``ValueError``, so give texts as embeddings). A ``CLIPSegProcessor``'s images are
        resized to the tower's trained size (224, not the decoder's 352).

        Args:
            model_or_repo_id: a live model, a Hub repo id (``"openai/clip-vit-base-patch16"``)
                or a local ``save_pretrained`` folder.
            processor: its processor (tokenizer and image processor: ``CLIPProcessor``,
                ``SiglipProcessor``, ``AltCLIPProcessor``, ...); loaded with the model when a
                repo id is given and this is ``None``.
            device: where to put the model (a live model is moved too).
            dtype: the model's dtype (a ``torch.dtype`` or its name, ``"bfloat16"``); ``None``
                keeps a live model's and loads ``float32``.

        Raises:
            OSError: a repo id that is not cached locally while the Hub cannot be reached.
            ValueError: a local folder that holds no loadable model.
            UnsupportedTowerError: a transformers class whose image tower is not supported; the
                message says why and lists what is.
            TypeError: a model that is not a transformers model, or arguments of the wrong
                type.
        """
        from .backends.transformers_text import load_transformers

        return cls(load_transformers(model_or_repo_id, processor, device=device, dtype=dtype))

    @property
    def tokenizer(self) -> Callable:
        """The family's tokenizer (open_clip's is loaded on first use from ``model_name``)."""
        return self.text.tokenizer

    @property
    def preprocess(self) -> Callable | None:
        """The image transform, PIL image -> ``[3, S, S]`` (settable)."""
        return self.text.preprocess

    def __setattr__(self, name: str, value: Any) -> None:
        # Not a property setter: nn.Module would register a transform that is itself a module
        # (torchvision's v2 transforms) as a submodule, and the property would not see it.
        if name == "preprocess":
            self.text.preprocess = value
        else:
            super().__setattr__(name, value)

    @property
    def model_name(self) -> str | None:
        """The name the model was loaded by (open_clip name, registered name or repo id)."""
        return self.text.model_name

    @property
    def logit_scale(self) -> Tensor:
        """The learned temperature as a multiplier, a 0-d tensor (``exp`` of the stored log)."""
        return self.text.logit_scale

    @property
    def device(self) -> torch.device:
        return self.visual.device

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.dtype

    @property
    def embed_dim(self) -> int:
        return self.visual.output_dim

    def preprocess_images(self, images: Any) -> Tensor:
        """Apply the model's transform to PIL images (one or a list): ``[B, 3, H, W]``."""
        if self.preprocess is None:
            raise ValueError("this HookedCLIP has no preprocess transform; pass preprocess= to "
                             "from_open_clip or give preprocessed tensors.")
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise ValueError("no images given: pass one PIL image or a non-empty list.")
        batch = torch.stack([self.preprocess(image) for image in images])
        return batch.to(device=self.device, dtype=self.dtype)

    def encode_image(self, images: Tensor, normalize: bool = False) -> Tensor:
        """Image embeddings ``[B, E]`` through the hooked tower (``model.encode_image``)."""
        check_images(images, self.visual.image_size)
        features = self.visual(images)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, texts: str | Sequence[str], normalize: bool = True,
                    batch_size: int = 256) -> Tensor:
        """Text embeddings ``[T, E]``, unit norm by default, computed without gradients."""
        texts = check_texts(texts)
        batch_size = check_count(batch_size, "batch_size")
        with torch.no_grad():
            features = torch.cat([self.text.encode_text(texts[start:start + batch_size])
                                  for start in range(0, len(texts), batch_size)])
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, images: Tensor, text_embeddings: Tensor | None = None) -> Tensor:
        """Unit-norm image embeddings ``[B, E]``, or cosine similarities ``[B, T]`` with texts.

        Differentiable, so Captum's gradient methods can use it as ``forward_func``.
        """
        embeddings = self.encode_image(images, normalize=True)
        if text_embeddings is None:
            return embeddings
        texts = check_text_embeddings(text_embeddings, self.embed_dim)
        return embeddings @ texts.to(embeddings.dtype).T

