"""TextSpan, the pure tensor math (Algorithm 1 of Gandelsman, Efros & Steinhardt, ICLR 2024).

TextSpan explains one attention head's direct contribution to CLIP's image embedding by
greedily choosing, from a bank of text embeddings, the texts whose directions carry the most
of the head's variance across images, removing each chosen direction before the next choice.

The search runs in an orthonormal basis of the top-``rank`` span that diagonalizes the
centered head's Gram matrix, so each step costs ``O(M * rank)`` instead of a
``[K, E] @ [E, M]`` product.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from os import PathLike
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TextSpanResult", "textspan"]

_REPR_MAX_ROWS = 20
_REPR_MAX_TEXT = 60


@dataclass(eq=False, repr=False)
class TextSpanResult:
    """The texts TextSpan chose for one head, with the span they define.

    Attributes:
        texts: The chosen texts, in the order they were chosen.
        indices: ``[m]`` long, the chosen texts' rows in the text bank.
        basis: ``[m, E]``, orthonormal rows: the chosen texts' directions after removing the
            earlier ones (and after restriction to the head's top-``rank`` principal span).
        variance_explained: ``[m]``, the fraction of the head's variance across images that the
            first ``i + 1`` basis rows explain, ``1 - ||C_res||_F^2 / ||C_c||_F^2``.
        reconstruction: ``[K, E]``, ``mean + C_c @ basis.T @ basis``: the head's outputs
            projected onto the span of the chosen texts.
        mean: ``[E]``, the head's mean output over images.
        rank: The number of principal directions the text bank was restricted to.
        scores: ``[m]``, the winning score at each step (variance of the images' projections
            onto the chosen direction; see :func:`textspan`).
    """

    texts: list[str]
    indices: torch.Tensor
    basis: torch.Tensor
    variance_explained: torch.Tensor
    reconstruction: torch.Tensor
    mean: torch.Tensor
    rank: int
    scores: torch.Tensor

    def to_frame(self) -> pd.DataFrame:
        """Tabulate the result, one row per chosen text.

        Returns:
            A DataFrame with columns step (from 1), text, index, score and variance_explained
            (cumulative, after that step).
        """
        import pandas as pd

        return pd.DataFrame(
            {
                "step": range(1, len(self.texts) + 1),
                "text": list(self.texts),
                "index": self.indices.tolist(),
                "score": self.scores.tolist(),
                "variance_explained": self.variance_explained.tolist(),
            }
        )

    def save(self, path: str | PathLike[str]) -> None:
        """Write the result with :func:`torch.save` as a plain dict of tensors, lists and ints."""
        torch.save({f.name: getattr(self, f.name) for f in fields(self)}, path)

    @classmethod
    def load(cls, path: str | PathLike[str]) -> TextSpanResult:
        """Read a result written by :meth:`save` (with ``weights_only=True``, onto the CPU).

        Raises:
            ValueError: If the file lacks one of the result's fields.
        """
        data = torch.load(path, map_location="cpu", weights_only=True)
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in data]
        if missing:
            raise ValueError(
                f"{path} is not a saved TextSpanResult: it lacks {missing}; "
                f"a saved result has the keys {names}."
            )
        return cls(**{name: data[name] for name in names})

    def __repr__(self) -> str:
        """A short table of the chosen texts with their cumulative variance explained."""
        lines = [
            f"TextSpanResult({len(self.texts)} texts, rank={self.rank}, "
            f"width={self.mean.shape[-1]})",
            "  step  var. explained  text",
        ]
        rows = zip(self.texts, self.variance_explained.tolist(), strict=True)
        for step, (text, explained) in enumerate(rows, start=1):
            if step > _REPR_MAX_ROWS:
                lines.append(f"  ... {len(self.texts) - _REPR_MAX_ROWS} more (see to_frame())")
                break
            if len(text) > _REPR_MAX_TEXT:
                text = text[: _REPR_MAX_TEXT - 3] + "..."
            lines.append(f"  {step:>4}  {explained:>14.4f}  {text}")
        return "\n".join(lines)

    __str__ = __repr__


def textspan(
    head_outputs: torch.Tensor,
    text_embeddings: torch.Tensor,
    texts: Sequence[str],
    m: int,
    rank: int | None = 80,
    normalize_scoring: bool = False,
    centered_span: bool = False,
) -> TextSpanResult:
    """Choose ``m`` texts whose directions span most of a head's variance (TextSpan).

    Algorithm 1 of Gandelsman et al. (ICLR 2024). The text bank is restricted to the span of the
    top-``rank`` right singular vectors of the head's outputs ``C`` (by default *before*
    centering them, as the authors' code does; ``centered_span=True`` uses those of the centered
    ``C_c``). Then, with ``C_c`` the outputs centered over images, repeat ``m`` times: score every
    remaining text ``t`` by the variance of the images' projections onto it, ``||C_c t||^2 / K``
    (unnormalized by default, as in the authors' code); choose the best text; remove its
    direction ``d`` from ``C_c`` and from every text. The defaults (``rank=80``,
    ``normalize_scoring=False``, ``centered_span=False``) pick what the authors'
    ``replace_with_iterative_removal`` picks. A text whose restricted vector is numerically zero
    (at most ``max(K, E) * eps * ||text||``, with the coarser ``eps`` of the two inputs) is never
    chosen, and no text is chosen twice. ``eps`` is float32's for inputs of float32 or lower
    precision.

    Args:
        head_outputs: ``[K, E]``, one head's direct contributions to the image embedding for
            ``K >= 2`` images; any float dtype, finite.
        text_embeddings: ``[M, E]``, the text bank (usually unit-norm rows); any float dtype,
            finite.
        texts: The ``M`` strings of the text bank, in row order.
        m: How many texts to choose, ``1 <= m <= M``.
        rank: How many right singular vectors of the head outputs to restrict the text bank to,
            ``>= 1`` (default 80, the authors'); a rank above ``min(K, E)`` keeps them all, as
            the authors' slicing does. ``None`` uses the numerical rank: singular values above
            ``max(K, E) * eps * s_max`` (``eps`` of ``head_outputs``), like
            :func:`numpy.linalg.matrix_rank`.
        normalize_scoring: Score a text by the variance along its unit direction (``True``), or
            along the restricted text vector unnormalized, as the authors' code does (``False``,
            the default).
        centered_span: Take the singular vectors of the centered outputs ``C_c`` (``True``) or of
            the outputs as they are (``False``, the default: the authors' code).

    Returns:
        A :class:`TextSpanResult`. Its tensors are float64 if either input is float64, else
        float32. It holds fewer than ``m`` texts (with a warning) when no remaining text has a
        component left in the rank-``rank`` span, which always happens after ``rank`` steps.

    Raises:
        TypeError: If an input is not a floating-point tensor, ``texts`` is a single string, or
            ``m`` or ``rank`` is not an int.
        ValueError: If a tensor is not 2-D, the widths ``E`` differ, ``K < 2``, the bank is
            empty, ``len(texts) != M``, a tensor holds NaN or inf, ``m`` or ``rank`` is out of
            range, or the head outputs do not vary across images.

    Examples::

        >>> import torch
        >>> bank = torch.eye(16)  # 16 orthonormal "text" directions
        >>> strings = [f"axis {i}" for i in range(16)]
        >>> # A head that writes mostly along axis 3 and a little along axis 7.
        >>> gen = torch.Generator().manual_seed(0)
        >>> coefficients = torch.randn(500, 2, generator=gen) * torch.tensor([3.0, 1.0])
        >>> head = coefficients @ bank[[3, 7]] + 0.5
        >>> result = textspan(head, bank, strings, m=2, normalize_scoring=True)
        >>> result.texts
        ['axis 3', 'axis 7']
        >>> [round(v, 2) for v in result.variance_explained.tolist()]
        [0.89, 1.0]
        >>> torch.allclose(result.reconstruction, head, atol=1e-5)
        True
    """
    _check_inputs(head_outputs, text_embeddings, texts, m, rank)
    m, rank = int(m), None if rank is None else int(rank)
    float64 = torch.float64
    out_dtype = float64 if float64 in (head_outputs.dtype, text_embeddings.dtype) else torch.float32
    num_images, width = head_outputs.shape
    # Relative tolerances as in numpy.linalg.matrix_rank: the head's precision bounds its rank;
    # the coarser of the two precisions bounds what counts as a zero text.
    head_eps, bank_eps = _eps(head_outputs.dtype), _eps(text_embeddings.dtype)
    rank_tol = max(num_images, width) * head_eps
    zero_tol = max(num_images, width) * max(head_eps, bank_eps)

    outputs = head_outputs.to(float64)
    mean = outputs.mean(dim=0)
    centered = outputs - mean
    if centered.square().sum() <= rank_tol**2 * outputs.square().sum():
        raise ValueError(
            "head_outputs does not vary across images (all rows are equal up to rounding), "
            "so there is no variance for TextSpan to explain."
        )
    exact = head_outputs.dtype == float64
    singular_sq, directions = _principal_directions(
        centered if centered_span else outputs, exact=exact
    )
    if rank is None:
        rank = _numerical_rank(singular_sq, rank_tol)
    rank = min(rank, num_images, width)
    principal, variances = _diagonalize(centered, directions[:, :rank])

    bank = text_embeddings.to(device=centered.device, dtype=float64)
    zero_norm = zero_tol * torch.linalg.vector_norm(bank, dim=1)
    chosen, coords, scores = _greedy_text_span(
        bank @ principal,
        variances[:rank],
        m=m,
        num_images=num_images,
        normalize_scoring=normalize_scoring,
        zero_norm=zero_norm,
    )
    if len(chosen) < m:
        warnings.warn(
            f"TextSpan chose only {len(chosen)} of the m={m} texts requested: the remaining "
            f"texts have no component left in the rank-{rank} principal span of the head "
            "outputs (at most rank texts can be chosen).",
            stacklevel=2,
        )

    basis = coords @ principal.mT
    projections = centered @ basis.mT
    reconstruction = torch.addmm(mean, projections, basis)
    total = centered.square().sum()
    # 1 - ||C_res||^2 / ||C_c||^2 equals ||C_c B^T||^2 / ||C_c||^2 since B has orthonormal rows.
    explained = (projections.square().sum(dim=0).cumsum(dim=0) / total).clamp_max(1.0)
    return TextSpanResult(
        texts=[texts[i] for i in chosen],
        indices=torch.tensor(chosen, dtype=torch.long, device=centered.device),
        basis=basis.to(out_dtype),
        variance_explained=explained.to(out_dtype),
        reconstruction=reconstruction.to(out_dtype),
        mean=mean.to(out_dtype),
        rank=rank,
        scores=torch.tensor(scores, dtype=out_dtype, device=centered.device),
    )


def _eps(dtype: torch.dtype) -> float:
    """Machine epsilon of the precision a tensor of ``dtype`` is handled in (at least float32)."""
    return torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps


def _principal_directions(centered: torch.Tensor, exact: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared singular values (descending) and right singular vectors ``[E, n]`` of ``centered``.

    The eigendecomposition of the float64 Gram matrix ``[E, E]`` is much cheaper than an SVD of
    ``[K, E]`` and resolves singular values down to a few ``1e-7 * s_max``: ample for float32
    tolerances. Float64 head outputs (``exact``) get the SVD, whose tolerance is far finer.
    """
    if exact:
        _, singular_values, vh = torch.linalg.svd(centered, full_matrices=False)
        return singular_values.square(), vh.mT
    eigenvalues, eigenvectors = torch.linalg.eigh(centered.mT @ centered)
    return eigenvalues.flip(0).clamp_min(0.0), eigenvectors.flip(1)


def _diagonalize(centered: torch.Tensor, span: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An orthonormal basis ``[E, r]`` of ``span`` in which ``C_c^T C_c`` is diagonal, and that
    diagonal: the greedy loop then scores a text with one weighted sum of squares. For the
    centered span the singular vectors already are such a basis (up to rounding)."""
    projected = centered @ span
    variances, rotation = torch.linalg.eigh(projected.mT @ projected)
    return span @ rotation.flip(1), variances.flip(0).clamp_min(0.0)


def _numerical_rank(variances: torch.Tensor, tol: float) -> int:
    """How many singular values exceed ``tol * s_max``, given squared singular values."""
    return int((variances > tol**2 * variances[0]).sum()) if variances[0] > 0 else 0


def _greedy_text_span(
    coords: torch.Tensor,
    variances: torch.Tensor,
    m: int,
    num_images: int,
    normalize_scoring: bool,
    zero_norm: torch.Tensor,
) -> tuple[list[int], torch.Tensor, list[float]]:
    """The greedy loop of Algorithm 1, in principal coordinates.

    Args:
        coords: ``[M, r]`` float64, the texts in the head's principal coordinates; deflated in
            place.
        variances: ``[r]``, the squared singular values: ``diag(S^2)`` is the Gram matrix
            ``C_c^T C_c`` in these coordinates, so ``||C_c t||^2 = sum(variances * t**2)``.
        m: The most texts to choose.
        num_images: ``K``, which turns squared norms into variances.
        normalize_scoring: Score unit directions rather than the raw text vectors.
        zero_norm: ``[M]``, the norm at or below which a text counts as zero.

    Returns:
        The chosen rows, their unit directions ``[m', r]`` (``m' <= m``) and winning scores.
    """
    available = torch.ones(coords.shape[0], dtype=torch.bool, device=coords.device)
    weights = torch.stack([variances, torch.ones_like(variances)], dim=1)
    directions = coords.new_zeros((m, coords.shape[1]))
    chosen: list[int] = []
    scores: list[float] = []
    for step in range(m):
        # Deflating C as well (Algorithm 1) changes nothing here: every text is orthogonal to
        # the removed directions, and on that subspace P G P equals G.
        spread, norm_sq = (coords.square() @ weights).unbind(dim=1)
        available &= norm_sq > zero_norm.square()
        if not bool(available.any()):
            break
        score = (spread / norm_sq if normalize_scoring else spread) / num_images
        best = int(score.masked_fill(~available, -math.inf).argmax())
        # Re-orthogonalizing the (already deflated) winner keeps rounding errors from piling up
        # in the later deflations, so that exhausted texts really do reach zero.
        direction = coords[best] - (directions[:step] @ coords[best]) @ directions[:step]
        direction /= torch.linalg.vector_norm(direction)
        coords.addr_(coords @ direction, direction, alpha=-1.0)
        available[best] = False
        directions[step] = direction
        chosen.append(best)
        scores.append(float(score[best]))
    return chosen, directions[: len(chosen)], scores


def _check_inputs(
    head_outputs: torch.Tensor,
    text_embeddings: torch.Tensor,
    texts: Sequence[str],
    m: int,
    rank: int | None,
) -> None:
    """Raise a TypeError or ValueError that says what was given and what is accepted."""
    for name, tensor in (("head_outputs", head_outputs), ("text_embeddings", text_embeddings)):
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            kind = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got {kind}.")
        if tensor.ndim != 2:
            raise ValueError(
                f"{name} must be 2-D ([K, E] for head_outputs, [M, E] for text_embeddings), "
                f"got shape {tuple(tensor.shape)}."
            )
    (num_images, width), (num_texts, text_width) = head_outputs.shape, text_embeddings.shape
    if width != text_width:
        raise ValueError(
            f"head_outputs and text_embeddings must have the same width E, got {width} and "
            f"{text_width}."
        )
    if num_images < 2:
        raise ValueError(
            f"head_outputs must hold at least 2 images (rows) to have a variance, got {num_images}."
        )
    if num_texts == 0:
        raise ValueError("text_embeddings is an empty text bank (0 rows); it needs >= m rows.")
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, one per text, got a single string.")
    if len(texts) != num_texts:
        raise ValueError(
            f"texts must hold one string per row of text_embeddings ({num_texts}), "
            f"got {len(texts)}."
        )
    for name, tensor in (("head_outputs", head_outputs), ("text_embeddings", text_embeddings)):
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} contains NaN or inf values; only finite values are accepted.")
    if not isinstance(m, numbers.Integral) or isinstance(m, bool):
        raise TypeError(f"m must be an int, got {type(m).__name__}.")
    if not 1 <= m <= num_texts:
        raise ValueError(f"m must be between 1 and the bank size M={num_texts}, got {m}.")
    if rank is not None:
        if not isinstance(rank, numbers.Integral) or isinstance(rank, bool):
            raise TypeError(f"rank must be an int or None, got {type(rank).__name__}.")
        if rank < 1:
            raise ValueError(
                f"rank must be None or an int >= 1 (at most min(K, E)={min(num_images, width)} "
                f"directions are kept), got {rank}."
            )
