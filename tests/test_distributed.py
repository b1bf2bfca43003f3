"""A cache pass under torch.distributed (gloo, two CPU processes) equals one process's pass bit
for bit, also after one process is killed and the pass resumed; a second writer is refused."""

from __future__ import annotations

import datetime
import json
import os
import re
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


class PerRank(tuple):
    """A different argument for each process: item ``r`` goes to process ``r``."""


def _process(rank, world, store, clip, images, path, kwargs):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    images, path = (value[rank] if isinstance(value, PerRank) else value
                    for value in (images, path))
    kwargs = {"batch_size": BATCH, **{name: value[rank] if isinstance(value, PerRank) else value
                                      for name, value in kwargs.items()}}
    try:
        cs.cache_decomposition(clip, images, path, show_progress=False, **kwargs)
    except Exception as error:
        Path(f"{store}.error{rank}").write_text(f"{type(error).__name__}: {error}")
        raise
    finally:
        dist.destroy_process_group()


def launch(tmp_path, clip, images, path, world=2, **kwargs):
    """Run the pass in ``world`` forked processes (a fresh store file for every launch); the
    store file's name."""
    store = tmp_path / f"store-{time.monotonic_ns()}"
    path = path if isinstance(path, PerRank) else str(path)
    mp.start_processes(_process, args=(world, str(store), clip, images, path, kwargs),
                       nprocs=world, join=True, start_method="fork")
    return store


class Shown(torch.utils.data.Dataset):
    """A Dataset that is neither a TensorDataset nor an image folder (read item by item)."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return self.data[index]


def other_row(data, row):
    """``data`` with one image changed."""
    images, labels = (tensor.clone() for tensor in data.tensors)
    images[row] += 1
    return torch.utils.data.TensorDataset(images, labels)


DISAGREEING = {  # what differs between the two processes -> what the error names
    "other images": (lambda data: dict(images=PerRank([data, other_row(data, 13)])),
                     r"image contents \(process 1 differs from process 0\)"),
    "other images of a Dataset": (
        lambda data: dict(images=PerRank([Shown(data), Shown(other_row(data, 13))])),
        r"image contents \(process 1 differs"),
    "other batch sizes": (lambda data: dict(batch_size=PerRank([4, 8])),
                          r"batch size \(4 in process 0, 8 in process 1\)"),
    "other loaders": (lambda data: dict(images=PerRank([
        torch.utils.data.DataLoader(data, batch_size=4),
        torch.utils.data.DataLoader(data, batch_size=6)])), r"batch size \(process 1 differs"),
    "other layers and dtype": (lambda data: dict(layers=PerRank([[0], [1]]),
                                                 dtype=PerRank(["float16", "float32"])),
                               r"layers \(\[0\] in process 0, \[1\] in process 1\); dtype "
                               r"\(float16 in process 0, float32 in process 1\)"),
    "other models": (lambda data: dict(clip=None),
                     r"model fingerprint \(\w+ in process 0, \w+ in process 1\)"),
    "other folders": (lambda data: dict(path=None), r"cache folder \(process 1 differs"),
}


@pytest.mark.parametrize("case", DISAGREEING)
def test_processes_that_disagree_on_the_pass_are_refused_naming_the_difference(tmp_path, clip,
                                                                                data, case):
    given, message = DISAGREEING[case]
    kwargs = given(data)
    images, path = kwargs.pop("images", data), tmp_path / "c"
    if kwargs.pop("clip", 0) is None:  # process 1's model has one weight changed by 1e-3
        other = small_clip("tok", torch.float32)
        with torch.no_grad():
            next(other.visual.model.parameters()).view(-1)[0] += 1e-3
        kwargs["clip"] = PerRank([clip, other])
    if kwargs.pop("path", 0) is None:
        path = PerRank([str(path), str(tmp_path / "d")])
    store = tmp_path / "store"
    if "clip" in kwargs:
        context = mp.start_processes(_process_model, args=(2, str(store), kwargs.pop("clip"),
                                                           images, str(path), kwargs),
                                     nprocs=2, join=False, start_method="fork")
    else:
        context = mp.start_processes(_process, args=(2, str(store), clip, images, path, kwargs),
                                     nprocs=2, join=False, start_method="fork")
    for process in context.processes:
        process.join(60)
    assert [process.exitcode for process in context.processes] == [1, 1]
    for rank in (0, 1):  # every process says what differs
        error = Path(f"{store}.error{rank}").read_text()
        assert error.startswith("ValueError: the processes of this 2-process cache pass "
                                "disagree on "), error
        assert re.search(message, error), error
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").glob("*.npy"))


def test_limit_a_dataset_is_compared_on_the_first_batch_of_each_share(tmp_path, clip, data):
    """A documented limit: processes compare a Dataset (neither a TensorDataset nor a folder)
    on the first batch of each process's share, read once more before the pass; a difference
    elsewhere is not seen. With 6 batches of 4 in 2 processes: rows 0..3 and 12..15."""
    store = launch(tmp_path, clip, PerRank([Shown(data), Shown(other_row(data, 5))]),
                   tmp_path / "c")
    assert not list(tmp_path.glob(f"{store.name}.error*"))


def _process_model(rank, world, store, clips, images, path, kwargs):
    _process(rank, world, store, clips[rank], images, path, kwargs)


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


def test_the_launcher_passes_every_option_of_every_command_to_the_command(monkeypatch):
    """torchrun's parser never sees a command's options (it took ``--m`` for its own)."""
    import argparse

    import torch.distributed.run

    from captum_clipspan.cli import build_parser
    from captum_clipspan.cli.distributed import launch

    launched = []
    monkeypatch.setattr(torch.distributed.run, "run", launched.append)
    commands = next(action for action in build_parser()._actions
                    if isinstance(action, argparse._SubParsersAction)).choices
    offering = {name: sub for name, sub in commands.items()
                if any("--nproc" in action.option_strings for action in sub._actions)}
    assert {"ablate", "cache", "heads", "retrieve"} <= set(offering)
    for name, sub in offering.items():
        options = [option for action in sub._actions for option in action.option_strings
                   if option not in ("-h", "--help", "--nproc")]
        argv = [name, "images/", *(item for option in options for item in (option, "1"))]
        assert launch([*argv, "--nproc", "2"], 2) == 0
        assert launched[-1].training_script_args == argv, name
        assert launched[-1].nproc_per_node == "2" and launched[-1].module


@pytest.mark.parametrize("argv", [["heads", "{flat}", "--layers", "-1", "--m", "2"],
                                  ["ablate", "{shapes}", "--mode", "total"]])
def test_commands_with_their_options_run_in_two_processes(tmp_path, argv):
    from captum_clipspan.toy.scenes import write_image_folder

    flat = write_image_folder(tmp_path / "flat", 12, seed=7)
    for file in flat.glob("*.png"):  # two classes of sub-folders for ablate
        (tmp_path / "shapes" / f"c{int(file.stem) % 2}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "shapes" / f"c{int(file.stem) % 2}" / file.name).write_bytes(
            file.read_bytes())
    argv = [arg.format(flat=flat, shapes=tmp_path / "shapes") for arg in argv]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]),
           "CLIPSPAN_CACHE_DIR": str(tmp_path / "user_cache")}
    command = [sys.executable, "-m", "captum_clipspan.cli", *argv, "--batch-size", "4",
               "--out", str(tmp_path / "out"), "--nproc", "2"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1 and "Traceback" not in done.stderr
