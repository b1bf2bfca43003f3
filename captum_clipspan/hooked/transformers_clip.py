"""``HookedCLIP`` over a Hugging Face ``CLIPModel`` or ``SiglipModel`` (see
:meth:`~captum_clipspan.hooked.clip.HookedCLIP.from_transformers`)."""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from .clip import HookedCLIP
from .vit import HookedViT

HUB_TIMEOUT_S = 5.0
"""How long the Hub may take to answer before a repo id is loaded from the local cache only."""


class ImageProcessorTransform:
    """A transformers image processor as a per-image transform: PIL image -> ``[3, H, W]``
    (what ``clip.preprocess`` is for open_clip; picklable for ``DataLoader`` workers)."""

    def __init__(self, image_processor: Any) -> None:
        self.image_processor = image_processor

    def __call__(self, image: Any) -> Tensor:
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]


class HookedTransformersCLIP(HookedCLIP):
    """A :class:`HookedCLIP` whose model is a transformers ``CLIPModel`` or ``SiglipModel``.

    ``model`` is the transformers model, ``visual`` the hooked image tower, ``tokenizer`` and
    ``processor`` the transformers ones, ``preprocess`` a per-image transform.

    Args:
        model: a ``CLIPModel`` or ``SiglipModel``.
        processor: its processor (``.tokenizer`` and ``.image_processor``), or ``None``.
        model_name: the repo id it was loaded from, if any.
    """

    def __init__(self, model: nn.Module, processor: Any = None,
                 model_name: str | None = None) -> None:
        nn.Module.__init__(self)  # HookedCLIP.__init__ checks for an open_clip model
        if not hasattr(model, "get_text_features") or not hasattr(model, "get_image_features"):
            raise TypeError(f"expected a transformers CLIPModel or SiglipModel (with a text "
                            f"tower), got {type(model).__name__}; wrap vision-only models with "
                            "HookedViT(model).")
        if model.training:
            warnings.warn("the transformers model was in training mode; switching it to eval "
                          "mode.", stacklevel=3)
            model.eval()
        self.model = model
        self.visual = HookedViT(model)
        self.processor = processor
        self._tokenizer = getattr(processor, "tokenizer", None)
        image_processor = getattr(processor, "image_processor", None)
        self.preprocess = ImageProcessorTransform(image_processor) if image_processor else None
        self.model_name = model_name or getattr(model, "name_or_path", None) or None

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise ValueError("this HookedCLIP has no tokenizer; pass processor= to "
                             "from_transformers, or pass text embeddings instead of strings.")
        return self._tokenizer

    def _encode_text_batch(self, texts: list[str], normalize: bool) -> Tensor:
        text_config = self.model.config.text_config
        # SigLIP was trained on texts padded to the full length (its tokenizer gives no mask).
        padding = "max_length" if text_config.model_type.startswith("siglip") else True
        batch = self.tokenizer(texts, padding=padding, truncation=True, return_tensors="pt",
                               max_length=text_config.max_position_embeddings)
        inputs = {key: batch[key].to(self.device) for key in ("input_ids", "attention_mask")
                  if key in batch}
        features = pooled(self.model.get_text_features(**inputs))
        return nn.functional.normalize(features, dim=-1) if normalize else features


def pooled(output: Any) -> Tensor:
    """The embedding from ``get_text_features``/``get_image_features``: a tensor in transformers
    4.x, a ``ModelOutput`` with it as ``pooler_output`` in 5.x."""
    return output if isinstance(output, Tensor) else output.pooler_output


def load_transformers(repo_id: str, processor: Any,
                      dtype: torch.dtype) -> tuple[nn.Module, Any]:
    """Load a model (and its processor unless given) by repo id or local folder, offline-safe.

    Raises:
        ValueError: the Hub says the repo does not exist.
        OSError: it is not in the local cache and the Hub is unreachable or offline mode is set.
    """
    from transformers import AutoModel, AutoProcessor

    local_only = _local_only(repo_id)
    try:
        model = AutoModel.from_pretrained(repo_id, dtype=dtype, local_files_only=local_only)
        if processor is None:
            processor = AutoProcessor.from_pretrained(repo_id, local_files_only=local_only)
    except OSError as error:
        if not local_only:
            raise
        raise OSError(f"cannot load {repo_id!r}: it is not in the local Hugging Face cache and "
                      "the Hub is not reachable (offline, or HF_HUB_OFFLINE is set). Download it "
                      "where there is network access, or pass a live model: "
                      "HookedCLIP.from_transformers(model, processor).") from error
    return model.eval(), processor


def _local_only(repo_id: str) -> bool:
    """Whether to load from local files: a folder, offline mode, or no answer from the Hub
    within :data:`HUB_TIMEOUT_S` (instead of the Hub client's long retries)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if os.path.isdir(repo_id) or constants.is_offline_mode() or _offline_env():
        return True
    try:
        HfApi().model_info(repo_id, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:  # it exists; from_pretrained says how to authenticate
        return False
    except RepositoryNotFoundError:
        raise ValueError(f"{repo_id!r} is not a model repo on the Hugging Face Hub (or it is "
                         "private and no token is set).") from None
    except Exception:  # any transport error (the HTTP client differs between versions)
        return True
    return False


def _offline_env() -> bool:
    """``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` as set now (the Hub client reads them once,
    at import)."""
    return any(os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
