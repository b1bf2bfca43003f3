"""Hugging Face ``transformers`` CLIP and SigLIP text side: a ``CLIPModel``'s or ``SiglipModel``'s
tokenizer, text tower and image processor, and loading a model by repo id, offline-safe."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ...validation import resolve_dtype
from .hub import offline_variable
from .text import TextBackend

__all__ = ["HUB_TIMEOUT_S", "ImageProcessorTransform", "TransformersText", "load_transformers",
           "pooled"]

HUB_TIMEOUT_S = 5.0
"""How long the Hub may take to answer before a repo id is loaded from the local cache only."""


class ImageProcessorTransform:
    """A transformers image processor as a per-image transform: PIL image -> ``[3, H, W]``
    (what ``clip.preprocess`` is for open_clip; picklable for ``DataLoader`` workers)."""

    def __init__(self, image_processor: Any) -> None:
        self.image_processor = image_processor

    def __call__(self, image: Any) -> Tensor:
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]


class TransformersText(TextBackend):
    """A transformers ``CLIPModel``'s or ``SiglipModel``'s text side.

    Args:
        model: a ``CLIPModel`` or ``SiglipModel``.
        processor: its processor (``.tokenizer`` and ``.image_processor``), or ``None``.
        model_name: the repo id it was loaded from; default: the model's ``name_or_path``.

    Attributes:
        processor: the processor, or ``None``.

    Raises:
        TypeError: ``model`` has no text tower (a vision-only class).
    """

    family = "transformers"
    image_prefixes = ("vision_model.", "visual_projection.")

    def __init__(self, model: nn.Module, processor: Any = None,
                 model_name: str | None = None) -> None:
        if not hasattr(model, "get_text_features") or not hasattr(model, "get_image_features"):
            raise TypeError(f"expected a transformers CLIPModel or SiglipModel (with a text "
                            f"tower), got {type(model).__name__}; wrap vision-only models with "
                            "HookedViT(model).")
        image_processor = getattr(processor, "image_processor", None)
        super().__init__(
            model, preprocess=ImageProcessorTransform(image_processor) if image_processor else None,
            model_name=model_name or getattr(model, "name_or_path", None) or None,
        )
        self.processor = processor
        self._tokenizer = getattr(processor, "tokenizer", None)

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise ValueError("this HookedCLIP has no tokenizer; pass processor= to "
                             "from_transformers, or pass text embeddings instead of strings.")
        return self._tokenizer

    @property
    def image_tower(self) -> nn.Module:
        return self.model  # the adapter picks the vision model and projection out of it

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """``input_ids`` (and ``attention_mask`` where the tokenizer gives one), on the model's
        device."""
        text_config = self.model.config.text_config
        # SigLIP was trained on texts padded to the full length (its tokenizer gives no mask).
        padding = "max_length" if text_config.model_type.startswith("siglip") else True
        batch = self.tokenizer(texts, padding=padding, truncation=True, return_tensors="pt",
                               max_length=text_config.max_position_embeddings)
        return {key: batch[key].to(self.device) for key in ("input_ids", "attention_mask")
                if key in batch}

    def encode_tokens(self, tokens: dict[str, Tensor]) -> Tensor:
        return pooled(self.model.get_text_features(**tokens))


def pooled(output: Any) -> Tensor:
    """The embedding from ``get_text_features``/``get_image_features``: a tensor in transformers
    4.x, a ``ModelOutput`` with it as ``pooler_output`` in 5.x."""
    return output if isinstance(output, Tensor) else output.pooler_output


def load_transformers(model_or_repo_id: nn.Module | str, processor: Any = None,
                      device: str | torch.device = "cpu",
                      dtype: torch.dtype | None = None) -> TransformersText:
    """Wrap a live ``CLIPModel``/``SiglipModel``, or load one (and its processor unless given) by
    repo id or local folder, offline-safe.

    Args:
        model_or_repo_id: a live model, a Hub repo id or a local ``save_pretrained`` folder.
        processor: its processor; loaded with the model when a repo id is given and this is
            ``None``.
        device: where to put the model (a live model is moved too).
        dtype: the model's dtype; ``None`` keeps a live model's and loads ``float32``.

    Raises:
        ValueError: the Hub says the repo does not exist, or a local folder holds no loadable
            model.
        OSError: it is not in the local cache and the Hub is unreachable or offline mode is set.
        TypeError: the model has no text tower; a processor without a tokenizer or image
            processor; a dtype that is neither a floating-point dtype nor its name.
    """
    if isinstance(model_or_repo_id, Path):
        model_or_repo_id = str(model_or_repo_id)
    if not isinstance(model_or_repo_id, (str, nn.Module)):
        raise TypeError(f"model_or_repo_id must be a transformers CLIPModel/SiglipModel, a Hub "
                        f"repo id or a local folder, got {model_or_repo_id!r}.")
    if processor is not None and not any(hasattr(processor, attribute) for attribute in
                                         ("tokenizer", "image_processor")):
        raise TypeError(f"processor must be a transformers processor (with .tokenizer and "
                        f".image_processor, e.g. AutoProcessor.from_pretrained(repo_id)) or "
                        f"None, got {processor!r}.")
    dtype = None if dtype is None else resolve_dtype(dtype)
    model, name = model_or_repo_id, None
    if isinstance(model_or_repo_id, str):
        name = model_or_repo_id
        model, processor = _from_pretrained(name, processor, dtype or torch.float32)
    elif dtype is not None:
        model = model.to(dtype)
    return TransformersText(model.to(device), processor, model_name=name)


def _from_pretrained(repo_id: str, processor: Any, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    from transformers import AutoModel, AutoProcessor

    local_only = _local_only(repo_id)
    try:
        model = AutoModel.from_pretrained(repo_id, dtype=dtype, local_files_only=local_only)
        if processor is None:
            processor = AutoProcessor.from_pretrained(repo_id, local_files_only=local_only)
    except (OSError, ValueError, KeyError) as error:
        if os.path.isdir(repo_id):  # not a question of the Hub: the folder itself is broken
            raise ValueError(f"the folder {repo_id!r} holds no loadable transformers model "
                             f"({type(error).__name__}: {' '.join(str(error).split())[:300]}); "
                             "give a save_pretrained folder of a CLIPModel or SiglipModel."
                             ) from error
        if not local_only or not isinstance(error, OSError):
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

    if os.path.isdir(repo_id) or constants.is_offline_mode() or offline_variable():
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
