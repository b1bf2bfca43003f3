"""What a cache was computed from: a hash of the image tower's weights, a digest per row of its
image (the file's path, size and mtime for an image folder, else the image's values and label), and
digests of an image source for the processes of a pass to compare."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..hooked.clip import HookedCLIP
from ..sources import ImageFolder
from .batches import Rows, loaded_pieces

DIGEST_SIZE = 16
_HASH_CHUNK = 1 << 24  # bytes hashed at a time: bounds the host copy of a GPU tensor


def _hash_tensor(digest: Any, tensor: Tensor) -> None:
    """Feed a tensor's dtype, shape and raw bytes to ``digest``, one chunk at a time."""
    tensor = tensor.detach()
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    flat = tensor.contiguous().reshape(-1).view(torch.uint8)
    for start in range(0, flat.numel(), _HASH_CHUNK):
        digest.update(flat[start:start + _HASH_CHUNK].cpu().numpy())


def model_fingerprint(clip: HookedCLIP) -> str:
    """A hash of the image tower: its module types and every parameter and buffer, streamed.

    It reads every weight once (about a second per GB on one CPU core) and copies none but a
    chunk at a time, so any change to any weight, fine-tuned early layers included, gives another
    fingerprint.
    """
    vit, tower = clip.visual, clip.visual.model
    digest = hashlib.sha256()
    digest.update(repr((vit.n_layers, vit.n_heads, vit.output_dim, tuple(vit.image_size))).encode())
    digest.update(repr([(name, type(module).__name__)
                        for name, module in tower.named_modules()]).encode())
    for kind, named in (("parameter", tower.named_parameters()), ("buffer", tower.named_buffers())):
        for name, tensor in named:
            digest.update(f"{kind} {name}".encode())
            _hash_tensor(digest, tensor)
    return digest.hexdigest()[:16]


def file_digests(folder: ImageFolder, start: int, stop: int) -> np.ndarray:
    """Row digests ``[stop - start, DIGEST_SIZE]`` of a folder's files from path, size and mtime."""
    rows = np.empty((stop - start, DIGEST_SIZE), np.uint8)
    for row, file in enumerate(folder.files[start:stop]):
        stat = file.stat()
        key = f"{file.relative_to(folder.root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}"
        rows[row] = np.frombuffer(hashlib.sha256(key.encode()).digest()[:DIGEST_SIZE], np.uint8)
    return rows


def image_digests(images: Tensor, labels: Tensor) -> np.ndarray:
    """Row digests ``[b, DIGEST_SIZE]`` of each image's raw values and its label."""
    rows = np.empty((images.shape[0], DIGEST_SIZE), np.uint8)
    images = images.detach().cpu()
    for row in range(images.shape[0]):
        digest = hashlib.sha256(f"label {int(labels[row])}".encode())
        _hash_tensor(digest, images[row])
        rows[row] = np.frombuffer(digest.digest()[:DIGEST_SIZE], np.uint8)
    return rows


def batch_digests(source: Dataset | DataLoader, start: int, images: Tensor,
                  labels: Tensor) -> np.ndarray:
    """Row digests of the batch of rows ``start..start + b`` of ``source``."""
    if isinstance(source, ImageFolder):
        return file_digests(source, start, start + images.shape[0])
    return image_digests(images, labels)


def source_digest(source: Dataset | DataLoader) -> str | None:
    """A digest of every image of ``source`` for processes to compare, where it costs no image
    read: every file's path, size and mtime for an image folder, every value of a TensorDataset;
    ``None`` for other sources (see :func:`pieces_digest`)."""
    digest = hashlib.sha256()
    if isinstance(source, ImageFolder):
        digest.update(file_digests(source, 0, len(source)).tobytes())
    elif isinstance(source, TensorDataset):
        for tensor in source.tensors:
            _hash_tensor(digest, tensor)
    else:
        return None
    return digest.hexdigest()[:16]


def pieces_digest(clip: HookedCLIP, source: Dataset | DataLoader, pieces: Rows) -> str:
    """A digest of the images and labels of the rows ``pieces`` of ``source``, read once more."""
    digest = hashlib.sha256()
    for _, _, images, labels in loaded_pieces(clip, source, pieces, num_workers=0):
        digest.update(image_digests(images, labels).tobytes())
    return digest.hexdigest()[:16]
