"""Named models, text banks and datasets that packages register with the library.

The library never imports the packages that provide them (the toy world in
:mod:`captum_clipspan.toy`, or a user's plugin): a package declares an entry point in the group
``captum_clipspan.plugins`` whose value is a function that registers its names, and the first
lookup of an unknown name loads every such plugin once. Registering by hand
(:func:`register_model`, ...) works too, e.g. in a notebook.

Examples::

    >>> from captum_clipspan import registry
    >>> registry.register_text_bank("colors", lambda: ["red", "green", "blue"])
    >>> cs.text_bank("colors")
    ['red', 'green', 'blue']
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["KINDS", "load_plugins", "lookup", "names", "register_dataset", "register_model",
           "register_text_bank"]

PLUGIN_GROUP = "captum_clipspan.plugins"

KINDS = ("model", "text_bank", "dataset")
_ENTRIES: dict[str, dict[str, Callable[..., Any]]] = {kind: {} for kind in KINDS}
_loaded = False
_lock = threading.RLock()


def _register(kind: str, name: str, factory: Callable[..., Any]) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {kind} name must be a non-empty string, got {name!r}.")
    if not callable(factory):
        raise TypeError(f"the {kind} {name!r} needs a callable, got {type(factory).__name__}.")
    with _lock:
        _ENTRIES[kind][name] = factory


def register_model(name: str, loader: Callable[..., Any]) -> None:
    """Register ``loader(device=..., **kwargs) -> (model, tokenizer, preprocess)`` (an open_clip
    model) under ``name``, for :meth:`HookedCLIP.from_pretrained
    <captum_clipspan.HookedCLIP.from_pretrained>`."""
    _register("model", name, loader)


def register_text_bank(name: str, texts: Callable[[], list[str]]) -> None:
    """Register a text bank: ``texts()`` returns its descriptions, for
    :func:`~captum_clipspan.text_bank`."""
    _register("text_bank", name, texts)


def register_dataset(name: str, factory: Callable[..., Any]) -> None:
    """Register a dataset factory (e.g. a segmentation benchmark's scenes) under ``name``."""
    _register("dataset", name, factory)


def load_plugins() -> None:
    """Run every ``captum_clipspan.plugins`` entry point once (they register their names)."""
    global _loaded
    with _lock:
        if _loaded:
            return
        _loaded = True
        from importlib.metadata import entry_points

        for entry in entry_points(group=PLUGIN_GROUP):
            entry.load()()


def names(kind: str) -> list[str]:
    """The registered names of one kind (``"model"``, ``"text_bank"`` or ``"dataset"``)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    load_plugins()
    return sorted(_ENTRIES[kind])


def lookup(kind: str, name: str) -> Callable[..., Any] | None:
    """The factory registered as ``name``, or ``None`` when there is none."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    if not isinstance(name, str):
        return None
    if name not in _ENTRIES[kind]:
        load_plugins()
    return _ENTRIES[kind].get(name)
