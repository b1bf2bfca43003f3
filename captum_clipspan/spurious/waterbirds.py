"""The Waterbirds dataset in its ``metadata.csv`` layout (Sagawa et al., 2020)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..sources import open_image
from ..validation import (
    read_text,
)

# Waterbirds -----------------------------------------------------------------------------------

WATERBIRDS_SPLITS = {"train": 0, "val": 1, "test": 2}
"""Split name -> the ``split`` value in Waterbirds' ``metadata.csv``."""

_WATERBIRDS_COLUMNS = ("img_filename", "y", "place", "split")


def _to_tensor(image: Any) -> Tensor:
    """A PIL image -> float tensor ``[3, H, W]`` in ``[0, 1]`` (the default transform)."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class WaterbirdsDataset(Dataset):
    """The Waterbirds layout: a folder with ``metadata.csv`` and the images it names.

    ``metadata.csv`` has the columns ``img_id, img_filename, y, split, place, place_filename``
    of Sagawa et al.'s release; ``img_filename, y, place, split`` are required. ``y`` is the
    class (0 landbird, 1 waterbird), ``place`` the background (0 land, 1 water), ``split``
    0/1/2 for train/val/test.

    Args:
        root: the folder holding ``metadata.csv``; ``img_filename`` is relative to it.
        split: ``"train"``, ``"val"``, ``"test"`` (or 0, 1, 2), or ``None`` for every row.
        transform: maps a PIL image to a tensor ``[3, H, W]`` (e.g. ``clip.preprocess``;
            default: the pixels as floats in ``[0, 1]``).

    Attributes:
        files: ``[N]`` image paths, in metadata order.
        labels: ``LongTensor [N]``, ``y``.
        places: ``LongTensor [N]``, ``place``.
        groups: ``LongTensor [N]``, ``2 * y + place`` (0 landbird on land, 1 landbird on water,
            2 waterbird on land, 3 waterbird on water).

    Examples::

        >>> data = WaterbirdsDataset("waterbird_complete95_forest2water2", "test",
        ...                          transform=clip.preprocess)
        >>> image, y = data[0]
        >>> data.groups.shape    # [N]
    """

    classes = ("landbird", "waterbird")
    n_groups = 4

    def __init__(self, root: str | Path, split: str | int | None = "test",
                 transform: Callable[[Any], Tensor] | None = None) -> None:
        self.root = Path(root)
        metadata = self.root / "metadata.csv"
        if not metadata.is_file():
            raise ValueError(f"no metadata.csv in {str(root)!r}: a Waterbirds folder holds "
                             f"metadata.csv with columns {list(_WATERBIRDS_COLUMNS)}.")
        if split is not None and split not in WATERBIRDS_SPLITS and split not in (0, 1, 2):
            raise ValueError(f"split must be one of {list(WATERBIRDS_SPLITS)}, 0, 1, 2 or None, "
                             f"got {split!r}.")
        wanted = WATERBIRDS_SPLITS.get(split, split) if isinstance(split, str) else split
        reader = csv.DictReader(io.StringIO(read_text(metadata, "Waterbirds metadata"),
                                            newline=""))
        missing = [c for c in _WATERBIRDS_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{metadata} lacks the columns {missing} (has "
                             f"{reader.fieldnames}).")
        try:
            rows = list(reader)
        except csv.Error as error:
            raise ValueError(f"{metadata} is not a CSV file ({error}).") from None
        try:
            parsed = [(row["img_filename"], int(row["y"]), int(row["place"]), int(row["split"]))
                      for row in rows]
        except ValueError as error:
            raise ValueError(f"{metadata}: y, place and split must be integers ({error}).") \
                from None
        bad = [p for p in parsed if p[1] not in (0, 1) or p[2] not in (0, 1)]
        if bad:
            raise ValueError(f"{metadata}: y and place must be 0 or 1, got row {bad[0]}.")
        chosen = [p for p in parsed if wanted is None or p[3] == wanted]
        if not chosen:
            raise ValueError(f"{metadata} has no rows in split {split!r}.")
        self.files = [self.root / p[0] for p in chosen]
        self.labels = torch.tensor([p[1] for p in chosen], dtype=torch.long)
        self.places = torch.tensor([p[2] for p in chosen], dtype=torch.long)
        self.groups = 2 * self.labels + self.places
        self.transform = transform if transform is not None else _to_tensor

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(open_image(self.files[index])), int(self.labels[index])
