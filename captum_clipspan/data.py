"""Passes over image datasets: batching any image source, and a resumable decomposition cache.

The cache is a folder of ``.npy`` files written through memory maps, one batch at a time, so memory
stays bounded by a batch whatever the dataset size. After every batch the arrays are flushed and
``progress.json`` is replaced atomically; an interrupted pass resumes from the last committed batch
and ends with the same contents as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, SequentialSampler, Subset

from .decomposition import CONVENTIONS, decompose, resolve_layers
from .hooked.clip import HookedCLIP

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
CACHE_VERSION = 1
ImageSource = str | Path | Tensor | Dataset | DataLoader


class ImageFolder(Dataset):
    """Images under a folder, sorted by path; labels from class sub-folders when there are any.

    Args:
        root: the folder. Files directly inside get label ``-1``; files in sub-folders get the
            index of their sub-folder's name among ``classes`` (sorted), like torchvision's
            ``ImageFolder``.
        transform: maps a PIL image to a tensor ``[3, H, W]`` (e.g. ``clip.preprocess``).
    """

    def __init__(self, root: str | Path, transform: Any) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"image folder {str(root)!r} does not exist or is not a folder.")
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {self.root}.")
        self.classes = sorted({p.parent.name for p in self.files if p.parent != self.root})
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def label(self, index: int) -> int:
        parent = self.files[index].parent
        return -1 if parent == self.root else self.classes.index(parent.name)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from PIL import Image

        with Image.open(self.files[index]) as image:
            return self.transform(image.convert("RGB")), self.label(index)


def as_dataset(clip: HookedCLIP, data: ImageSource) -> Dataset | DataLoader:
    """Accept an image folder path, a tensor ``[N, 3, H, W]``, a Dataset or a DataLoader."""
    if isinstance(data, (str, Path)):
        if not Path(data).is_dir():
            raise ValueError(f"image folder {str(data)!r} does not exist or is not a folder.")
        if clip.preprocess is None:
            raise ValueError("reading an image folder needs the model's preprocess transform; "
                             "this HookedCLIP has none.")
        return ImageFolder(data, clip.preprocess)
    if isinstance(data, Tensor):
        return torch.utils.data.TensorDataset(data)
    if isinstance(data, DataLoader):
        sampler = getattr(data.batch_sampler, "sampler", data.sampler)
        if not isinstance(sampler, SequentialSampler):
            raise ValueError("the DataLoader must visit the data in a fixed order (shuffle=False) "
                             "so that a pass can resume and labels stay aligned.")
        return data
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        return data
    raise TypeError(f"images must be an image folder path, a tensor [N, 3, H, W], a Dataset with "
                    f"__len__ or a DataLoader; got {type(data).__name__}.")


def iterate_batches(clip: HookedCLIP, data: ImageSource, batch_size: int = 64,
                    start: int = 0, num_workers: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(images [b, 3, H, W], labels [b])`` from example ``start`` on (labels ``-1`` when
    the source has none), on the model's device and dtype."""
    source = as_dataset(clip, data)
    if isinstance(source, DataLoader):
        batches: Any = source
        skip = start
    else:
        indices = range(start, len(source))
        batches = DataLoader(Subset(source, indices), batch_size=batch_size,
                             num_workers=num_workers)
        skip = 0
    for batch in batches:
        images, labels = _split_batch(batch)
        if skip >= images.shape[0]:
            skip -= images.shape[0]
            continue
        images, labels, skip = images[skip:], labels[skip:], 0
        yield images.to(device=clip.device, dtype=clip.dtype), labels


def _split_batch(batch: Any) -> tuple[Tensor, Tensor]:
    if isinstance(batch, (list, tuple)):
        images = batch[0]
        labels = torch.as_tensor(batch[1]) if len(batch) > 1 else None
    else:
        images, labels = batch, None
    if not isinstance(images, Tensor):
        raise TypeError(f"a batch must hold images as a tensor [b, 3, H, W], got "
                        f"{type(images).__name__}; give the Dataset a transform to tensors.")
    if labels is None or labels.dim() != 1 or labels.is_floating_point():
        labels = torch.full((images.shape[0],), -1, dtype=torch.long)
    return images, labels.long()


def source_length(clip: HookedCLIP, data: ImageSource) -> int:
    source = as_dataset(clip, data)
    return len(source.dataset) if isinstance(source, DataLoader) else len(source)


