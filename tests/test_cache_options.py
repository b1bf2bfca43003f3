"""Cache-pass options: per-token terms, loader workers, half-precision models, and resuming a
DataLoader without reading the committed rows again."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import small_clip
from test_data import labelled
from torch.utils.data import DataLoader

import captum_clipspan as cs


def run(clip, images, path, **kwargs):
    return cs.cache_decomposition(clip, images, path, batch_size=3, show_progress=False, **kwargs)


@pytest.fixture(scope="module")
def clip():
    return small_clip("tok", torch.float32)


def test_token_cache_holds_the_per_token_head_terms(tmp_path, clip):
    data = labelled(clip, 7)
    cache = run(clip, data, tmp_path / "c", layers=[0, 2], granularity="token", dtype="float32")
    parts = cs.decompose(clip, data.tensors[0], granularity="token", layers=[0, 2])
    assert cache.tokens.shape == (7, 2, 17, 4, 24) == tuple(parts.tokens.shape)
    assert np.allclose(cache.tokens, parts.tokens.numpy(), atol=1e-6)
    assert np.allclose(cache.tokens.sum(axis=2), cache.heads, atol=1e-5)
    assert cs.DecompositionCache.open(tmp_path / "c").tokens.dtype == np.float32
    fp16 = run(clip, data, tmp_path / "h", layers=[1], granularity="token")
    assert fp16.tokens.dtype == np.float16 and fp16.tokens.shape == (7, 1, 17, 4, 24)
    assert run(clip, data, tmp_path / "heads").tokens is None
    with pytest.raises(ValueError, match="other settings.*granularity"):
        run(clip, data, tmp_path / "heads", granularity="token")
    with pytest.raises(ValueError, match="granularity must be 'head'.*got 'patch'"):
        run(clip, data, tmp_path / "x", granularity="patch")


def test_a_damaged_token_array_is_refused(tmp_path, clip):
    data = labelled(clip, 4)
    path = tmp_path / "c"
    run(clip, data, path, layers=[2], granularity="token")
    file = path / "tokens.npy"
    os.truncate(file, file.stat().st_size - 2)
    with pytest.raises(ValueError, match=r"tokens\.npy is .* bytes where its header needs"):
        cs.DecompositionCache.open(path)
    run(clip, data, path, layers=[2], granularity="token", overwrite=True)
    np.save(file, np.zeros((4, 1, 17, 4, 23), np.float16))
    with pytest.raises(ValueError, match=r"tokens\.npy holds a float16 array of shape"):
        run(clip, data, path, layers=[2], granularity="token")


def test_loader_workers_give_the_same_cache(tmp_path, clip):
    data = labelled(clip, 10)
    plain = run(clip, data, tmp_path / "plain")
    workers = run(clip, data, tmp_path / "workers", num_workers=2)
    loader = run(clip, DataLoader(data, batch_size=3, num_workers=2), tmp_path / "loader")
    for name in plain.meta["fields"]:
        assert np.array_equal(getattr(workers, name), getattr(plain, name)), name
        assert np.array_equal(getattr(loader, name), getattr(plain, name)), name


class Counting(torch.utils.data.Dataset):
    """Counts the reads of each index; raises KeyboardInterrupt once at ``stop``."""

    def __init__(self, data, stop):
        self.data, self.stop, self.reads = data, stop, [0] * len(data)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        self.reads[index] += 1
        if index == self.stop:
            self.stop = None
            raise KeyboardInterrupt
        return self.data[index]


def test_a_resumed_loader_reads_only_the_checked_and_the_missing_rows(tmp_path, clip):
    data = labelled(clip, 12)
    counting = Counting(data, stop=8)
    loader = DataLoader(counting, batch_size=4)
    with pytest.raises(KeyboardInterrupt):
        run(clip, loader, tmp_path / "c")
    counting.reads = [0] * 12
    resumed = run(clip, loader, tmp_path / "c")
    # rows 0..7 were committed: their first and last batch are checked, 8..11 decomposed
    assert counting.reads == [1] * 12
    whole = run(clip, DataLoader(data, batch_size=4), tmp_path / "whole")
    assert np.array_equal(resumed.heads, whole.heads)


def test_a_bf16_model_is_cached_with_fp32_accumulation(tmp_path, clip):
    data = labelled(clip, 6)
    half = small_clip("tok", torch.bfloat16)
    cache = run(half, data, tmp_path / "bf16", dtype="float32")
    exact = run(clip, data, tmp_path / "fp32", dtype="float32")
    assert cache.meta["fingerprint"] != exact.meta["fingerprint"]
    assert np.allclose(cache.image_embed, exact.image_embed, atol=0.05)
    total = cache.embed + cache.attns.sum(axis=1) + cache.mlps.sum(axis=1)
    assert np.allclose(total, cache.image_embed, atol=1e-2)  # to bf16 rounding of the output
