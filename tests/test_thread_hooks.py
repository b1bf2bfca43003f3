"""Each call sees exactly its own caller's hooks: a hook added in one thread never fires in a
forward pass another thread runs, a hooks() context removes only what it added, and a model with
its lock and per-thread hooks can still be copied and pickled."""

from __future__ import annotations

import copy
import pickle
import threading
from collections.abc import Callable

import pytest
import torch
from conftest import images_for, small_clip

import captum_clipspan as cs


@pytest.fixture(scope="module")
def toy():
    return cs.HookedCLIP.from_pretrained("toy")


def _images(clip: cs.HookedCLIP, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, *clip.visual.image_size, generator=generator, dtype=clip.dtype)


def _double_values(v, hook):
    return v * 2.0


def _raise(tensor, hook):
    raise RuntimeError("the other thread's hook")


def _while_other_thread_holds(clip: cs.HookedCLIP, hooks: list, reset_hooks_end: bool,
                              work: Callable[[], object]) -> object:
    """Run ``work`` here while another thread sits inside ``clip.visual.hooks(hooks)``, then let
    it leave; the other thread's exceptions fail the test."""
    entered, done, errors = threading.Event(), threading.Event(), []

    def hold() -> None:
        try:
            with clip.visual.hooks(fwd_hooks=hooks, reset_hooks_end=reset_hooks_end):
                entered.set()
                done.wait(60)
        except Exception as error:  # a thread's exception would not fail the test
            errors.append(repr(error))
        finally:
            entered.set()

    other = threading.Thread(target=hold)
    other.start()
    entered.wait(60)
    try:
        return work()
    finally:
        done.set()
        other.join()
        assert errors == []


def test_another_threads_editing_hook_leaves_decompose_bit_for_bit(toy):
    images = _images(toy)
    expected = cs.decompose(toy, images, granularity="token")
    parts = _while_other_thread_holds(
        toy, [("blocks.1.attn.hook_v", _double_values)], True,
        lambda: cs.decompose(toy, images, granularity="token"))
    for name in ["heads", "tokens", "attns", "mlps", "image_embed"]:
        assert torch.equal(getattr(parts, name), getattr(expected, name)), name


def test_another_threads_raising_hook_never_surfaces_here(toy):
    images = _images(toy)
    expected = toy.visual(images)
    hooks = [(name, _raise) for name in toy.visual.hook_dict]
    embeds, parts = _while_other_thread_holds(
        toy, hooks, True, lambda: (toy.visual(images), cs.decompose(toy, images)))
    assert torch.equal(embeds, expected)
    assert torch.equal(parts.image_embed, cs.decompose(toy, images).image_embed)


def test_the_caller_still_sees_its_own_hooks_in_a_thread(toy):
    images = _images(toy)
    result: dict[str, object] = {}

    def work() -> None:
        with toy.visual.hooks(fwd_hooks=[("blocks.1.attn.hook_v", _raise)]):
            try:
                toy.visual(images)
            except RuntimeError as error:
                result["raised"] = str(error)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert result == {"raised": "the other thread's hook"}


def test_another_threads_context_exit_keeps_my_hooks():
    clip = small_clip("tok", torch.float64)
    images = images_for(clip)
    seen: list[str] = []
    mine = [("blocks.0.hook_resid_post", lambda tensor, hook: seen.append(hook.name))]
    entered, leave, errors = threading.Event(), threading.Event(), []

    def other() -> None:
        try:
            with clip.visual.hooks(fwd_hooks=[("hook_embed", _double_values)]):
                entered.set()
                leave.wait(60)
        except Exception as error:  # a thread's exception would not fail the test
            errors.append(repr(error))
        finally:
            entered.set()

    thread = threading.Thread(target=other)
    thread.start()
    entered.wait(60)
    with clip.visual.hooks(fwd_hooks=mine):  # entered after the other thread's context ...
        leave.set()
        thread.join()  # ... which it outlives
        clip.visual(images)
    assert errors == []
    assert seen == ["blocks.0.hook_resid_post"]
    assert not any(point.has_hooks() for point in clip.visual.hook_dict.values())


def test_a_kept_hook_keeps_firing_across_decompose_calls(toy):
    images = _images(toy)
    calls: list[int] = []
    kept = [("blocks.0.hook_resid_post", lambda tensor, hook: calls.append(len(tensor)))]
    with toy.visual.hooks(fwd_hooks=kept, reset_hooks_end=False):
        pass
    try:
        for expected_calls in (1, 2):
            cs.decompose(toy, images)
            assert len(calls) == expected_calls
        with toy.visual.hooks(fwd_hooks=[("hook_embed", lambda tensor, hook: None)]):
            toy.visual(images)  # another context at the kept hook's nesting level
        toy.visual(images)
        assert len(calls) == 4
    finally:
        toy.visual.reset_hooks(including_permanent=True)
    toy.visual(images)
    assert len(calls) == 4


def test_a_kept_hook_of_another_thread_never_fires_here(toy):
    images = _images(toy)
    expected = cs.decompose(toy, images)

    def keep() -> None:
        with toy.visual.hooks(fwd_hooks=[("blocks.1.attn.hook_v", _double_values)],
                              reset_hooks_end=False):
            pass

    thread = threading.Thread(target=keep)
    thread.start()
    thread.join()
    assert torch.equal(cs.decompose(toy, images).heads, expected.heads)


def test_threads_with_hooks_and_threads_decomposing_agree_with_one_thread(toy):
    images = _images(toy)
    expected = cs.decompose(toy, images, granularity="token").tokens
    edited = toy.visual.run_with_hooks(images, fwd_hooks=[("blocks.1.attn.hook_v",
                                                           _double_values)])
    failures: list[str] = []

    def decompose() -> None:
        for _ in range(5):
            tokens = cs.decompose(toy, images, granularity="token").tokens
            if not torch.equal(tokens, expected):
                failures.append("decompose")

    def edit() -> None:
        for _ in range(5):
            with toy.visual.hooks(fwd_hooks=[("blocks.1.attn.hook_v", _double_values)]):
                if not torch.equal(toy.visual(images), edited):
                    failures.append("edit")
            try:
                toy.visual.run_with_hooks(images, fwd_hooks=[("hook_embed", _raise)])
                failures.append("no raise")
            except RuntimeError:
                pass

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as error:  # a thread's exception would not fail the test
                failures.append(repr(error))
        return run

    threads = [threading.Thread(target=guarded(target)) for target in (decompose, edit)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert not any(point.has_hooks() for point in toy.visual.hook_dict.values())


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda clip: pickle.loads(pickle.dumps(clip))],
                         ids=["deepcopy", "pickle"])
def test_a_model_can_be_copied_and_pickled(toy, clone):
    images = _images(toy)
    copied = clone(toy)
    assert torch.equal(copied.encode_image(images), toy.encode_image(images))
    assert torch.equal(cs.decompose(copied, images).heads, cs.decompose(toy, images).heads)
    with copied.visual.lock:  # a lock of its own, usable again
        pass
    assert copied.visual.lock is not toy.visual.lock


def test_a_copy_has_its_own_weights_and_no_hooks(toy):
    images = _images(toy)
    with toy.visual.hooks(fwd_hooks=[("blocks.1.attn.hook_v", _raise)]):
        copied = copy.deepcopy(toy)
    with torch.no_grad():
        for param in copied.model.visual.parameters():
            param.mul_(0.5)
        assert torch.equal(copied.visual(images), copied.model.encode_image(images))
        assert not torch.equal(copied.visual(images), toy.visual(images))
    assert not any(point.has_hooks() for point in copied.visual.hook_dict.values())
