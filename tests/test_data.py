"""The decomposition cache streams, resumes after an interruption, and refuses mismatches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import images_for, small_clip
from PIL import Image

import captum_clipspan as cs

FIELDS = ["heads", "attns", "mlps", "embed", "image_embed", "labels"]


def labelled(clip, n=10):
    return torch.utils.data.TensorDataset(images_for(clip, batch=n), torch.arange(n) % 3)


class Interrupting(torch.utils.data.Dataset):
    """Raises KeyboardInterrupt at one index, the first time only (a user pressing Ctrl-C)."""

    def __init__(self, data, at):
        self.data, self.at, self.fired = data, at, False

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        if index == self.at and not self.fired:
            self.fired = True
            raise KeyboardInterrupt
        return self.data[index]


def test_cache_matches_decompose_and_holds_labels(tmp_path):
    clip = small_clip("tok", torch.float32)
    data = labelled(clip)
    cache = cs.cache_decomposition(clip, data, tmp_path / "c", layers=[1, 2], batch_size=4,
                                   dtype="float32", show_progress=False)
    parts = cs.decompose(clip, data.tensors[0], granularity="head", layers=[1, 2])
    assert cache.heads.shape == (10, 2, 4, 24) and cache.layers == (1, 2)
    assert np.allclose(cache.heads, parts.heads.numpy(), atol=1e-6)
    assert np.allclose(cache.image_embed, parts.image_embed.numpy(), atol=1e-6)
    assert np.array_equal(cache.labels, (np.arange(10) % 3))
    assert np.allclose(cache.head(-1, 3), parts.heads[:, 1, 3].numpy(), atol=1e-6)
    reopened = cs.DecompositionCache.open(tmp_path / "c")
    assert np.array_equal(reopened.heads, cache.heads)


def test_interrupted_pass_resumes_to_identical_contents(tmp_path):
    clip = small_clip("tok", torch.float32)
    data = labelled(clip)
    whole = cs.cache_decomposition(clip, data, tmp_path / "whole", batch_size=3,
                                   show_progress=False)
    interrupting = Interrupting(data, at=7)
    with pytest.raises(KeyboardInterrupt):
        cs.cache_decomposition(clip, interrupting, tmp_path / "resumed", batch_size=3,
                               show_progress=False)
    with pytest.raises(ValueError, match="incomplete"):
        cs.DecompositionCache.open(tmp_path / "resumed")
    partial = cs.DecompositionCache.open(tmp_path / "resumed", allow_partial=True)
    assert len(partial) == 6
    resumed = cs.cache_decomposition(clip, interrupting, tmp_path / "resumed", batch_size=3,
                                     show_progress=False)
    for name in FIELDS:
        assert np.array_equal(getattr(resumed, name), getattr(whole, name)), name


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys, torch
    sys.path.insert(0, {tests!r})
    from conftest import small_clip, images_for
    import captum_clipspan as cs
    clip = small_clip("tok", torch.float32)
    images = images_for(clip, batch=10)

    class Killing(torch.utils.data.Dataset):
        def __len__(self):
            return 10
        def __getitem__(self, index):
            if index == {kill_at} and {kill}:
                os.kill(os.getpid(), signal.SIGKILL)
            return images[index]

    cs.cache_decomposition(clip, Killing(), {path!r}, batch_size=2, show_progress=False)
""")


def test_cache_survives_a_killed_process(tmp_path):
    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}

    def run(path, kill):
        script = KILLED_RUN.format(tests=tests, kill_at=5, kill=kill, path=str(path))
        return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)

    killed = run(tmp_path / "killed", kill=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-500:]
    assert len(cs.DecompositionCache.open(tmp_path / "killed", allow_partial=True)) == 4
    assert run(tmp_path / "killed", kill=False).returncode == 0
    assert run(tmp_path / "whole", kill=False).returncode == 0
    killed, whole = (cs.DecompositionCache.open(tmp_path / n) for n in ("killed", "whole"))
    for name in FIELDS:
        assert np.array_equal(getattr(killed, name), getattr(whole, name)), name


