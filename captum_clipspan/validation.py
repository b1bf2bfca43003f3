"""One validator per kind of argument: layers, heads, texts, targets and labels.

Every public function that takes one of these reads it through the function here, so an argument
means the same thing everywhere and a bad one gets the same error everywhere. Indices are never
wrapped: negative indices count from the end when they are in range, and anything out of range,
a ``bool``, a float or a string is refused with an error that says what is accepted.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from .hooked.clip import HookedCLIP

TextsType = Any  # str | Sequence[str] | Tensor | ZeroShotClassifier | None
TargetType = None | int | Sequence[int] | Tensor


def _is_index(value: Any) -> bool:
    """An int (Python, NumPy or a 0-d integer tensor), never a bool."""
    if isinstance(value, Tensor):
        return value.dim() == 0 and not value.is_floating_point() and value.dtype != torch.bool
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def resolve_layer(layer: Any, n_layers: int, name: str = "layer") -> int:
    """One layer index in ``-n_layers..n_layers - 1`` -> ``0..n_layers - 1`` (never wrapped).

    Examples::

        >>> resolve_layer(-1, 12)
        11
    """
    if not _is_index(layer):
        raise TypeError(f"{name} must be an int layer index, got {layer!r} "
                        f"({type(layer).__name__}).")
    layer = int(layer)
    if not -n_layers <= layer < n_layers:
        raise ValueError(f"{name} {layer} is out of range for a model with {n_layers} layers "
                         f"(accepted: 0..{n_layers - 1} or -{n_layers}..-1).")
    return layer % n_layers


def resolve_layers(layers: int | Sequence[int] | None, n_layers: int) -> tuple[int, ...]:
    """A layer selection -> sorted unique tuple of indices in ``0..n_layers - 1``.

    Args:
        layers: ``None`` (all layers), an int or a sequence of ints; negative indices count from
            the end. Strings, bools, floats and out-of-range indices are refused.
        n_layers: the model's number of layers.

    Examples::

        >>> resolve_layers([-1, 0, -1], 12)
        (0, 11)
    """
    if layers is None:
        return tuple(range(n_layers))
    if _is_index(layers):
        layers = [layers]
    if isinstance(layers, (str, bytes)) or not isinstance(layers, (Sequence, Tensor, np.ndarray)):
        raise TypeError(f"layers must be None, an int or a sequence of ints, got {layers!r}.")
    bad = [layer for layer in layers if not _is_index(layer)]
    if bad:
        raise TypeError(f"layers must be ints (negative counts from the end), got {bad!r} in "
                        f"{layers!r}.")
    if len(layers) == 0:
        raise ValueError("layers must not be empty; pass None for all layers.")
    out = [int(layer) for layer in layers if not -n_layers <= int(layer) < n_layers]
    if out:
        raise ValueError(f"layers {out} are out of range for a model with {n_layers} layers "
                         f"(accepted: 0..{n_layers - 1} or negative indices).")
    return tuple(sorted({int(layer) % n_layers for layer in layers}))


def resolve_head(head: Any, n_heads: int) -> int:
    """One head index in ``0..n_heads - 1`` (negative counts from the end; never wrapped)."""
    if not _is_index(head):
        raise TypeError(f"a head index must be an int, got {head!r} ({type(head).__name__}).")
    head = int(head)
    if not -n_heads <= head < n_heads:
        raise ValueError(f"head {head} is out of range: heads are ints in 0..{n_heads - 1}.")
    return head % n_heads


def resolve_heads(heads: Any, layers: int | Sequence[int] | None, n_layers: int,
                  n_heads: int) -> tuple[tuple[int, ...], Tensor]:
    """A head selection -> the layers it covers and a ``[L_s, H]`` 0/1 mask over them.

    The rule: ``heads`` is ``None`` (every head), a list of head ints (those heads of every
    selected layer), or a list of ``(layer, head)`` pairs (which then choose the layers, so
    ``layers`` must be ``None``). A bare tuple of two ints is refused: it reads both ways.

    Examples::

        >>> layers, mask = resolve_heads([(3, 1), (5, 0)], None, 12, 8)
        >>> layers, mask.shape
        ((3, 5), torch.Size([2, 8]))
    """
    if isinstance(heads, tuple) and len(heads) == 2 and all(_is_index(h) for h in heads):
        raise ValueError(f"heads={heads!r} is ambiguous: write heads=[{heads[0]}, {heads[1]}] "
                         f"for heads {heads[0]} and {heads[1]} of every selected layer, or "
                         f"heads=[({heads[0]}, {heads[1]})] for layer {heads[0]}, head "
                         f"{heads[1]}.")
    if heads is None or _is_index(heads):
        heads = None if heads is None else [heads]
    elif isinstance(heads, (str, bytes)) or not isinstance(heads, Sequence) or not heads:
        raise TypeError(f"heads must be None, a non-empty list of head ints or a list of "
                        f"(layer, head) pairs, got {heads!r}.")
    pairs = heads is not None and all(isinstance(h, (tuple, list)) for h in heads)
    if heads is not None and not pairs and not all(_is_index(h) for h in heads):
        raise TypeError(f"heads must be all ints (heads of every selected layer) or all "
                        f"(layer, head) pairs, got {heads!r}.")
    if pairs:
        if layers is not None:
            raise ValueError(f"give layers= or (layer, head) pairs in heads=, not both: the "
                             f"pairs {heads!r} already choose their layers (got layers="
                             f"{layers!r}).")
        if any(len(pair) != 2 for pair in heads):
            raise ValueError(f"(layer, head) pairs have two entries each, got {heads!r}.")
        chosen = [(resolve_layer(layer, n_layers), resolve_head(head, n_heads))
                  for layer, head in heads]
        selected = tuple(sorted({layer for layer, _ in chosen}))
        mask = torch.zeros(len(selected), n_heads)
        for layer, head in chosen:
            mask[selected.index(layer), head] = 1.0
        return selected, mask
    selected = resolve_layers(layers, n_layers)
    mask = torch.zeros(len(selected), n_heads)
    if heads is None:
        mask.fill_(1.0)
    else:
        mask[:, [resolve_head(head, n_heads) for head in heads]] = 1.0
    return selected, mask


def check_text_embeddings(text_embeddings: Tensor, width: int) -> Tensor:
    """Validate text embeddings ``[E]`` or ``[T, E]`` and return them as ``[T, E]``."""
    if not isinstance(text_embeddings, Tensor):
        raise TypeError(f"text embeddings must be a torch.Tensor [T, {width}], "
                        f"got {type(text_embeddings).__name__}.")
    if text_embeddings.dim() == 1:
        text_embeddings = text_embeddings[None]
    if text_embeddings.dim() != 2 or text_embeddings.shape[1] != width:
        raise ValueError(f"text embeddings must have shape [{width}] or [T, {width}] for this "
                         f"model's joint space, got {list(text_embeddings.shape)}.")
    if text_embeddings.shape[0] == 0:
        raise ValueError("text embeddings are empty (T = 0); pass at least one text.")
    if not torch.isfinite(text_embeddings).all():
        raise ValueError("text embeddings contain NaN or infinite values.")
    return text_embeddings




def resolve_texts(clip: HookedCLIP, texts: TextsType) -> Tensor | None:
    """``texts=`` -> text embeddings ``[T, E]``, or ``None`` for joint-space vectors.

    Args:
        clip: the model whose tokenizer encodes strings and whose joint width ``E`` is checked.
        texts: a string, a list/tuple of strings, a tensor of text embeddings ``[E]`` or
            ``[T, E]``, a :class:`~captum_clipspan.ZeroShotClassifier` (its class embeddings,
            ``T = C``), or ``None``.
    """
    if texts is None:
        return None
    # A classifier is recognised by its class embeddings, so that validation imports nothing above.
    class_embeddings = getattr(texts, "class_embeddings", None)
    if isinstance(class_embeddings, Tensor):
        return check_text_embeddings(class_embeddings, clip.embed_dim)
    if isinstance(texts, str) or (isinstance(texts, (list, tuple)) and texts
                                  and all(isinstance(t, str) for t in texts)):
        return clip.encode_text(texts)
    if isinstance(texts, Tensor) and texts.is_floating_point():
        return check_text_embeddings(texts, clip.embed_dim)
    raise TypeError(f"texts must be a string, a list of strings, text embeddings "
                    f"[T, {clip.embed_dim}] or [{clip.embed_dim}], a ZeroShotClassifier, or None "
                    f"for joint-space vectors; got {type(texts).__name__}.")


def resolve_target(target: TargetType, n_examples: int, n_texts: int | None) -> Tensor | None:
    """Captum's ``target``: ``None`` or one index per example into the texts -> ``[B]`` or None.

    Args:
        target: ``None`` (every text), an int (the same text for every example), a list of ints
            or an integer tensor ``[B]`` (one text per example).
        n_examples: ``B``.
        n_texts: ``T``, the number of texts given as ``texts=`` (``None``: no texts).
    """
    if target is None:
        return None
    if isinstance(target, str) or (isinstance(target, (list, tuple)) and target
                                   and any(isinstance(t, str) for t in target)):
        raise TypeError("target selects one of the texts per example (an int, a list of ints "
                        "or a LongTensor [B]); pass the texts themselves as texts=, e.g. "
                        "attribute(images, texts=['a dog', 'a cat'], target=[0, 1]).")
    if isinstance(target, Tensor) and (target.is_floating_point() or target.dtype == torch.bool):
        raise TypeError(f"target is a {target.dtype} tensor: pass text embeddings as texts=, "
                        "and as target one index per example into them (a LongTensor [B]).")
    values = list(target.reshape(-1)) if isinstance(target, Tensor) else (
        list(target) if isinstance(target, (list, tuple, np.ndarray)) else [target])
    bad = [v for v in values if not _is_index(v)]
    if bad:
        raise TypeError(f"target must be None, an int, a list of ints or a LongTensor [B] of "
                        f"indices into texts=; got {bad[:3]!r}. Texts go in texts=.")
    if n_texts is None:
        raise ValueError("target selects one of the texts per example: pass texts= (strings, "
                         "text embeddings or a ZeroShotClassifier) as well.")
    indices = torch.tensor([int(v) for v in values], dtype=torch.long)
    if indices.numel() == 1:
        indices = indices.expand(n_examples)
    if indices.numel() != n_examples:
        raise ValueError(f"target must give one text index per example ({n_examples}) or one "
                         f"int for all, got {indices.numel()}.")
    if indices.min() < 0 or indices.max() >= n_texts:
        raise ValueError(f"target indices must be in 0..{n_texts - 1} (one of the {n_texts} "
                         f"texts), got {indices.min().item()}..{indices.max().item()}.")
    return indices


def check_indices(values: Any, name: str, n: int | None = None) -> Tensor:
    """Non-negative integer indices ``[N]`` -> ``LongTensor [N]``, refused with a clear error."""
    array = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer indices, got dtype {array.dtype}.")
    if array.ndim != 1 or (n is not None and array.shape[0] != n):
        expected = "[N]" if n is None else f"[{n}] (one per example)"
        raise ValueError(f"{name} must have shape {expected}, got {list(array.shape)}.")
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must be non-negative, got a minimum of {array.min()}.")
    return torch.from_numpy(array.astype(np.int64))


def check_labels(labels: Any, n_examples: int, n_classes: int) -> Tensor:
    """Class labels for an accuracy -> ``LongTensor [N]`` in ``0..n_classes - 1``.

    Args:
        labels: ``[N]`` class indices (a sequence, array or integer tensor).
        n_examples: ``N``, the number of images scored.
        n_classes: ``C``, the classifier's number of classes.
    """
    array = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if array.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class indices, got dtype {array.dtype}.")
    if array.shape != (n_examples,):
        raise ValueError(f"labels must be {n_examples} class indices (one per image), got shape "
                         f"{list(array.shape)}.")
    if n_examples and (array.min() < 0 or array.max() >= n_classes):
        raise ValueError(f"labels must be class indices in 0..{n_classes - 1} for this "
                         f"classifier ({n_classes} classes), got {array.min()}..{array.max()}; "
                         "negative labels mean the images have none: pass labels=.")
    return torch.from_numpy(array.astype(np.int64))