def model_fingerprint(clip: HookedCLIP) -> str:
    """A short hash of the image tower's shape and a few of its weights, to refuse mixing models."""
    visual = clip.visual.model
    digest = hashlib.sha256()
    digest.update(repr((clip.visual.n_layers, clip.visual.n_heads, clip.visual.d_model,
                        clip.visual.output_dim, clip.visual.image_size)).encode())
    last = visual.transformer.resblocks[-1]
    for tensor in (visual.proj, visual.class_embedding, visual.positional_embedding,
                   last.attn.out_proj.weight, visual.ln_post.weight):
        if tensor is not None:
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _write_json_atomic(path: Path, value: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value, indent=1))
    os.replace(temporary, path)


@dataclass
class DecompositionCache:
    """A memory-mapped cache of per-image direct effects (normalized, joint space).

    Attributes:
        path: the cache folder.
        heads: ``[N, L_s, H, E]`` per-head terms of the cached layers.
        attns: ``[N, L, E]`` whole MSA layers; ``mlps``: ``[N, L, E]``; ``embed``: ``[N, E]``.
        image_embeds: ``[N, E]`` unit-norm image embeddings (what the terms sum to).
        labels: ``[N]`` int labels (``-1`` where the source had none).
        layers: the model layers of ``heads``; ``convention``: the decomposition convention.
        attn_biases, ln_bias: ``[N, L, E]`` and ``[N, E]`` for the ``"centered"`` convention.
        classes: class names of an image folder with class sub-folders, else ``[]``.
    """

    path: Path
    meta: dict
    heads: np.ndarray
    attns: np.ndarray
    mlps: np.ndarray
    embed: np.ndarray
    image_embeds: np.ndarray
    labels: np.ndarray
    attn_biases: np.ndarray | None = None
    ln_bias: np.ndarray | None = None

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.meta["layers"])

    @property
    def convention(self) -> str:
        return self.meta["convention"]

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("classes", []))

    @property
    def n_heads(self) -> int:
        return self.heads.shape[2]

    def __len__(self) -> int:
        return self.heads.shape[0]

    @classmethod
    def open(cls, path: str | Path, allow_partial: bool = False) -> DecompositionCache:
        """Open a cache folder read-only; a partial one only with ``allow_partial``."""
        path = Path(path)
        if not (path / "meta.json").is_file():
            raise ValueError(f"{path} is not a decomposition cache (no meta.json).")
        meta = json.loads((path / "meta.json").read_text())
        done = json.loads((path / "progress.json").read_text())["done"]
        if done < meta["n"] and not allow_partial:
            raise ValueError(f"the cache at {path} is incomplete ({done} of {meta['n']} "
                             "images); run cache_decomposition again to resume it.")
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r")[:done]
                  for name in meta["fields"]}
        return cls(path=path, meta=meta, **arrays)

    def check_model(self, clip: HookedCLIP) -> None:
        """Raise unless this cache was written by the same model weights."""
        if self.meta["fingerprint"] != model_fingerprint(clip):
            raise ValueError(f"the cache at {self.path} was written by another model "
                             f"({self.meta.get('model_name')!r}, fingerprint "
                             f"{self.meta['fingerprint']}); use a cache of this model.")

    def head(self, layer: int, head: int) -> np.ndarray:
        """One head's direct effects ``[N, E]`` (``layer`` is a model layer index)."""
        layer = layer % self.attns.shape[1]
        if layer not in self.layers:
            raise ValueError(f"layer {layer} is not cached; cached layers: {list(self.layers)}.")
        return self.heads[:, self.layers.index(layer), head]


