"""``HookedCLIP``: a hooked image tower beside open_clip's text tower, tokenizer and transform."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..decomposition import check_text_embeddings
from .vit import HookedViT


class HookedCLIP(nn.Module):
    """An open_clip CLIP whose image tower is a :class:`HookedViT`.

    Args:
        model: an open_clip ``CLIP`` or ``CustomTextCLIP`` with a ViT image tower.
        tokenizer: maps a list of strings to token ids (``open_clip.get_tokenizer(name)``);
            loaded lazily from ``model_name`` when omitted.
        preprocess: the image transform (open_clip's validation transform), used by
            :meth:`preprocess_images`.
        model_name: the open_clip model name, used to find the tokenizer.

    Examples::

        >>> clip = HookedCLIP.from_pretrained("ViT-B-16", "laion2b_s34b_b88k")
        >>> images = clip.preprocess_images([Image.open("dog.jpg")])      # [1, 3, 224, 224]
        >>> texts = clip.encode_text(["a photo of a dog", "a photo of a cat"])  # [2, E]
        >>> clip(images, texts)                                           # cosines [1, 2]
    """

    def __init__(self, model: nn.Module, tokenizer: Callable | None = None,
                 preprocess: Callable | None = None, model_name: str | None = None) -> None:
        super().__init__()
        if not hasattr(model, "visual") or not hasattr(model, "encode_text"):
            raise TypeError(f"expected an open_clip CLIP model (with .visual and .encode_text), "
                            f"got {type(model).__name__}.")
        if model.training:
            warnings.warn("the open_clip model was in training mode (open_clip.create_model "
                          "returns it so); switching it to eval mode.", stacklevel=3)
            model.eval()
        self.model = model
        self.visual = HookedViT(model.visual)
        self._tokenizer = tokenizer
        self.preprocess = preprocess
        self.model_name = model_name

    @classmethod
    def from_open_clip(cls, model: nn.Module, tokenizer: Callable | None = None,
                       preprocess: Callable | None = None,
                       model_name: str | None = None) -> HookedCLIP:
        """Wrap a live open_clip model; weights stay open_clip's."""
        return cls(model, tokenizer=tokenizer, preprocess=preprocess, model_name=model_name)

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
            precision: open_clip precision (``"fp32"``, ``"fp16"``, ``"bf16"``, ...).
            **kwargs: passed to ``open_clip.create_model_and_transforms``.
        """
        from .. import registry

        loader = registry.lookup("model", model_name)
        if loader is not None:
            if pretrained is not None:
                raise ValueError(f"the {model_name!r} model ships its own weights; got "
                                 f"pretrained={pretrained!r}, which does not apply to it.")
            model, tokenizer, preprocess = loader(device=device)
            return cls(model, tokenizer=tokenizer, preprocess=preprocess, model_name=model_name)
        import open_clip

        if model_name not in open_clip.list_models():
            raise ValueError(f"unknown model {model_name!r}: use one of "
                             f"{registry.names('model')} or of open_clip.list_models() "
                             "(e.g. 'ViT-B-16', 'ViT-L-14').")
        from ..hub import check_weights_reachable

        check_weights_reachable(model_name, pretrained)  # at once, not after minutes of retries
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=device, precision=precision, **kwargs
        )
        return cls(model.eval(), preprocess=preprocess, model_name=model_name)

    @classmethod
    def from_transformers(cls, model_or_repo_id: nn.Module | str, processor: Any = None,
                          device: str | torch.device = "cpu",
                          dtype: torch.dtype | None = None) -> HookedCLIP:
        """Wrap a Hugging Face ``CLIPModel`` or ``SiglipModel``, or load one by repo id.

        Args:
            model_or_repo_id: a live ``CLIPModel``/``SiglipModel``, a Hub repo id
                (``"openai/clip-vit-base-patch16"``) or a local ``save_pretrained`` folder.
            processor: its ``CLIPProcessor``/``SiglipProcessor`` (tokenizer and image processor);
                loaded with the model when a repo id is given and this is ``None``.
            device: where to put the model (a live model is moved too).
            dtype: the model's dtype; ``None`` keeps a live model's and loads ``float32``.

        Raises:
            OSError: a repo id that is not cached locally while the Hub cannot be reached.
        """
        from .transformers_clip import HookedTransformersCLIP, load_transformers

        model, name = model_or_repo_id, None
        if isinstance(model_or_repo_id, str):
            name = model_or_repo_id
            model, processor = load_transformers(name, processor, dtype or torch.float32)
        elif dtype is not None:
            model = model.to(dtype)
        return HookedTransformersCLIP(model.to(device), processor, model_name=name)

    @property
    def tokenizer(self) -> Callable:
        if self._tokenizer is None:
            if self.model_name is None:
                raise ValueError("this HookedCLIP has no tokenizer; pass tokenizer= to "
                                 "from_open_clip, or pass text embeddings instead of strings.")
            import open_clip

            self._tokenizer = open_clip.get_tokenizer(self.model_name)
        return self._tokenizer

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
        self.visual.check_images(images)
        features = self.visual(images)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, texts: str | Sequence[str], normalize: bool = True,
                    batch_size: int = 256) -> Tensor:
        """Text embeddings ``[T, E]``, unit norm by default, computed without gradients."""
        texts = check_texts(texts)
        with torch.no_grad():
            return torch.cat([self._encode_text_batch(texts[start:start + batch_size], normalize)
                              for start in range(0, len(texts), batch_size)])

    def _encode_text_batch(self, texts: list[str], normalize: bool) -> Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return self.model.encode_text(tokens, normalize=normalize)

    def forward(self, images: Tensor, text_embeddings: Tensor | None = None) -> Tensor:
        """Unit-norm image embeddings ``[B, E]``, or cosine similarities ``[B, T]`` with texts.

        Differentiable, so Captum's gradient methods can use it as ``forward_func``.
        """
        embeddings = self.encode_image(images, normalize=True)
        if text_embeddings is None:
            return embeddings
        texts = check_text_embeddings(text_embeddings, self.embed_dim)
        return embeddings @ texts.to(embeddings.dtype).T


def check_texts(texts: str | Sequence[str]) -> list[str]:
    """Validate a string or a non-empty list of strings."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a string or a list of strings.")
    if len(texts) == 0:
        raise ValueError("the list of texts is empty; pass at least one text.")
    return list(texts)
