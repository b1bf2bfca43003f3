"""A running top-k of each neuron's images by effect norm, with the effects themselves, in
memory bounded by ``[n, k, E]`` whatever the number of images."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["RunningTopK"]


@dataclass
class RunningTopK:
    """The ``k`` images of largest norm per neuron, kept while streaming.

    Rows are sorted by norm (largest first), ties broken by the lower image index, so the result
    does not depend on the order images or partial results arrive in (a pass split over several
    processes gives the same top-k as one). Unfilled slots have norm ``-inf`` and index ``-1``.

    Attributes:
        norms: ``[n, k]``.
        indices: ``[n, k]`` the images' row in the dataset.
        vectors: ``[n, k, E]`` the effects (minus the dataset mean) of those images.
    """

    norms: Tensor
    indices: Tensor
    vectors: Tensor

    @classmethod
    def empty(cls, n: int, k: int, width: int, dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu") -> RunningTopK:
        """No image yet: ``n`` neurons, ``k`` slots each, effects of width ``width``."""
        return cls(torch.full((n, k), -torch.inf, dtype=dtype, device=device),
                   torch.full((n, k), -1, dtype=torch.long, device=device),
                   torch.zeros(n, k, width, dtype=dtype, device=device))

    @property
    def counts(self) -> Tensor:
        """``[n]`` how many slots are filled."""
        return (self.indices >= 0).sum(dim=1)

    def update(self, norms: Tensor, vectors: Tensor, rows: Tensor, chunk: int = 256) -> None:
        """Offer a batch: ``norms`` ``[B, n]``, ``vectors`` ``[B, n, E]`` and the images' dataset
        rows ``[B]``. Only neurons whose best new norm beats their current ``k``-th are touched."""
        norms = norms.to(self.norms)
        beats = norms.max(dim=0).values >= self.norms[:, -1]
        rows = rows.to(self.indices.device)
        for neurons in torch.nonzero(beats)[:, 0].split(chunk):
            self._merge(neurons, norms[:, neurons].T,
                        rows[None].expand(len(neurons), -1),
                        vectors[:, neurons.to(vectors.device)].transpose(0, 1))

    def merge(self, other: RunningTopK, chunk: int = 256) -> None:
        """Fold in another top-k over other images (another process's, a resumed pass's)."""
        for start in range(0, self.norms.shape[0], chunk):
            neurons = torch.arange(start, min(start + chunk, self.norms.shape[0]),
                                   device=self.norms.device)
            self._merge(neurons, other.norms[neurons], other.indices[neurons],
                        other.vectors[neurons])

    def _merge(self, neurons: Tensor, norms: Tensor, indices: Tensor, vectors: Tensor) -> None:
        """Keep the best ``k`` of the current rows and ``norms [c, m]`` (``indices``, ``vectors``
        ``[c, m, E]``) for the neurons ``[c]``."""
        k = self.norms.shape[1]
        all_norms = torch.cat([self.norms[neurons], norms], dim=1)
        all_indices = torch.cat([self.indices[neurons], indices.to(self.indices)], dim=1)
        # Sort by image index, then stably by norm: equal norms keep the lower index first.
        by_index = all_indices.masked_fill(all_indices < 0, torch.iinfo(torch.long).max)
        order = by_index.argsort(dim=1, stable=True)
        order = order.gather(1, all_norms.gather(1, order).argsort(dim=1, descending=True,
                                                                   stable=True))[:, :k]
        current = self.vectors[neurons]
        all_vectors = torch.cat([current, vectors.to(current)], dim=1)
        self.norms[neurons] = all_norms.gather(1, order)
        self.indices[neurons] = all_indices.gather(1, order)
        self.vectors[neurons] = all_vectors.gather(
            1, order[..., None].expand(-1, -1, current.shape[-1]))

    def state_dict(self) -> dict[str, Tensor]:
        return {"norms": self.norms, "indices": self.indices, "vectors": self.vectors}

