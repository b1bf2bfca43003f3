"""Model-free controls for the segmentation table: heat maps that never read the model.

A benchmark can only credit a method with what a map made without the model cannot reach. Two
controls, Captum attributions with the same ``attribute(images, texts=, target=)`` contract as
the model's methods (the map ignores the text, as raw attention does):

* :class:`ColorRarity`: each pixel scored by how rare its (quantized) color is in its own image,
  the histogram contrast of Cheng et al. (2011). Small objects of a color the background lacks
  stand out without any model;
* :class:`CenterPrior`: a Gaussian bump at the image center, the same for every image.

Both are pooled to the model's patch grid, so they are scored at the resolution of the maps they
are compared with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attr.base import ResolvedTexts
from ..attr.baselines import _PatchMapAttribution
from ..hooked.clip import HookedCLIP

__all__ = ["CenterPrior", "ColorRarity", "center_prior", "color_rarity"]


def color_rarity(images: Tensor, bins: int = 8) -> Tensor:
    """``-log`` of the frequency of each pixel's color in its own image: ``[B, C, H, W]`` ->
    ``[B, H, W]``.

    Each channel is quantized into ``bins`` levels between the image's own minimum and maximum
    (so any per-channel normalization gives the same map).
    """
    low = images.amin(dim=(2, 3), keepdim=True)
    spread = (images.amax(dim=(2, 3), keepdim=True) - low).clamp(min=1e-12)
    levels = ((images - low) / spread * bins).long().clamp(max=bins - 1)  # [B, C, H, W]
    weights = bins ** torch.arange(images.shape[1] - 1, -1, -1, device=images.device)
    codes = (levels * weights[None, :, None, None]).sum(1)  # [B, H, W]
    n_codes = bins ** images.shape[1]
    flat = codes.flatten(1) + n_codes * torch.arange(codes.shape[0], device=codes.device)[:, None]
    counts = torch.bincount(flat.flatten(), minlength=n_codes * codes.shape[0]).view(
        codes.shape[0], n_codes)
    frequency = counts.gather(1, codes.flatten(1)).double() / codes[0].numel()
    return (-frequency.log()).view_as(codes).to(images.dtype)


def center_prior(grid: tuple[int, int], sigma: float = 0.25) -> Tensor:
    """A Gaussian bump at the center of a ``grid``: ``[g_h, g_w]``, ``sigma`` in image sides."""
    ys = (torch.arange(grid[0], dtype=torch.float64) + 0.5) / grid[0] - 0.5
    xs = (torch.arange(grid[1], dtype=torch.float64) + 0.5) / grid[1] - 0.5
    return torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma ** 2))


class ColorRarity(_PatchMapAttribution):
    """Model-free control: how rare each pixel's color is in its image, pooled to the patch grid.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP` (only its patch grid is read).
        bins: quantization levels per color channel.

    Examples::

        >>> maps = ColorRarity(clip).attribute(images, texts=classifier, target=labels)
        >>> maps.shape                                   # [B, 1, g, g]
    """

    def __init__(self, clip: HookedCLIP, bins: int = 8) -> None:
        super().__init__(clip)
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins must be an int >= 2, got {bins!r}.")
        self.bins = bins

    def _maps(self, inputs: Tensor, resolved: ResolvedTexts) -> Tensor:
        rarity = color_rarity(inputs.detach().float(), self.bins)[:, None]
        return F.adaptive_avg_pool2d(rarity, self.clip.visual.grid_size).to(inputs.dtype)


class CenterPrior(_PatchMapAttribution):
    """Model-free control: a Gaussian at the image center on the patch grid, for every image.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP` (only its patch grid is read).
        sigma: the Gaussian's width, as a fraction of the image side.

    Examples::

        >>> maps = CenterPrior(clip).attribute(images, texts=classifier, target=labels)
    """

    def __init__(self, clip: HookedCLIP, sigma: float = 0.25) -> None:
        super().__init__(clip)
        if not float(sigma) > 0:
            raise ValueError(f"sigma must be > 0, got {sigma!r}.")
        self.sigma = float(sigma)

    def _maps(self, inputs: Tensor, resolved: ResolvedTexts) -> Tensor:
        prior = center_prior(tuple(self.clip.visual.grid_size), self.sigma)
        return prior.to(inputs).expand(inputs.shape[0], 1, -1, -1).contiguous()
