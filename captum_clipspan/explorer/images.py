"""The explorer's pictures: image files read once per use, thumbnails of what the model sees."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..visualization import model_view

__all__ = ["ImageRows", "write_thumbnail"]


class ImageRows:
    """The image file of each cache row, opened on demand.

    Args:
        files: one image file per cache row.
        preprocess: the model's transform (``clip.preprocess``), or ``None`` without a model.
    """

    def __init__(self, files: Sequence[str | Path], preprocess: Callable | None) -> None:
        self.files = [Path(file) for file in files]
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.files)

    def rgb(self, row: int) -> Any:
        """Row ``row``'s image as an RGB PIL image."""
        from PIL import Image

        with Image.open(self.files[row]) as image:
            return image.convert("RGB")

    def model_input(self, rows: Sequence[int]) -> Tensor:
        """The preprocessed images ``[B, 3, S, S]`` of ``rows``."""
        if self.preprocess is None:
            raise ValueError("model inputs need the model's preprocess transform.")
        return torch.stack([self.preprocess(self.rgb(row)) for row in rows])

    def view(self, row: int) -> Any:
        """What the model sees of row ``row`` (its resize and crop, normalization undone), as
        a PIL image; without a model, the image centre-cropped to a square."""
        from PIL import Image

        image = self.rgb(row)
        if self.preprocess is not None:
            # In numpy: a few small torch ops per thumbnail cost more than the view itself.
            pixels = np.rint(model_view(self.preprocess, image).numpy() * 255).astype(np.uint8)
            return Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        return image.crop((left, top, left + side, top + side))


def write_thumbnail(image: Any, path: Path, size: int) -> None:
    """Save a PIL image as a JPEG of at most ``size`` pixels a side (never enlarged: the page
    scales small images up). A file already holding the same bytes (a rebuild) is left alone:
    rewriting a file frees and reallocates its blocks, which on some disks costs milliseconds."""
    from PIL import Image

    if max(image.size) > size:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    path.write_bytes(data)
