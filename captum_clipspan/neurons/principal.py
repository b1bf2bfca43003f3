"""Each neuron's first principal component over its top images, with the authors' sign rule
(``compute_pcas.py`` of ``second_order_lens``)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["first_components", "squared_norms", "variance_along"]


def first_components(vectors: Tensor, counts: Tensor | None = None,
                     chunk: int = 256) -> tuple[Tensor, Tensor]:
    """The first right singular vector of each neuron's matrix of effects, signed.

    As in the authors' code, the rows (effects minus the dataset mean, *not* re-centered on the
    rows' own mean) are decomposed by SVD, and the direction is flipped unless more than half of
    the rows project positively on it (``> k // 2``). When exactly half do (an even ``k``), their
    sign is numpy's arbitrary one; here the projections then sum to a non-negative value. The SVD
    of a ``[k, E]`` matrix comes from the eigenvectors of its ``[k, k]`` Gram matrix, so ``chunk``
    neurons take ``chunk * k * k`` floats at a time.

    Args:
        vectors: ``[n, k, E]`` each neuron's rows (zero rows past ``counts`` are ignored).
        counts: ``[n]`` how many rows are filled (default: all ``k``).
        chunk: neurons decomposed at once.

    Returns:
        ``(components [n, E], variance_explained [n])``: unit directions and
        ``s_1^2 / sum_i s_i^2``, the fraction of the rows' squared norm along the direction
        (0 and zeros for a neuron without variation).
    """
    n, k, _ = vectors.shape
    counts = torch.full((n,), k, dtype=torch.long) if counts is None else counts.long().cpu()
    components, explained = [], []
    for start in range(0, n, chunk):
        rows = vectors[start:start + chunk].double()
        gram = rows @ rows.transpose(1, 2)  # [c, k, k]
        values, vectors_k = torch.linalg.eigh(gram)  # ascending
        top, left = values[:, -1].clamp_min(0), vectors_k[:, :, -1]  # [c], [c, k]
        direction = (left[:, None, :] @ rows)[:, 0]  # s_1 * v_1
        norm = direction.norm(dim=-1, keepdim=True)
        direction = torch.where(norm > 0, direction / norm.clamp_min(1e-300), 0.0)
        projections = (rows @ direction[..., None])[..., 0]
        positive = (projections > 0).sum(dim=1)
        half = counts[start:start + chunk].to(positive.device)
        keep = positive > half // 2
        # Exactly half positive (even k): the authors' sign is then that of numpy's SVD,
        # arbitrary; make the projections' sum positive instead, so the result is reproducible.
        tie = 2 * positive == half
        keep = torch.where(tie, projections.sum(dim=1) >= 0, keep)
        components.append(torch.where(keep[:, None], direction, -direction))
        total = values.clamp_min(0).sum(dim=1)
        explained.append(torch.where(total > 0, top / total.clamp_min(1e-300), 0.0))
    return (torch.cat(components).to(vectors.dtype), torch.cat(explained).float())


def variance_along(vectors: Tensor, directions: Tensor, chunk: int = 256) -> Tensor:
    """``[n]`` the fraction of each neuron's rows' squared norm along its unit direction,
    ``||C d||^2 / ||C||_F^2`` for rows ``C`` ``[n, k, E]`` and directions ``[n, E]`` (0 for zero
    rows), ``chunk`` neurons at a time."""
    fractions = []
    for rows, unit in zip(vectors.split(chunk), directions.split(chunk), strict=True):
        rows = rows.double()
        along = (rows @ unit.double()[..., None])[..., 0].square().sum(dim=1)
        total = rows.square().sum(dim=(1, 2))
        fractions.append(torch.where(total > 0, along / total.clamp_min(1e-300), 0.0))
    return torch.cat(fractions).float()


def squared_norms(vectors: Tensor, chunk: int = 256) -> Tensor:
    """``[n]`` ``||C||_F^2`` of each neuron's rows ``[n, k, E]``, in float64, in chunks."""
    return torch.cat([rows.double().square().sum(dim=(1, 2)) for rows in vectors.split(chunk)])
