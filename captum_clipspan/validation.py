"""One validator per kind of argument: layers, heads, texts, targets, labels, images, sizes,
dtypes, text files and output names.

Every public function that takes one of these reads it through the function here, so an argument
means the same thing everywhere and a bad one gets the same error everywhere: a ``ValueError`` or
``TypeError`` of one sentence that names the argument (or file), what was given and what is
accepted. Nothing is read by position or shape when it could be read otherwise: indices are never
wrapped (negative indices count from the end when they are in range), a string is never split
into characters, labels named after classes are matched by name, and a value that is converted
(float labels that are whole numbers, a figure name without an extension) is converted with a
warning or in the returned value, never silently misread.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
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


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """One of a fixed set of names, or a ``ValueError`` naming what is accepted.

    Examples::

        >>> check_choice("centered", "convention", ("reference", "centered"))
        'centered'
    """
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}.")
    return value


def check_eval_mode(vit: Any, why: str) -> None:
    """Refuse a tower in training mode (dropout would make ``why`` meaningless)."""
    if vit.model.training:
        raise ValueError(f"the model is in training mode; call clip.eval() first ({why}).")


def check_count(value: Any, name: str, minimum: int = 1) -> int:
    """A size or count (images, texts, workers, ...) -> ``int``, refused below ``minimum``.

    Examples::

        >>> check_count(8, "batch_size")
        8
    """
    if not _is_index(value):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__}).")
    if int(value) < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {int(value)}.")
    return int(value)


def check_texts(texts: Any, name: str = "texts", single: bool = True) -> list[str]:
    """A list of strings, never a string split into its characters.

    Args:
        texts: a non-empty sequence of strings (or, when ``single``, one string: a list of one).
        name: the argument's name, for the message.
        single: accept one string as a list of one; when ``False`` a bare string is refused
            (class names, templates, prompts: a list is meant).
    """
    if isinstance(texts, str):
        if single:
            return [texts]
        raise TypeError(f"{name} must be a list of strings, got the string {texts!r}; write "
                        f"[{texts!r}] for a list of one.")
    if isinstance(texts, (bytes, Mapping)) or not isinstance(texts, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}.")
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name} must be a list of strings; got {bad[0]!r} "
                        f"({type(bad[0]).__name__}) among them.")
    if len(texts) == 0:
        raise ValueError(f"{name} is empty; pass at least one text.")
    return list(texts)


def check_images(images: Any, image_size: Sequence[int]) -> Tensor:
    """A finite floating-point batch ``[B, 3, H, W]`` with ``B >= 1`` of the model's size."""
    height, width = image_size
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor [B, 3, {height}, {width}], got "
                        f"{type(images).__name__}; use HookedCLIP.preprocess_images for PIL "
                        "images.")
    if images.dim() != 4 or tuple(images.shape[1:]) != (3, height, width):
        raise ValueError(f"images must have shape [B, 3, {height}, {width}] for this model, got "
                         f"{list(images.shape)}; resize with HookedCLIP.preprocess_images.")
    if images.shape[0] == 0:
        raise ValueError(f"images is an empty batch [0, 3, {height}, {width}]; pass at least "
                         "one image.")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got {images.dtype}.")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values.")
    return images


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
          "float16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp64": torch.float64, "float64": torch.float64}
"""The dtype names every ``dtype=`` accepts besides ``torch.dtype`` objects."""
PRECISIONS = ("fp32", "fp16", "bf16", "pure_fp16", "pure_bf16")
"""open_clip's precisions: ``fp16``/``bf16`` keep LayerNorms in fp32, ``pure_*`` cast all."""


def resolve_dtype(dtype: Any, name: str = "dtype") -> torch.dtype:
    """A floating-point dtype, or its name (``"bf16"``, ``"float16"``, ...) -> ``torch.dtype``."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower().removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.lower().removeprefix("torch.")]
    raise TypeError(f"{name} must be a floating-point torch.dtype or one of {sorted(DTYPES)}, "
                    f"got {dtype!r}.")


def resolve_precision(precision: Any) -> tuple[str, torch.dtype]:
    """open_clip's ``precision`` (a name in :data:`PRECISIONS`, or a dtype or its name) -> the
    name open_clip takes and the dtype of the weights; unknown names are refused, never fp32."""
    if isinstance(precision, str) and precision in PRECISIONS:
        return precision, resolve_dtype(precision.removeprefix("pure_"))
    try:
        dtype = resolve_dtype(precision, "precision")
    except TypeError:
        raise ValueError(f"precision must be one of {list(PRECISIONS)} (or a dtype such as "
                         f"torch.bfloat16), got {precision!r}.") from None
    names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
    if dtype not in names:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}.")
    return names[dtype], dtype


def read_text(path: str | Path, what: str = "text file") -> str:
    """The contents of a UTF-8 text file; a binary or otherwise-encoded file is refused.

    Args:
        path: the file.
        what: what the file is meant to be, for the message (``"text bank"``, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} does not exist or is not a file.")
    data = path.read_bytes()
    if b"\0" in data:
        raise ValueError(f"{what} {path} is a binary file; give a UTF-8 text file.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte 0x{data[error.start]:02x} at "
                         f"offset {error.start}); save it as UTF-8.") from None