def test_image_folder_with_class_subfolders(tmp_path):
    clip = small_clip("tok", torch.float32)
    clip.preprocess = lambda image: torch.from_numpy(np.asarray(image, dtype=np.float32) / 255
                                                     ).permute(2, 0, 1)
    rng = np.random.default_rng(0)
    for name in ["cat", "dog"]:
        (tmp_path / "images" / name).mkdir(parents=True)
        for index in range(3):
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{index}.png")
    cache = cs.cache_decomposition(clip, tmp_path / "images", tmp_path / "c", batch_size=4,
                                   show_progress=False)
    assert cache.classes == ["cat", "dog"]
    assert cache.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_a_cache_from_another_model_is_refused(tmp_path):
    clip = small_clip("tok", torch.float32)
    other = small_clip("tok", torch.float32, seed=1)
    data = labelled(clip, 4)
    cache = cs.cache_decomposition(clip, data, tmp_path / "c", show_progress=False)
    with pytest.raises(ValueError, match="another model"):
        cache.check_model(other)
    with pytest.raises(ValueError, match="other settings"):
        cs.cache_decomposition(other, data, tmp_path / "c", show_progress=False)
    with pytest.raises(ValueError, match="another model"):
        cs.TextSpan(other, bank=["a", "b"]).fit(cache, m=1, show_progress=False)


def test_bad_sources_and_settings(tmp_path):
    clip = small_clip("tok", torch.float32)
    shuffled = torch.utils.data.DataLoader(labelled(clip, 4), shuffle=True)
    with pytest.raises(ValueError, match="shuffle=False"):
        cs.cache_decomposition(clip, shuffled, tmp_path / "a", show_progress=False)
    with pytest.raises(TypeError, match="image folder path"):
        cs.cache_decomposition(clip, [1, 2, 3], tmp_path / "b", show_progress=False)
    with pytest.raises(ValueError, match="float16"):
        cs.cache_decomposition(clip, labelled(clip, 4), tmp_path / "c", dtype="int8")
    with pytest.raises(ValueError, match="does not exist"):
        cs.cache_decomposition(clip, tmp_path / "missing", tmp_path / "d")


def test_cache_reads_rows_as_tensors_and_chunks(tmp_path):
    clip = small_clip("tok", torch.float32)
    images = images_for(clip, batch=10)
    data = torch.utils.data.TensorDataset(images, torch.arange(10) % 3)
    cache = cs.cache_decomposition(clip, data, tmp_path / "cache", layers=[1, 2],
                                   show_progress=False)
    assert cache.n_layers == clip.visual.n_layers
    embeds = cache.tensor("image_embed")
    assert embeds.dtype == torch.float32 and embeds.shape == cache.image_embed.shape
    assert torch.equal(embeds, torch.from_numpy(cache.image_embed[:].astype("float32")))
    assert cache.tensor("labels").tolist() == (torch.arange(10) % 3).tolist()
    assert cache.tensor("heads", [3, 1], torch.float64).shape == (2, 2, clip.visual.n_heads,
                                                                  clip.embed_dim)
    embeds[0] = 7  # a copy: the read-only map is untouched
    assert not (cache.tensor("image_embed", slice(0, 1)) == 7).any()
    blocks = list(cache.chunks(["heads", "labels"], chunk=4))
    assert [rows for rows, _ in blocks] == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert torch.equal(torch.cat([block["heads"] for _, block in blocks]), cache.tensor("heads"))
    with pytest.raises(ValueError, match="no array 'tokens'"):
        cache.tensor("tokens")
    with pytest.raises(ValueError, match="no array 'meta'"):
        list(cache.chunks(["meta"]))
    with pytest.raises(TypeError, match="list of array names"):
        list(cache.chunks("heads"))
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        list(cache.chunks(["heads"], chunk=0))


@pytest.mark.parametrize("version", [2, 3])  # 2: "image_embeds"; 3: no row checksums
def test_a_cache_of_a_former_format_is_refused_with_a_rebuild_hint(tmp_path, version):
    import json

    clip = small_clip("tok", torch.float32)
    cs.cache_decomposition(clip, images_for(clip, batch=3), tmp_path / "cache",
                           show_progress=False)
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    meta["version"] = version
    (tmp_path / "cache" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=f"cache format {version}.*reads format "
                                         f"{cs.cache.CACHE_VERSION}.*overwrite=True"):
        cs.DecompositionCache.open(tmp_path / "cache")
