"""Segmentation data: pairs ``(image [3, S, S], mask [S, S] bool)`` for :func:`benchmark`.

:class:`ImagenetSegmentation` reads ``gtsegs_ijcv.mat`` (needs ``h5py``: the ``segmentation``
extra), :class:`MaskFolder` an image folder with mask PNGs; plugins add their own by subclassing
:class:`_SegmentationData` (the toy's synthetic scenes: ``captum_clipspan.toy.segmentation``,
registered as the dataset ``"scenes"``). :func:`for_model` gives the arguments that fit a model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..sources import IMAGE_SUFFIXES, UnreadableImageError, open_image

if TYPE_CHECKING:
    from ..hooked.clip import HookedCLIP

__all__ = ["ImagenetSegmentation", "MaskFolder", "for_model"]


class _SegmentationData(Dataset):
    """Pairs ``(image [3, S, S], mask [S, S] bool)``, both resized to the model's input size.

    As Chefer et al.: the image is resized (squashed) bilinearly to ``size``, then ``transform``
    (e.g. ``clip.preprocess``, whose resize and crop are then no-ops) is applied; the mask is
    resized with nearest-neighbour interpolation, the same way. A mask must have its image's
    size: one of another size or aspect is refused, never stretched to fit. Subclasses
    implement ``__len__`` and ``raw(index) -> (PIL RGB image, bool array [H, W])``, and may
    override ``describe(index)`` (how a message names item ``index``).
    """

    def __init__(self, transform: Callable | None = None,
                 size: int | tuple[int, int] | None = None) -> None:
        self.transform = transform
        self.size = (size, size) if isinstance(size, int) else size

    def raw(self, index: int) -> tuple[Any, np.ndarray]:
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """How messages name item ``index``."""
        return f"item {index}"

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        image, mask = self.raw(index % len(self))
        mask = np.asarray(mask)
        if mask.shape != (image.height, image.width):
            raise ValueError(f"the mask of {self.describe(index % len(self))} is "
                             f"{'x'.join(map(str, mask.shape[1::-1]))} (width x height) but its "
                             f"image is {image.width}x{image.height}; a mask must have its "
                             "image's size (it is not stretched to fit).")
        mask = Image.fromarray(mask.astype(np.uint8) * 255)
        if self.size is not None:
            width_height = (self.size[1], self.size[0])
            image = image.resize(width_height, Image.BILINEAR)
            mask = mask.resize(width_height, Image.NEAREST)
        pixels = (self.transform(image) if self.transform is not None else
                  torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255)
        return pixels, torch.from_numpy(np.array(mask) > 127)


def for_model(clip: HookedCLIP) -> dict[str, Any]:
    """``transform`` and ``size`` arguments of the segmentation datasets for ``clip``."""
    if clip.preprocess is None:
        raise ValueError("this HookedCLIP has no preprocess transform; pass transform= yourself.")
    return {"transform": clip.preprocess, "size": tuple(clip.visual.image_size)}


class ImagenetSegmentation(_SegmentationData):
    """The ImageNet-segmentation set (Guillaumin et al., 2014) as ``gtsegs_ijcv.mat``.

    The file is MATLAB v7.3 (HDF5): ``value/img`` and ``value/gt`` are ``[N, 1]`` object
    references; image ``i`` is the ``[3, W, H]`` uint8 array that ``value/img[i, 0]`` points to,
    its mask the ``[W, H]`` array referenced by element ``[0, 0]`` of the cell ``value/gt[i, 0]``
    points to (the reading of Chefer et al.'s ``Imagenet_Segmentation``). Needs ``h5py``
    (``pip install "captum_clipspan[segmentation]"``).

    Args:
        path: the ``.mat`` file.
        transform: applied to the resized PIL image (e.g. ``clip.preprocess``).
        size: ``(H, W)`` that images and masks are resized to (``None``: as stored).

    Examples::

        >>> data = ImagenetSegmentation("gtsegs_ijcv.mat", **for_model(clip))
        >>> image, mask = data[0]       # [3, 224, 224], [224, 224] bool
    """

    def __init__(self, path: str | Path, transform: Callable | None = None,
                 size: int | tuple[int, int] | None = None) -> None:
        super().__init__(transform, size)
        try:
            import h5py
        except ImportError as error:
            raise ImportError("reading gtsegs_ijcv.mat needs h5py: pip install "
                              "'captum_clipspan[segmentation]' (or pip install h5py).") from error
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no ImageNet-segmentation file at {str(path)!r}.")
        self._h5py, self._file = h5py, None
        if not h5py.is_hdf5(self.path):
            raise ValueError(f"{self.path} is not an HDF5 file (MATLAB v7.3); give "
                             "gtsegs_ijcv.mat, or a folder with images/ and masks/.")
        with h5py.File(self.path, "r") as handle:
            if "value/img" not in handle or "value/gt" not in handle:
                raise ValueError(f"{self.path} is not gtsegs_ijcv.mat: it has no value/img and "
                                 f"value/gt datasets.")
            self._length = len(handle["value/img"])

    def __len__(self) -> int:
        return self._length

    def describe(self, index: int) -> str:
        return f"image {index} of {self.path}"

    def raw(self, index: int) -> tuple[Any, np.ndarray]:
        from PIL import Image

        if self._file is None:  # opened lazily, once per worker process
            self._file = self._h5py.File(self.path, "r")
        handle = self._file
        image = np.array(handle[handle["value/img"][index, 0]]).transpose(2, 1, 0)
        cell = handle[handle["value/gt"][index, 0]]
        mask = np.array(handle[cell[0, 0]]).transpose(1, 0)
        return Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("RGB"), mask > 0

    def __getstate__(self) -> dict:
        state = dict(self.__dict__, _file=None, _h5py=None)
        return state

    def __setstate__(self, state: dict) -> None:
        import h5py

        self.__dict__.update(state, _h5py=h5py)


class MaskFolder(_SegmentationData):
    """Images with foreground masks: ``root/images/<name>.<ext>`` and ``root/masks/<name>.png``.

    A mask has its image's size. A pixel is foreground where it is non-zero: its gray level or
    palette index, or any color channel; where a mask has an alpha channel, transparent pixels
    are background and alpha is not a color (an opaque black pixel is background).

    Args:
        root: the folder holding ``images/`` and ``masks/``.
        transform, size: as in :class:`ImagenetSegmentation`.
    """

    def __init__(self, root: str | Path, transform: Callable | None = None,
                 size: int | tuple[int, int] | None = None) -> None:
        super().__init__(transform, size)
        self.root = Path(root)
        images, masks = self.root / "images", self.root / "masks"
        if not images.is_dir() or not masks.is_dir():
            raise ValueError(f"{self.root} must hold an images/ and a masks/ folder (masks/<name>"
                             f".png for every images/<name>.<ext>).")
        self.files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {images}.")
        missing = [p.name for p in self.files if not (masks / f"{p.stem}.png").is_file()]
        if missing:
            raise ValueError(f"{len(missing)} images have no mask in {masks} (expected "
                             f"<name>.png), e.g. {missing[:3]}.")

    def __len__(self) -> int:
        return len(self.files)

    def describe(self, index: int) -> str:
        return str(self.files[index])

    def raw(self, index: int) -> tuple[Any, np.ndarray]:
        path = self.files[index]
        return open_image(path), foreground(self.root / "masks" / f"{path.stem}.png")


def foreground(path: Path) -> np.ndarray:
    """A mask file -> bool ``[H, W]`` (see :class:`MaskFolder` for what is foreground)."""
    from PIL import Image

    try:
        with Image.open(path) as mask:
            bands = mask.getbands()
            pixels = np.asarray(mask)
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImageError(f"mask {path} cannot be read: {error}.") from None
    pixels = pixels.reshape(*pixels.shape[:2], -1)
    if "A" in bands:
        alpha = bands.index("A")
        colors = np.delete(pixels, alpha, axis=-1)
        return (colors > 0).any(axis=-1) & (pixels[..., alpha] > 0)
    return (pixels > 0).any(axis=-1)