def read_lines(path: str | Path, what: str = "text file") -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped; an empty file is refused."""
    lines = [line.strip() for line in read_text(path, what).splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{what} {path} has no non-empty lines.")
    return lines


def output_file(path: str | Path, suffixes: Sequence[str], name: str = "output file") -> Path:
    """An output file name with one of ``suffixes`` (the first is added, and returned, when it
    has none), so what is reported is the file that is written.

    Examples::

        >>> output_file("map", [".png", ".pdf"])
        PosixPath('map.png')
    """
    path = Path(path)
    if not path.suffix:
        return path.with_name(path.name + suffixes[0])
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{name} {str(path)!r} has the extension {path.suffix!r}; accepted: "
                         f"{', '.join(suffixes)} (or none, for {suffixes[0]}).")
    return path


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


def check_labels(labels: Any, n_examples: int, n_classes: int,
                 mapping: Tensor | None = None) -> Tensor:
    """Class labels for an accuracy -> ``LongTensor [N]`` in ``0..n_classes - 1``.

    Args:
        labels: ``[N]`` class indices (a sequence, array or integer tensor).
        n_examples: ``N``, the number of images scored.
        n_classes: ``C``, the classifier's number of classes.
        mapping: ``[K]`` from :func:`match_classes`: label ``k`` of the data is class
            ``mapping[k]`` of the classifier (``None``: labels are the classifier's indices).
    """
    array = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if mapping is not None and array.dtype.kind in "iu" and array.size:
        known = (array >= 0) & (array < len(mapping))
        array = np.where(known, mapping.numpy()[np.clip(array, 0, len(mapping) - 1)], array)
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


def label_names(data: Any) -> list[str] | None:
    """The class names a data source's labels index (``data.classes``: an image folder's
    sub-folders, a cache of one, torchvision's folders), looked up through DataLoaders and
    Subsets; ``None`` when its labels are plain indices."""
    while getattr(data, "classes", None) is None and hasattr(data, "dataset"):
        data = data.dataset
    names = getattr(data, "classes", None)
    return [str(name) for name in names] if names else None


def match_classes(data: Any, classifier: Any, labels: Any = None) -> Tensor | None:
    """Match the labels of ``data`` to a classifier's classes by name, never by position.

    Args:
        data: the labelled data (an image folder, a cache of one, a Dataset or DataLoader);
            its labels are matched when it names them (:func:`label_names`).
        classifier: anything with ``classnames`` (a
            :class:`~captum_clipspan.ZeroShotClassifier`).
        labels: labels given explicitly (indices into the classifier's classes: nothing to
            match), or ``None`` for the data's own.

    Returns:
        ``LongTensor [K]``: label ``k`` of the data is class ``mapping[k]`` of the classifier,
        for :func:`check_labels`; ``None`` when the labels are the classifier's indices already.

    Raises:
        ValueError: a label name that is not one of the classifier's class names.

    Examples::

        >>> zs = cs.ZeroShotClassifier(clip, ["dog", "cat"])   # over images/cat, images/dog
        >>> match_classes(cs.ImageFolder("images", clip.preprocess), zs)
        tensor([1, 0])
    """
    names = None if labels is not None else label_names(data)
    if names is None:
        return None
    classnames = getattr(classifier, "classnames", None)
    if not classnames:
        raise ValueError(f"the labels of the data are named {names}, but the classifier has no "
                         "class names to match them to; build it with ZeroShotClassifier(clip, "
                         "names) or pass labels= (indices into its classes).")
    index = {str(name): i for i, name in enumerate(classnames)}
    missing = [name for name in names if name not in index]
    if missing:
        raise ValueError(f"the labels of the data are the classes {names}, but {missing} are not "
                         f"among the classifier's class names {list(classnames)}; labels are "
                         "matched by name, not position: name the classes after them (or map "
                         "them: ZeroShotClassifier(clip, {'folder name': 'prompt name'})), or "
                         "pass labels=.")
    return torch.tensor([index[name] for name in names], dtype=torch.long)


def check_shapes(values: Mapping[str, Any], expected: Mapping[str, Sequence[int]],
                 what: str) -> None:
    """Each named tensor has the shape this model gives it, else ``what`` is from another model.

    Args:
        values: tensors by name (those absent from ``expected`` are not checked).
        expected: the shape of each name for this model.
        what: the argument the tensors come from, for the message.
    """
    wrong = [f"{name} {list(values[name].shape)} (this model: {list(shape)})"
             for name, shape in expected.items()
             if name in values and tuple(values[name].shape) != tuple(shape)]
    if wrong:
        raise ValueError(f"{what} do not fit this model: {'; '.join(wrong)}; compute them with "
                         "this model.")


def batch_labels(labels: Any, n_examples: int) -> Tensor:
    """The labels of a batch from a data source -> ``LongTensor [b]`` (``-1``: none).

    ``None`` or a per-example item that is not one number (a mask, a caption) means no labels,
    said in a warning for the latter; whole-number floats and bools are converted with a
    warning; fractional floats and strings are refused.
    """
    if labels is None:
        return torch.full((n_examples,), -1, dtype=torch.long)
    if isinstance(labels, (list, tuple)) and labels and isinstance(labels[0], str):
        raise TypeError(f"labels must be class indices, got strings ({labels[0]!r}, ...); map "
                        "the class names to indices (or use an image folder, whose labels are "
                        "matched to class names by name).")
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.shape[0] != n_examples:
        warnings.warn(f"the second item of each example has shape {list(labels.shape[1:])}, not "
                      "one class index; the images are treated as unlabeled (label -1).",
                      stacklevel=3)
        return torch.full((n_examples,), -1, dtype=torch.long)
    if labels.is_floating_point():
        if not torch.equal(labels, labels.round()) or not torch.isfinite(labels).all():
            raise TypeError(f"labels must be class indices, got fractional floats "
                            f"{labels[:3].tolist()}.")
        warnings.warn("float labels converted to integer class indices.", stacklevel=3)
    elif labels.dtype == torch.bool:
        warnings.warn("bool labels converted to class indices 0 and 1.", stacklevel=3)
    elif labels.is_complex():
        raise TypeError(f"labels must be class indices, got {labels.dtype}.")
    return labels.long()
