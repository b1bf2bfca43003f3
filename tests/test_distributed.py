"""A cache pass under torch.distributed (gloo, two CPU processes) equals one process's pass bit
for bit, also after one process is killed and the pass resumed; a second writer is refused."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import small_clip
from test_data import labelled

import captum_clipspan as cs

N, BATCH = 24, 4  # six batches: process 0 gets rows 0..11, process 1 rows 12..23


@pytest.fixture(scope="module")
def clip():
    return small_clip("tok", torch.float32)


@pytest.fixture(scope="module")
def data(clip):
    return labelled(clip, N)


def assert_identical(cache, other):
    """Every array and meta.json the same, bit for bit."""
    assert cache.meta == other.meta
    for name in cache.meta["fields"]:
        assert np.array_equal(getattr(cache, name), getattr(other, name)), name


class Signalling(torch.utils.data.Dataset):
    """Acts once at one index: ``"kill"`` SIGKILLs the process, ``"wait"`` touches ``at.reached``
    and waits for ``at.release`` (a pass that is still running)."""

    def __init__(self, data, at, action, folder):
        self.data, self.at, self.action, self.folder = data, at, action, Path(folder)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        if index == self.at and self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if index == self.at and self.action == "raise":
            raise ValueError(f"image {index} is unreadable")
        if index == self.at and self.action == "wait":
            (self.folder / "at.reached").touch()
            deadline = time.monotonic() + 60
            while not (self.folder / "at.release").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return self.data[index]


def _process(rank, world, store, clip, images, path, kwargs):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        cs.cache_decomposition(clip, images, path, batch_size=BATCH, show_progress=False,
                               **kwargs)
    except Exception as error:
        Path(f"{store}.error{rank}").write_text(f"{type(error).__name__}: {error}")
        raise
    finally:
        dist.destroy_process_group()


def launch(tmp_path, clip, images, path, world=2, **kwargs):
    """Run the pass in ``world`` forked processes (a fresh store file for every launch)."""
    store = tmp_path / f"store-{time.monotonic_ns()}"
    mp.start_processes(_process, args=(world, str(store), clip, images, str(path), kwargs),
                       nprocs=world, join=True, start_method="fork")


def test_two_processes_write_the_cache_of_one_and_refuse_a_second_writer(tmp_path, clip,
                                                                        data):
    reference = cs.cache_decomposition(clip, data, tmp_path / "one", batch_size=BATCH,
                                       show_progress=False)
    path = tmp_path / "two"
    waiting = Signalling(data, at=17, action="wait", folder=tmp_path)
    context = mp.start_processes(
        _process, args=(2, str(tmp_path / "store"), clip, waiting, str(path), {}), nprocs=2,
        join=False, start_method="fork")
    try:
        signs = [tmp_path / "at.reached", path / "progress.rank0.json"]
        deadline = time.monotonic() + 60
        while not all(map(Path.exists, signs)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert all(map(Path.exists, signs))
        with pytest.raises(RuntimeError, match=r"being written by another.*rank 0 of a "
                                               r"2-process pass"):
            cs.cache_decomposition(clip, data, path, batch_size=BATCH, show_progress=False)
        assert sorted(file.name for file in path.glob("progress.rank*.json")) == [
            "progress.rank0.json", "progress.rank1.json"]
    finally:
        (tmp_path / "at.release").touch()
        while not context.join(60):
            pass
    assert sorted(file.name for file in path.iterdir() if "lock" not in file.name) == sorted(
        file.name for file in (tmp_path / "one").iterdir() if file.name != "lock")
    assert_identical(cs.DecompositionCache.open(path), reference)


def test_a_killed_process_resumes_to_the_same_cache(tmp_path, clip, data):
    settings = dict(layers=[0, 2], convention="centered", granularity="token")
    reference = cs.cache_decomposition(clip, data, tmp_path / "one", batch_size=BATCH,
                                       show_progress=False, **settings)
    path = tmp_path / "two"
    killing = Signalling(data, at=16, action="kill", folder=tmp_path)  # process 1's 2nd batch
    with pytest.raises(mp.ProcessExitedException, match="SIGKILL"):
        launch(tmp_path, clip, killing, path, **settings)
    assert json.loads((path / "progress.rank1.json").read_text())["rows"] == [[12, 16]]
    with pytest.raises(ValueError, match="incomplete"):
        cs.DecompositionCache.open(path)
    partial = cs.DecompositionCache.open(path, allow_partial=True)  # the rows from row 0 on
    assert len(partial) in (0, 4, 8, 12, 16) and partial.tokens.shape[1:] == (2, 17, 4, 24)
    launch(tmp_path, clip, data, path, **settings)
    assert not list(path.glob("progress.rank*"))
    assert_identical(cs.DecompositionCache.open(path), reference)


def test_one_process_resumes_a_pass_of_two(tmp_path, clip, data):
    reference = cs.cache_decomposition(clip, data, tmp_path / "one", batch_size=BATCH,
                                       show_progress=False)
    path = tmp_path / "two"
    with pytest.raises(mp.ProcessExitedException):
        launch(tmp_path, clip, Signalling(data, at=20, action="kill", folder=tmp_path), path)
    resumed = cs.cache_decomposition(clip, data, path, batch_size=BATCH, show_progress=False)
    assert not list(path.glob("progress.rank*"))
    assert_identical(resumed, reference)


def test_a_process_left_from_an_earlier_pass_is_refused(tmp_path, clip, data):
    from captum_clipspan.cache.locks import writer_lock

    path = tmp_path / "c"
    path.mkdir()
    with writer_lock(path, "lock.rank1", " (rank 1 of a 2-process pass)"):
        with pytest.raises(RuntimeError, match=r"being written.*rank 1 of a 2-process pass"):
            cs.cache_decomposition(clip, data, path, batch_size=BATCH, show_progress=False)
    cs.cache_decomposition(clip, data, path, batch_size=BATCH, show_progress=False)


def test_an_error_in_one_process_stops_every_process(tmp_path, clip, data):
    store = tmp_path / "store"
    raising = Signalling(data, at=16, action="raise", folder=tmp_path)
    context = mp.start_processes(_process, args=(2, str(store), clip, raising,
                                                 str(tmp_path / "c"), {}),
                                 nprocs=2, join=False, start_method="fork")
    for process in context.processes:  # each ends on its own, none waits for a timeout
        process.join(30)
    assert [process.exitcode for process in context.processes] == [1, 1]
    assert Path(f"{store}.error1").read_text() == "ValueError: image 16 is unreadable"
    assert Path(f"{store}.error0").read_text().startswith(
        "RuntimeError: process 1 of this 2-process cache pass failed (ValueError: image 16 is "
        "unreadable); the rows committed so far are kept")


def test_the_command_line_runs_the_pass_in_two_processes(tmp_path, capsys):
    from PIL import Image

    from captum_clipspan.cli import main

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for index in range(6):
        pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "images" / f"{index}.png")
    common = ["cache", str(tmp_path / "images"), "--batch-size", "2", "--layers", "-1",
              "--granularity", "token"]
    assert main([*common, "--cache", str(tmp_path / "one")]) == 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-m", "captum_clipspan.cli", *common, "--cache",
               str(tmp_path / "two"), "--nproc", "2"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("cached 6 images") == 1  # printed by process 0 only
    assert (tmp_path / "two" / "lock.rank1").exists()
    assert_identical(cs.DecompositionCache.open(tmp_path / "two"),
                     cs.DecompositionCache.open(tmp_path / "one"))
