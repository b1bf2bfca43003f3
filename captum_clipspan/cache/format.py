"""The on-disk format of a cache folder: its file names, ``meta.json`` (the settings, the model's
fingerprint, the image source and every array's dtype and shape) and the checks that the files are
what it says."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from ..decomposition import PER_IMAGE_FIELDS
from ..hooked.clip import HookedCLIP
from ..sources import ImageFolder
from .fingerprint import DIGEST_SIZE, model_fingerprint

# 3: the embeddings array is "image_embed" (was "image_embeds"); 4: a checksum per row of every
# array, in "checksums"
CACHE_VERSION = 4

META_FILE, PROGRESS_FILE, LOCK_FILE = "meta.json", "progress.json", "lock"
CHECKSUMS = "checksums"  # [N, arrays]: a checksum per row of every other array, in meta's order
FIELDS = (*PER_IMAGE_FIELDS, "labels", "digests", CHECKSUMS)  # every array a cache may hold
GRANULARITIES = ("head", "token")
# Per-process files of a pass under torch.distributed: progress of rank r and the lock it holds.
RANK_FILE_PATTERN = re.compile(r"progress\.rank\d+\.(json|tmp)|lock\.rank\d+")
# The files a cache folder may hold, progress first so that removing them one by one never leaves
# a progress.json without its arrays; overwrite=True deletes these and nothing else.
OWNED_FILES = (PROGRESS_FILE, "progress.tmp", META_FILE, "meta.tmp",
               *(f"{name}.npy" for name in FIELDS))
META_KEYS = ("version", "n", "layers", "convention", "dtype", "fields", "fingerprint", "classes",
             "source")
_INFO_KEYS = ("model_name", "root")  # informational: the rows do not depend on them
REBUILD = ("pass overwrite=True to cache_decomposition to rebuild the cache, or use a new "
           "folder.")


def write_json_atomic(path: Path, value: dict) -> None:
    """Write ``value`` to ``path`` through a synced temporary file, so a reader sees the old file
    or the new one, never a part of it."""
    temporary = path.with_suffix(".tmp")
    try:
        with open(temporary, "w") as handle:
            json.dump(value, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)  # a full disk leaves the old file, and nothing else
        raise


def pass_identity(meta: dict) -> str:
    """A digest of everything the rows depend on: ``meta`` less its informational keys."""
    core = {key: value for key, value in meta.items() if key not in _INFO_KEYS}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]


class DamagedFile(ValueError):
    """A missing or unreadable ``meta.json`` or ``progress.json``; the message says what to do."""

    def __init__(self, file: Path, why: str) -> None:
        remedy = ("run cache_decomposition again with the same model, images and settings to "
                  "restore it, or " + REBUILD) if file.name == META_FILE else REBUILD
        super().__init__(f"the cache file {file} is {why}; {remedy}")


def read_json(file: Path) -> dict:
    """The JSON object in ``file``; a :class:`DamagedFile` if it is unreadable or not an object."""
    try:
        value = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DamagedFile(file, f"damaged (not readable JSON: {error})") from None
    if not isinstance(value, dict):
        raise DamagedFile(file, f"damaged (a JSON {type(value).__name__}, not an object)")
    return value


def cache_meta(clip: HookedCLIP, source: Dataset | DataLoader, n: int, layers: tuple[int, ...],
               convention: str, dtype: str, granularity: str = "head") -> dict:
    """The ``meta.json`` of a pass of ``clip`` over the ``n`` images of ``source``."""
    vit = clip.visual
    width, n_layers = vit.output_dim, vit.n_layers
    fields = {
        "heads": (dtype, [n, len(layers), vit.n_heads, width]),
        "attns": (dtype, [n, n_layers, width]),
        "mlps": (dtype, [n, n_layers, width]),
        "embed": (dtype, [n, width]),
        "image_embed": ("float32", [n, width]),
        "labels": ("int64", [n]),
        "digests": ("uint8", [n, DIGEST_SIZE]),
    }
    if convention == "centered":
        fields["attn_biases"] = (dtype, [n, n_layers, width])
        fields["ln_bias"] = (dtype, [n, width])
    if vit.pool is not None and vit.pool.has_mlp:
        fields["pool_mlp"] = (dtype, [n, width])
    if granularity == "token":
        fields["tokens"] = (dtype, [n, len(layers), vit.n_tokens, vit.n_heads, width])
    fields[CHECKSUMS] = ("uint64", [n, len(fields)])
    if isinstance(source, ImageFolder):
        record = {"kind": "folder",
                  "files": [file.relative_to(source.root).as_posix() for file in source.files]}
        root = str(source.root.resolve())
    else:
        record, root = {"kind": "data"}, None
    meta = {"version": CACHE_VERSION, "n": n, "layers": list(layers), "convention": convention,
            "dtype": dtype, "fields": fields, "fingerprint": model_fingerprint(clip),
            "classes": getattr(source, "classes", []), "source": record,
            "model_name": clip.model_name, "root": root}
    return json.loads(json.dumps(meta))  # as it reads back from meta.json (lists, not tuples)


def load_meta(path: Path) -> dict:
    """The ``meta.json`` of the cache folder ``path``, checked to be of this format and whole."""
    file = path / META_FILE
    if not file.is_file():
        raise DamagedFile(file, "missing")
    meta = read_json(file)
    version = meta.get("version")
    if type(version) is int and version != CACHE_VERSION:
        raise ValueError(f"the cache at {path} is in cache format {version}; this version of "
                         f"captum_clipspan reads format {CACHE_VERSION}: {REBUILD}")
    missing = [key for key in META_KEYS if key not in meta]
    if missing:
        raise DamagedFile(file, f"damaged (no {', '.join(missing)})")
    try:
        fields = {name: (np.dtype(dt), [int(size) for size in shape])
                  for name, (dt, shape) in meta["fields"].items()}
    except (AttributeError, TypeError, ValueError):
        fields = {}
    if (not fields or not set(fields) <= set(FIELDS) or CHECKSUMS not in fields
            or type(meta["n"]) is not int):
        raise DamagedFile(file, "damaged (its 'n' or 'fields' entry is invalid)")
    return meta


def _check_array(file: Path, dtype: str, shape: Sequence[int]) -> None:
    """Raise a ValueError naming ``file`` unless it is a whole ``.npy`` of this dtype and shape."""
    if not file.is_file():
        raise ValueError(f"the cache file {file} is missing; {REBUILD}")
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with open(file, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version not in readers:
                raise ValueError(f"unsupported .npy format {version}")
            found_shape, fortran, found_dtype = readers[version](handle)
            offset, size = handle.tell(), os.fstat(handle.fileno()).st_size
    except (OSError, ValueError) as error:
        raise ValueError(f"the cache file {file} is damaged (its .npy header cannot be read: "
                         f"{error}); {REBUILD}") from None
    if fortran or found_dtype != np.dtype(dtype) or list(found_shape) != list(shape):
        raise ValueError(f"the cache file {file} holds a {found_dtype} array of shape "
                         f"{list(found_shape)}{' in Fortran order' if fortran else ''}, but "
                         f"meta.json says {dtype} {list(shape)}; {REBUILD}")
    expected = offset + np.dtype(dtype).itemsize * math.prod(shape)
    if size != expected:
        raise ValueError(f"the cache file {file} is {size} bytes where its header needs "
                         f"{expected}: it was truncated or extended; {REBUILD}")


def check_arrays(path: Path, meta: dict) -> None:
    """Raise a ValueError naming the file unless every array of ``meta`` is whole on disk."""
    for name, (dtype, shape) in meta["fields"].items():
        _check_array(path / f"{name}.npy", dtype, shape)
