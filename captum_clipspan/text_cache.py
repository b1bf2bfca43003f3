"""Text embeddings encoded once per model and text bank, cached on disk, with a progress bar.

Encoding a bank of thousands of texts takes minutes on a CPU (3,930 texts: 13.6 minutes with
ViT-B-16), so :func:`encode_texts_cached` stores the result under a key made of a fingerprint of
the text tower's weights and the bank's content: a second run with the same model and texts loads
it in a fraction of a second, and a change to either encodes anew. Each file holds a checksum of
its key and embeddings: a damaged, truncated or altered file is encoded anew and replaced, and a
file that cannot be written (a full disk) is left out with a warning. The cache folder is
``$CLIPSPAN_CACHE_DIR`` when set, else ``~/.cache/captum_clipspan`` (``$XDG_CACHE_HOME`` is
honoured).
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .validation import check_count, check_texts

__all__ = ["cache_dir", "encode_texts_cached", "text_tower_fingerprint"]

CACHE_ENV = "CLIPSPAN_CACHE_DIR"


def cache_dir() -> Path:
    """The folder of captum_clipspan's user caches (``$CLIPSPAN_CACHE_DIR`` overrides it)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "captum_clipspan"


def text_tower_fingerprint(clip: Any) -> str:
    """A SHA-256 of the weights and buffers the text backend names as its text tower's
    (:meth:`~captum_clipspan.hooked.backends.text.TextBackend.text_parameters`: names, shapes,
    values) and of the tokenizer's type: the part of a model that decides its text embeddings.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP` (or anything with a ``.text`` backend).
    """
    digest = hashlib.sha256(type(clip.text.tokenizer).__qualname__.encode())
    state = clip.text.text_parameters()
    for name in sorted(state):
        tensor = state[name]
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        value = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def _bank_digest(texts: Sequence[str], normalize: bool) -> str:
    digest = hashlib.sha256(f"normalize={normalize}".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def encode_texts_cached(clip: Any, texts: Sequence[str], normalize: bool = True,
                        batch_size: int = 256, directory: str | Path | None = None,
                        show_progress: bool = True, use_cache: bool = True) -> Tensor:
    """``clip.encode_text(texts)`` ``[T, E]`` (on CPU), loaded from the disk cache when this
    model's text tower has encoded these texts before, else encoded with a progress bar and saved.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP` (or any model with a ``.text`` backend and
            ``.encode_text``).
        texts: the texts, in order (the order is part of the key).
        normalize: unit-norm embeddings (as ``encode_text``'s default).
        batch_size: texts per forward pass of the text tower.
        directory: the cache folder; default: :func:`cache_dir` ``/ "text_embeddings"``.
        show_progress: show a tqdm bar while encoding.
        use_cache: read and write the disk cache; ``False`` only encodes.

    Returns:
        The embeddings ``[T, E]`` in the text tower's dtype, on CPU.
    """
    from tqdm.auto import tqdm

    texts = check_texts(texts, single=False)
    batch_size = check_count(batch_size, "batch_size")
    path = key = None
    if use_cache:
        folder = Path(directory) if directory is not None else cache_dir() / "text_embeddings"
        key = hashlib.sha256((text_tower_fingerprint(clip) + _bank_digest(texts, normalize))
                             .encode()).hexdigest()[:32]
        path = folder / f"{key}.pt"
        cached = _load(path, key, len(texts))
        if cached is not None:
            return cached
    chunks = []
    with tqdm(total=len(texts), desc="encoding texts", unit="text",
              disable=not show_progress) as progress:
        for start in range(0, len(texts), batch_size):
            batch = texts[start:start + batch_size]
            chunks.append(clip.encode_text(batch, normalize=normalize).cpu())
            progress.update(len(batch))
    embeddings = torch.cat(chunks)
    if path is not None and key is not None:
        _store(path, key, embeddings)
    return embeddings


def _checksum(key: str, embeddings: Tensor) -> str:
    """A SHA-256 of the key and the embeddings' dtype, shape and bytes."""
    digest = hashlib.sha256(f"{key}:{embeddings.dtype}:{tuple(embeddings.shape)}".encode())
    digest.update(embeddings.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _load(path: Path, key: str, count: int) -> Tensor | None:
    """The embeddings ``[count, E]`` stored under ``key``, or ``None`` when the file is missing,
    damaged, of another format, or not what was written for this key (its checksum differs)."""
    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():  # torch's notes on a foreign pickle: it is replaced
            warnings.simplefilter("ignore")
            stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 (a damaged file raises one of many types; it is replaced)
        return None
    embeddings = stored.get("embeddings") if isinstance(stored, dict) else None
    if not isinstance(embeddings, Tensor) or embeddings.ndim != 2 or len(embeddings) != count:
        return None
    return embeddings if stored.get("checksum") == _checksum(key, embeddings) else None


def _store(path: Path, key: str, embeddings: Tensor) -> None:
    """Write the embeddings and their checksum atomically (a reader sees the old file or the
    new one); on failure (a full disk, a read-only folder) warn and leave no temporary file."""
    partial = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"embeddings": embeddings, "checksum": _checksum(key, embeddings)}, partial)
        os.replace(partial, path)
    except (OSError, RuntimeError) as error:  # torch.save on a full disk: a RuntimeError
        partial.unlink(missing_ok=True)
        reason = getattr(error, "strerror", None) or error
        warnings.warn(f"the text embeddings could not be written to {path} ({reason}); they "
                      "were encoded but not cached.", stacklevel=3)
