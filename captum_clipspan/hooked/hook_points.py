"""Hook points whose hooks belong to the thread that added them, and the root module over them.

PyTorch keeps a module's hooks in dicts shared by every caller, so a hook one thread adds (a
user's ``hooks()`` context, the decomposition's capture) would fire in another thread's forward
pass. Here every hook container of a hook point, PyTorch's and TransformerLens', is per thread:
a forward pass runs exactly the hooks of the thread that runs it, whether they were added with
``add_hook``, ``hooks()`` or a plain ``register_forward_hook`` (as Captum's layer methods add them).
A hook added in one thread therefore does not fire in a forward pass run by another thread.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from transformer_lens.hook_points import HookPoint as LensHookPoint
from transformer_lens.HookedRootModule import HookedRootModule as LensHookedRootModule

# Every container a hook lives in: PyTorch's (read by ``Module.__call__``) and TransformerLens'.
_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
               "_backward_pre_hooks")
_HOOK_OTHERS = {"fwd_hooks": list, "bwd_hooks": list, "ctx": dict}


class _ThreadHooks(threading.local):
    """One thread's hook containers (``threading.local`` runs ``__init__`` once per thread)."""

    def __init__(self) -> None:
        for name in _HOOK_DICTS:
            setattr(self, name, OrderedDict())
        for name, kind in _HOOK_OTHERS.items():
            setattr(self, name, kind())


def _per_thread(name: str) -> property:
    def get(point: HookPoint) -> Any:
        return getattr(point.__dict__["_thread_hooks"], name)

    def set_(point: HookPoint, value: Any) -> None:
        setattr(point.__dict__["_thread_hooks"], name, value)

    return property(get, set_, doc=f"The calling thread's ``{name}``.")


class HookPoint(LensHookPoint):
    """TransformerLens' ``HookPoint`` with per-thread hooks (module docstring); a copy or a
    pickle starts with no hooks."""

    def __init__(self) -> None:
        self.__dict__["_thread_hooks"] = _ThreadHooks()  # before nn.Module sets the hook dicts
        super().__init__()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        del state["_thread_hooks"]  # hooks are their threads' state, not the model's
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__["_thread_hooks"] = _ThreadHooks()
        super().__setstate__(state)

    def clear_context(self) -> None:
        self.ctx = {}  # TransformerLens deletes the attribute first; a property keeps it


for _name in (*_HOOK_DICTS, *_HOOK_OTHERS):
    setattr(HookPoint, _name, _per_thread(_name))
del _name

# A hooks() context tags its hooks with a level no other context has, so that on exit it removes
# exactly its own: TransformerLens tags them with the nesting depth, which a hook kept by an
# earlier context (``reset_hooks_end=False``) shares, and would remove it.
_CONTEXT_LEVELS = itertools.count(1)


class _ContextLevel(threading.local):
    value = 0


class HookedRootModule(LensHookedRootModule):
    """TransformerLens' root module over per-thread :class:`HookPoint` s.

    ``hooks()`` (and so ``run_with_hooks`` and ``run_with_cache``) acts for the calling thread
    only and removes exactly the hooks it added. ``lock`` (reentrant) serializes calls that must
    not interleave on one model.
    """

    def __init__(self, *args: Any) -> None:
        self.__dict__["_context_level"] = _ContextLevel()  # before TransformerLens sets it
        super().__init__(*args)
        self.lock = threading.RLock()

    @property
    def context_level(self) -> int:
        """The calling thread's innermost ``hooks()`` context (0: none)."""
        return self.__dict__["_context_level"].value

    @context_level.setter
    def context_level(self, value: int) -> None:
        self.__dict__["_context_level"].value = value

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str | Callable, Callable]] = (),
              bwd_hooks: Sequence[tuple[str | Callable, Callable]] = (),
              reset_hooks_end: bool = True, clear_contexts: bool = False) -> Iterator[Any]:
        """TransformerLens' ``hooks()``: the hooks for the duration of the block, in the
        calling thread only, removed on exit (also when it raises) unless ``reset_hooks_end``
        is false."""
        outer = self.context_level
        self.context_level = next(_CONTEXT_LEVELS)
        try:
            for name, hook in fwd_hooks:
                self._enable_hook(name=name, hook=hook, dir="fwd")
            for name, hook in bwd_hooks:
                self._enable_hook(name=name, hook=hook, dir="bwd")
            yield self
        finally:
            if reset_hooks_end:
                self.reset_hooks(clear_contexts, including_permanent=False,
                                 level=self.context_level)
            self.context_level = outer
