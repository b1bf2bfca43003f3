"""A tiny open_clip CLIP trained on synthetic scenes, shipped as package data.

The vision tower is a plain open_clip ViT (4 layers, 4 heads of width 32, patch 8 on 64x64
images, class-token pooling, GELU, LayerNorm); the text tower is an open_clip text transformer
over :class:`~captum_clipspan.toy.tokenizer.WordTokenizer` ids with argmax (end-of-text)
pooling. ``scripts/train_toy_clip.py`` trains it on :mod:`captum_clipspan.toy.scenes` scenes and
writes ``toy_clip.safetensors``, ``toy_clip.json`` and ``toy_tokenizer.json`` next to this file.

Examples::

    >>> from captum_clipspan.toy import load_toy_clip
    >>> from captum_clipspan.toy.scenes import make_scenes
    >>> model, tokenizer, preprocess = load_toy_clip()
    >>> scenes = make_scenes(2, seed=1)
    >>> images = torch.stack([preprocess(im) for im in scenes.images])
    >>> model.encode_image(images).shape, model.encode_text(tokenizer(["a red circle"])).shape
    (torch.Size([2, 64]), torch.Size([1, 64]))
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from ..text import ZeroShotClassifier
from .scenes import ATTRIBUTES, FAMILIES, make_scenes, zero_shot_prompts
from .tokenizer import WordTokenizer

__all__ = [
    "TOY_MODELS",
    "TOY_MODEL_CONFIG",
    "TOY_PREPROCESS_CONFIG",
    "TOY_WEIGHTS",
    "build_toy_clip",
    "load_toy_clip",
    "toy_clip_info",
    "toy_preprocess",
    "toy_world",
    "zero_shot_accuracy",
]

_HERE = Path(__file__).resolve().parent
TOY_MODELS: dict[str, Path] = {"toy": _HERE, "toy-spurious": _HERE / "spurious",
                               "toy-clutter": _HERE / "clutter",
                               "toy-clutter-spurious": _HERE / "clutter-spurious"}
"""The shipped toys by name: the folder holding each one's weights, tokenizer and record. The
first generation (``"toy"``, ``"toy-spurious"``: 4 layers x 4 heads) saw the simple world; the
second (``"toy-clutter"``, ``"toy-clutter-spurious"``: 6 layers x 8 heads) the clutter world
(:data:`~captum_clipspan.toy.scenes.WORLDS`), where colour alone cannot find the objects."""
TOY_WEIGHTS = _HERE / "toy_clip.safetensors"
TOY_INFO = _HERE / "toy_clip.json"
TOY_TOKENIZER = _HERE / "toy_tokenizer.json"

TOY_MODEL_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 64,
        "patch_size": 8,
        "layers": 4,
        "width": 128,
        "head_width": 32,
        "mlp_ratio": 4.0,
        "pool_type": "tok",
    },
    "text_cfg": {
        "context_length": 20,
        "vocab_size": 50,
        "width": 64,
        "heads": 4,
        "layers": 2,
        "mlp_ratio": 4.0,
        "pool_type": "argmax",
    },
}
"""Keyword arguments of ``open_clip.model.CLIP`` for the toy model (GELU, LayerNorm)."""

TOY_PREPROCESS_CONFIG: dict[str, Any] = {
    "image_size": 64,
    "mean": (0.510, 0.466, 0.435),
    "std": (0.301, 0.304, 0.331),
}
"""Input resolution and per-channel normalization (statistics of the synthetic scenes)."""


def build_toy_clip(config: dict[str, Any] | None = None) -> open_clip.model.CLIP:
    """A randomly initialised toy CLIP with ``config`` (default :data:`TOY_MODEL_CONFIG`)."""
    return open_clip.model.CLIP(**copy.deepcopy(TOY_MODEL_CONFIG if config is None else config))


def toy_preprocess(image: Any) -> torch.Tensor:
    """Map an image to the normalized tensor the toy CLIP expects.

    Args:
        image: a PIL image, a uint8 numpy array ``[H, W, 3]``, or a float tensor ``[3, H, W]``
            (or ``[N, 3, H, W]``) in ``[0, 1]`` (a uint8 tensor is scaled by 1/255).

    Returns:
        Float tensor ``[3, 64, 64]`` (``[N, 3, 64, 64]`` for a batch), resized bilinearly when
        the input has another size, then normalized with :data:`TOY_PREPROCESS_CONFIG`.
    """
    if isinstance(image, torch.Tensor):
        x = image
    else:
        arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {arr.shape}")
        x = torch.from_numpy(np.array(arr)).permute(2, 0, 1)  # copy: PIL arrays are read-only
    if not x.is_floating_point():
        x = x.float() / 255.0
    single = x.ndim == 3
    if single:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a tensor [3, H, W] or [N, 3, H, W], got {tuple(x.shape)}")
    size = TOY_PREPROCESS_CONFIG["image_size"]
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    mean = torch.tensor(TOY_PREPROCESS_CONFIG["mean"], dtype=x.dtype, device=x.device)
    std = torch.tensor(TOY_PREPROCESS_CONFIG["std"], dtype=x.dtype, device=x.device)
    x = (x - mean[:, None, None]) / std[:, None, None]
    return x[0] if single else x


def _toy_folder(name: str) -> Path:
    if name not in TOY_MODELS:
        raise ValueError(f"unknown toy {name!r}; the shipped toys are {sorted(TOY_MODELS)}.")
    return TOY_MODELS[name]


def load_toy_clip(
    device: str | torch.device = "cpu", name: str = "toy",
) -> tuple[open_clip.model.CLIP, WordTokenizer, Callable[[Any], torch.Tensor]]:
    """Load a shipped toy CLIP.

    The architecture is read from the toy's training record ``toy_clip.json``, so weights and
    config cannot drift apart.

    Args:
        device: where to put the model.
        name: which toy (:data:`TOY_MODELS`): ``"toy"`` (independent attributes) or
            ``"toy-spurious"`` (shape and background texture co-occur 95% of the time, see
            :mod:`captum_clipspan.toy.spurious`).

    Returns:
        ``(model, tokenizer, preprocess)``: the open_clip ``CLIP`` in eval mode (fp32), its
        :class:`WordTokenizer`, and :func:`toy_preprocess`.

    Raises:
        FileNotFoundError: if the weights were not trained/shipped
            (run ``scripts/train_toy_clip.py``).
    """
    from safetensors.torch import load_file

    folder = _toy_folder(name)
    weights = folder / TOY_WEIGHTS.name
    if not weights.exists():
        raise FileNotFoundError(f"{weights} is missing; train it with scripts/train_toy_clip.py")
    model = build_toy_clip(toy_clip_info(name)["model_config"])
    model.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
    model.to(device).eval()
    tokenizer_file = folder / TOY_TOKENIZER.name
    tokenizer = WordTokenizer.load(tokenizer_file) if tokenizer_file.exists() else WordTokenizer()
    return model, tokenizer, toy_preprocess


def toy_clip_info(name: str = "toy") -> dict[str, Any]:
    """A toy's training record ``toy_clip.json`` (config, settings, zero-shot accuracy)."""
    return json.loads((_toy_folder(name) / TOY_INFO.name).read_text())


