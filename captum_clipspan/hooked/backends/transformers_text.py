"""Hugging Face ``transformers`` text side: a CLIP-family model's tokenizer, text tower and image
processor (CLIP, MetaCLIP 2, AltCLIP, ChineseCLIP, CLIPSeg, SigLIP), and loading a model by repo
id, offline-safe. A vision-only model has no text side: texts are then given as embeddings."""

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
    (what ``clip.preprocess`` is for open_clip; picklable for ``DataLoader`` workers).

    Args:
        image_processor: the image processor.
        size: ``(H, W)`` to resize to instead of the processor's own size, or ``None``.
    """

    def __init__(self, image_processor: Any, size: tuple[int, int] | None = None) -> None:
        self.image_processor = image_processor
        self.size = size

    def __call__(self, image: Any) -> Tensor:
        resize = {}
        if self.size is not None:
            resize["size"] = {"height": self.size[0], "width": self.size[1]}
        return self.image_processor(images=image, return_tensors="pt", **resize)["pixel_values"][0]


class TransformersText(TextBackend):
    """A transformers CLIP-family model's text side (``CLIPModel``, ``SiglipModel``,
    ``MetaClip2Model``, ``AltCLIPModel``, ``ChineseCLIPModel``, ``CLIPSegModel``), or the absence
    of one (``CLIPVisionModel``, ``SiglipVisionModel``, ...: the image side only).

    Args:
        model: a transformers model (which image towers are supported is for the adapter,
            :func:`~captum_clipspan.hooked.backends.transformers.transformers_tower_spec`, to
            decide).
        processor: its processor (``.tokenizer`` and ``.image_processor``), or ``None``.
        model_name: the repo id it was loaded from; default: the model's ``name_or_path``.

    Attributes:
        processor: the processor, or ``None``.
        has_text_tower: whether ``model`` encodes texts (a vision-only class does not: its
            tokenizer, text embeddings and temperature raise a ``ValueError`` that says so).

    Raises:
        TypeError: ``model`` is not a transformers model.
    """

    family = "transformers"
    image_prefixes = ("vision_model.", "visual_projection.")

    def __init__(self, model: nn.Module, processor: Any = None,
                 model_name: str | None = None) -> None:
        if not type(model).__module__.startswith("transformers."):
            raise TypeError(f"expected a transformers model (CLIPModel, SiglipModel, "
                            f"CLIPVisionModel, ...), got {type(model).__name__}; wrap open_clip "
                            "models with HookedCLIP.from_open_clip(model).")
        self.has_text_tower = hasattr(model, "get_text_features")
        image_processor = getattr(processor, "image_processor", None)
        preprocess = None
        if image_processor is not None:
            preprocess = ImageProcessorTransform(image_processor,
                                                 _tower_size(image_processor, model.config))
        super().__init__(model, preprocess=preprocess,
                         model_name=model_name or getattr(model, "name_or_path", None) or None)
        self.processor = processor
        self._tokenizer = getattr(processor, "tokenizer", None)

    @property
    def tokenizer(self) -> Any:
        self._require_text_tower("tokenize texts")
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
        tokenizer = self.tokenizer
        text_config = self.model.config.text_config
        # SigLIP was trained on texts padded to the full length (its tokenizer gives no mask).
        padding = "max_length" if text_config.model_type.startswith("siglip") else True
        batch = tokenizer(texts, padding=padding, truncation=True, return_tensors="pt",
                          max_length=_max_text_length(text_config))
        return {key: batch[key].to(self.device) for key in ("input_ids", "attention_mask")
                if key in batch}

    def encode_tokens(self, tokens: dict[str, Tensor]) -> Tensor:
        self._require_text_tower("encode texts")
        return pooled(self.model.get_text_features(**tokens))

    def text_parameters(self) -> dict[str, Tensor]:
        return super().text_parameters() if self.has_text_tower else {}

    @property
    def logit_scale(self) -> Tensor:
        self._require_text_tower("have a learned temperature")
        return super().logit_scale

    def _require_text_tower(self, action: str) -> None:
        if not self.has_text_tower:
            kind = type(self.model).__name__
            whole = kind.replace("VisionModelWithProjection", "Model").replace("VisionModel",
                                                                                "Model")
            raise ValueError(
                f"this HookedCLIP wraps a transformers {kind}, an image tower without a text "
                f"tower, so it cannot {action}. Pass text embeddings (a [T, E] tensor, e.g. "
                f"from the matching {whole}'s get_text_features) instead of strings, or load "
                f"the whole {whole} with HookedCLIP.from_transformers(model, processor).")


def _max_text_length(text_config: Any) -> int:
    """The longest token sequence the text tower takes."""
    length = text_config.max_position_embeddings
    if text_config.model_type == "altclip_text_model":  # RoBERTa: positions start after padding
        length -= text_config.pad_token_id + 1
    return length


def _tower_size(image_processor: Any, config: Any) -> tuple[int, int] | None:
    """The image tower's trained size when the processor resizes to another fixed size without
    a crop (CLIPSeg's processor gives 352 x 352 for its decoder; the tower was trained at 224,
    the only grid the decomposition is exact on), else ``None``."""
    size = getattr(image_processor, "size", None)  # a dict in transformers 4, a SizeDict in 5
    height, width = (size.get(key) if size is not None else None for key in ("height", "width"))
    if height is None or width is None or getattr(image_processor, "do_center_crop", False):
        return None
    trained = getattr(config, "vision_config", config).image_size
    return None if height == width == trained else (trained, trained)


def pooled(output: Any) -> Tensor:
    """The embedding from ``get_text_features``/``get_image_features``: a tensor in transformers
    4.x, a ``ModelOutput`` with it as ``pooler_output`` in 5.x."""
    return output if isinstance(output, Tensor) else output.pooler_output


def load_transformers(model_or_repo_id: nn.Module | str, processor: Any = None,
                      device: str | torch.device = "cpu",
                      dtype: torch.dtype | None = None) -> TransformersText:
    """Wrap a live transformers CLIP-family model, or load one (and its processor unless given)
    by repo id or local folder, offline-safe.

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
        TypeError: not a transformers model; a processor without a tokenizer or image
            processor; a dtype that is neither a floating-point dtype nor its name.
    """
    if isinstance(model_or_repo_id, Path):
        model_or_repo_id = str(model_or_repo_id)
    if not isinstance(model_or_repo_id, (str, nn.Module)):
        raise TypeError(f"model_or_repo_id must be a transformers model (CLIPModel, SiglipModel, "
                        f"...), a Hub repo id or a local folder, got {model_or_repo_id!r}.")
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
                             "give a save_pretrained folder of a CLIP-family model (CLIPModel, "
                             "SiglipModel, ...)."
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