def cache_decomposition(
    clip: HookedCLIP,
    images: ImageSource,
    path: str | Path,
    layers: int | Sequence[int] | None = None,
    convention: str = "reference",
    batch_size: int = 64,
    dtype: str = "float16",
    show_progress: bool = True,
    num_workers: int = 0,
) -> DecompositionCache:
    """Decompose every image of a dataset into an on-disk, memory-mapped cache; resumable.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        images: an image folder path, a tensor ``[N, 3, H, W]``, a Dataset (items: image tensor or
            ``(image, label)``) or a DataLoader in a fixed order yielding images or
            ``(images, labels)``.
        path: the cache folder (created if missing). If it holds an unfinished pass of the same
            model and settings, the pass resumes there.
        layers: layers whose per-head terms are stored (``None``: all).
        convention: ``"reference"`` or ``"centered"``.
        batch_size: images per forward pass (ignored for a DataLoader).
        dtype: storage dtype of the terms, ``"float16"`` or ``"float32"`` (embeddings are fp32).
        show_progress: show a tqdm progress bar.
        num_workers: DataLoader workers for folders and Datasets.

    Returns:
        The finished :class:`DecompositionCache`.

    Examples::

        >>> cache = cs.cache_decomposition(clip, "images/", "cache/", layers=[-4, -3, -2, -1])
        >>> cache.heads.shape   # [N, 4, H, E]
    """
    from tqdm.auto import tqdm

    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}.")
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}.")
    vit, path = clip.visual, Path(path)
    chosen = resolve_layers(layers, vit.n_layers)
    n = source_length(clip, images)
    if n == 0:
        raise ValueError("the image source is empty.")
    meta = _cache_meta(clip, images, n, chosen, convention, dtype)
    done = _prepare_folder(path, meta)
    arrays = {}
    for name, (dt, shape) in meta["fields"].items():
        file = path / f"{name}.npy"
        arrays[name] = np.lib.format.open_memmap(file, mode="r+" if file.exists() else "w+",
                                                 dtype=np.dtype(dt), shape=tuple(shape))
    progress = tqdm(total=n, initial=done, unit="img", disable=not show_progress,
                    desc="decomposing")
    try:
        for batch, labels in iterate_batches(clip, images, batch_size, done, num_workers):
            parts = decompose(clip, batch, granularity="head", convention=convention,
                              layers=chosen)
            stop = done + batch.shape[0]
            values = {"heads": parts.heads, "attns": parts.attns, "mlps": parts.mlps,
                      "embed": parts.embed, "image_embeds": parts.image_embed,
                      "labels": labels, "attn_biases": parts.attn_biases,
                      "ln_bias": parts.ln_bias}
            for name, array in arrays.items():
                array[done:stop] = values[name].cpu().numpy()
                array.flush()
            done = stop
            _write_json_atomic(path / "progress.json", {"done": done})
            progress.update(batch.shape[0])
    finally:
        progress.close()
        del arrays
    return DecompositionCache.open(path)


def _cache_meta(clip: HookedCLIP, images: ImageSource, n: int, layers: tuple[int, ...],
                convention: str, dtype: str) -> dict:
    vit = clip.visual
    width, n_layers = vit.output_dim, vit.n_layers
    fields = {
        "heads": (dtype, [n, len(layers), vit.n_heads, width]),
        "attns": (dtype, [n, n_layers, width]),
        "mlps": (dtype, [n, n_layers, width]),
        "embed": (dtype, [n, width]),
        "image_embeds": ("float32", [n, width]),
        "labels": ("int64", [n]),
    }
    if convention == "centered":
        fields["attn_biases"] = (dtype, [n, n_layers, width])
        fields["ln_bias"] = (dtype, [n, width])
    source = as_dataset(clip, images)
    return {"version": CACHE_VERSION, "n": n, "layers": list(layers), "convention": convention,
            "dtype": dtype, "fields": fields, "fingerprint": model_fingerprint(clip),
            "model_name": clip.model_name, "classes": getattr(source, "classes", [])}


def _prepare_folder(path: Path, meta: dict) -> int:
    """Create the folder or check that it holds a compatible pass; return images already done."""
    if (path / "meta.json").is_file():
        existing = json.loads((path / "meta.json").read_text())
        keys = ["version", "n", "layers", "convention", "dtype", "fingerprint"]
        different = [k for k in keys if existing.get(k) != meta[k]]
        if different:
            raise ValueError(f"{path} holds a cache with other settings ({', '.join(different)} "
                             "differ: another model, dataset size, layers, convention or dtype); "
                             "use another path or delete it.")
        progress = path / "progress.json"
        return json.loads(progress.read_text())["done"] if progress.is_file() else 0
    if path.exists() and any(path.iterdir()):
        raise ValueError(f"{path} exists and is not an empty folder or a decomposition cache.")
    path.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(path / "progress.json", {"done": 0})
    _write_json_atomic(path / "meta.json", meta)
    return 0