def toy_world(name: str = "toy") -> str:
    """The world a toy was trained on (:data:`~captum_clipspan.toy.scenes.WORLDS`), from its
    record: evaluate it on held-out scenes of that world."""
    return toy_clip_info(name).get("world", "simple")


@torch.no_grad()
def zero_shot_accuracy(
    model: open_clip.model.CLIP,
    tokenizer: Callable[[list[str]], torch.Tensor],
    preprocess: Callable[[Any], torch.Tensor],
    n: int = 1000,
    seed: int = 12345,
    families: Sequence[str] | None = None,
    ensemble: bool = False,
    batch_size: int = 250,
    world: str = "simple",
) -> dict[str, float]:
    """Zero-shot attribute classification accuracy on held-out synthetic scenes.

    For family ``F``, each scene is classified among ``ATTRIBUTES[F]`` by cosine similarity
    with prompts that name only that attribute (:func:`~captum_clipspan.toy.scenes.
    zero_shot_prompts`: ``"a red object"``, ``"a photo of an object on the left"``, ...).

    Args:
        model: an open_clip CLIP.
        tokenizer: maps a list of texts to token ids.
        preprocess: maps a float image tensor ``[3, H, W]`` in ``[0, 1]`` to model input.
        n: number of scenes.
        seed: scene seed (training uses other seeds).
        families: families to score; all by default.
        ensemble: average the normalized prompt embeddings of the templates (CLIP's prompt
            ensembling) instead of averaging the per-template accuracies.
        batch_size: image batch size.
        world: the scenes' world (:data:`~captum_clipspan.toy.scenes.WORLDS`).

    Returns:
        ``{family: accuracy}`` with accuracies in ``[0, 1]``.
    """
    families = list(families or FAMILIES)
    device = next(model.parameters()).device
    scenes = make_scenes(n, seed=seed, split="validation", world=world)
    images = scenes.tensors()
    feats = []
    for i in range(0, n, batch_size):
        x = torch.stack([preprocess(im) for im in images[i : i + batch_size]]).to(device)
        feats.append(model.encode_image(x, normalize=True))
    image_features = torch.cat(feats)
    result: dict[str, float] = {}
    for family in families:
        values = ATTRIBUTES[family]
        prompts = [zero_shot_prompts(family, v) for v in values]  # [V][T]
        n_templates = len(prompts[0])
        flat = [p for per_value in prompts for p in per_value]
        text = model.encode_text(tokenizer(flat).to(device), normalize=True)
        text = text.view(len(values), n_templates, -1)
        labels = scenes.labels(family)
        classifiers = [text.mean(1)] if ensemble else [text[:, t] for t in range(n_templates)]
        result[family] = float(np.mean([
            ZeroShotClassifier.from_embeddings(classes, values).accuracy(image_features, labels)
            for classes in classifiers]))
    return result
