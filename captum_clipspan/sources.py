"""Image sources and batching: an image folder, a tensor, a Dataset or a DataLoader, read in
batches on the model's device (the cache of their decompositions: :mod:`.cache`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, SequentialSampler, Subset

from .hooked.clip import HookedCLIP
from .validation import batch_labels, check_count

__all__ = ["IMAGE_SUFFIXES", "ImageFolder", "ImageSource", "UnreadableImageError", "as_dataset",
           "iterate_batches", "open_image", "source_length"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
ImageSource = str | Path | Tensor | Dataset | DataLoader
"""What every pass over images accepts: a folder path, a tensor ``[N, 3, H, W]`` of model
inputs, a Dataset of ``(image, label)`` or images, or a DataLoader in a fixed order."""


class UnreadableImageError(OSError):
    """An image file that cannot be decoded: not an image, corrupt, truncated, or larger than
    PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``)."""


def open_image(path: str | Path) -> Any:
    """The image file at ``path`` as an RGB PIL image, decoded now.

    Raises:
        UnreadableImageError: the file cannot be decoded; the message names it and why.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Image.DecompressionBombError as error:
        raise UnreadableImageError(
            f"image {path} is larger than PIL's decompression-bomb limit ({error}); set "
            "PIL.Image.MAX_IMAGE_PIXELS higher if you trust the file.") from None
    except (OSError, SyntaxError, ValueError) as error:  # PIL's plugins raise all three
        raise UnreadableImageError(f"image {path} cannot be read: {error} (not an image, or a "
                                   "corrupt or truncated file).") from None


class ImageFolder(Dataset):
    """Images under a folder, sorted by path; labels from class sub-folders when there are any.

    Args:
        root: the folder. Files directly inside get label ``-1``; files anywhere under a
            sub-folder get the index of that top-level sub-folder's name among ``classes``
            (sorted), like torchvision's ``ImageFolder``. Consumers that meet these labels with a
            classifier match them to its class names by name
            (:func:`~captum_clipspan.validation.match_classes`).
        transform: maps a PIL image to a tensor ``[3, H, W]`` (e.g. ``clip.preprocess``).

    Attributes:
        files: the image paths, sorted.
        classes: the sorted names of the class sub-folders (``[]`` for a flat folder).
    """

    def __init__(self, root: str | Path, transform: Any) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"image folder {str(root)!r} does not exist or is not a folder.")
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {self.root}.")
        self.classes = sorted({name for name in map(self._class_of, self.files) if name})
        self.transform = transform

    def _class_of(self, file: Path) -> str | None:
        parts = file.relative_to(self.root).parts
        return parts[0] if len(parts) > 1 else None

    def __len__(self) -> int:
        return len(self.files)

    def label(self, index: int) -> int:
        name = self._class_of(self.files[index])
        return -1 if name is None else self.classes.index(name)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(open_image(self.files[index])), self.label(index)


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
    batch_size = check_count(batch_size, "batch_size")
    start = check_count(start, "start", minimum=0)
    num_workers = check_count(num_workers, "num_workers", minimum=0)
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
        images, labels = split_batch(batch)
        if skip >= images.shape[0]:
            skip -= images.shape[0]
            continue
        images, labels, skip = images[skip:], labels[skip:], 0
        yield images.to(device=clip.device, dtype=clip.dtype), labels


def split_batch(batch: Any) -> tuple[Tensor, Tensor]:
    """A batch of a source -> ``(images [b, 3, H, W], labels [b])`` (see
    :func:`~captum_clipspan.validation.batch_labels` for what a label may be)."""
    if isinstance(batch, (list, tuple)):
        images, labels = batch[0], batch[1] if len(batch) > 1 else None
    else:
        images, labels = batch, None
    if not isinstance(images, Tensor):
        raise TypeError(f"a batch must hold images as a tensor [b, 3, H, W], got "
                        f"{type(images).__name__}; give the Dataset a transform to tensors.")
    return images, batch_labels(labels, images.shape[0] if images.dim() else 0)


def source_length(clip: HookedCLIP, data: ImageSource) -> int:
    return dataset_length(as_dataset(clip, data))


def dataset_length(source: Dataset | DataLoader) -> int:
    return len(source.dataset) if isinstance(source, DataLoader) else len(source)
