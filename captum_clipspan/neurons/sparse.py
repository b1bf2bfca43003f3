"""Sparse text decomposition of a direction: orthogonal matching pursuit over a text bank.

The authors (``compute_sparse_decomposition.py`` of ``second_order_lens``) preprocess the bank and
then call scikit-learn's ``SparseCoder(transform_algorithm="omp", transform_n_nonzero_coefs=32)``
on each neuron's first principal component. Both steps are here, in torch:

* :func:`preprocess_bank`: their text preprocessing, reproduced as is;
* :func:`orthogonal_matching_pursuit`: the same greedy algorithm as scikit-learn's
  ``orthogonal_mp_gram`` with ``tol=None`` (what ``SparseCoder`` runs): at each step the atom with
  the largest ``|<atom, residual>|`` is added (atoms are *not* normalized, as in scikit-learn,
  which assumes but does not enforce unit atoms) and the coefficients of all chosen atoms are
  refit by least squares. Two differences, neither of which changes a result that scikit-learn
  completes: a chosen atom is masked out of later steps (scikit-learn would pick it again only
  when the residual is numerically orthogonal to every atom, and then stops with a warning; here
  that signal stops silently), and the least squares are solved in float64 for a batch of
  signals at once (minimum-norm ``gelsd`` instead of one Cholesky update per signal, so a
  dependent atom cannot make it fail).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["orthogonal_matching_pursuit", "preprocess_bank", "top_atoms"]

_TINY = torch.finfo(torch.float64).tiny


def preprocess_bank(text_embeddings: Tensor, coefficient: float = 100.0) -> Tensor:
    """The authors' text preprocessing: center the bank, then scale each *dimension* to norm
    ``coefficient`` over the texts.

    ``compute_sparse_decomposition.py`` divides by ``np.linalg.norm(texts, axis=0)``, the norm of
    each embedding dimension across the bank (not of each text); this is kept on purpose, so
    that the chosen texts are theirs. A dimension that is constant over the bank stays zero.

    Args:
        text_embeddings: ``[T, E]`` text embeddings.
        coefficient: the scale (their ``--coefficient``, 100).

    Returns:
        ``[T, E]`` the dictionary's atoms, float64.
    """
    centered = text_embeddings.double() - text_embeddings.double().mean(dim=0, keepdim=True)
    norms = centered.norm(dim=0, keepdim=True)
    return coefficient * centered / torch.where(norms > 0, norms, torch.ones_like(norms))


def orthogonal_matching_pursuit(signals: Tensor, dictionary: Tensor, n_components: int,
                                chunk: int = 256) -> Tensor:
    """Sparse codes of ``signals`` over ``dictionary`` with at most ``n_components`` atoms each.

    Args:
        signals: ``[S, E]`` vectors to decompose (e.g. each neuron's first component).
        dictionary: ``[T, E]`` atoms (rows), e.g. :func:`preprocess_bank` of text embeddings.
        n_components: atoms per signal (fewer when the residual vanishes first).
        chunk: signals processed at once (memory ``chunk * T`` floats per step).

    Returns:
        ``[S, T]`` float64 coefficients, at most ``n_components`` non-zero per row, with
        ``signals ~= codes @ dictionary``.

    Examples::

        >>> codes = orthogonal_matching_pursuit(pcs, preprocess_bank(texts), 32)
        >>> codes.count_nonzero(dim=1).max() <= 32
    """
    if signals.dim() != 2 or dictionary.dim() != 2 or signals.shape[1] != dictionary.shape[1]:
        raise ValueError(f"signals must be [S, E] and dictionary [T, E] with the same E, got "
                         f"{list(signals.shape)} and {list(dictionary.shape)}.")
    if isinstance(n_components, bool) or not isinstance(n_components, int) or not (
            1 <= n_components <= dictionary.shape[0]):
        raise ValueError(f"n_components must be an int in 1..{dictionary.shape[0]} (the number "
                         f"of atoms), got {n_components!r}.")
    atoms = dictionary.double()
    codes = [_omp_chunk(part.double(), atoms, n_components) for part in signals.split(chunk)]
    return torch.cat(codes) if codes else atoms.new_zeros(0, atoms.shape[0])


def _omp_chunk(signals: Tensor, atoms: Tensor, n_components: int) -> Tensor:
    """:func:`orthogonal_matching_pursuit` of ``[S, E]`` signals, in float64."""
    count = signals.shape[0]
    rows = torch.arange(count, device=signals.device)
    chosen = signals.new_zeros(count, n_components, dtype=torch.long)
    active = torch.ones(count, dtype=torch.bool, device=signals.device)
    used = torch.zeros(count, atoms.shape[0], dtype=torch.bool, device=signals.device)
    coefficients = signals.new_zeros(count, 0)
    residual, steps = signals, 0
    for step in range(n_components):
        scores = (residual @ atoms.T).abs().masked_fill(used, -1.0)
        best, index = scores.max(dim=1)
        active &= best * best > _TINY  # nothing left to explain: this signal stops here
        if not active.any():
            break
        # A stopped signal repeats its last atom: the minimum-norm least squares below split its
        # coefficient over the copies, and they are added back together.
        index = torch.where(active, index, chosen[:, max(step - 1, 0)])
        chosen[:, step] = index
        used[rows[active], index[active]] = True
        steps = step + 1
        selected = atoms[chosen[:, :steps]]  # [S, s, E]
        # gelsd (CPU): minimum-norm solutions, also for repeated or dependent atoms.
        coefficients = torch.linalg.lstsq(selected.transpose(1, 2).cpu(), signals[..., None].cpu(),
                                          driver="gelsd").solution[..., 0].to(signals.device)
        residual = signals - (coefficients[:, None, :] @ selected)[:, 0]
    codes = signals.new_zeros(count, atoms.shape[0])
    if steps:
        codes.scatter_add_(1, chosen[:, :steps], coefficients)
    return codes


def top_atoms(codes: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """The ``count`` largest coefficients of each code by magnitude, largest first (the order of
    the authors' JSON): ``(indices [S, count], values [S, count])``; zero codes pad the end."""
    count = min(count, codes.shape[1])
    order = codes.abs().topk(count, dim=1).indices
    return order, codes.gather(1, order)
