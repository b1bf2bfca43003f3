"""A dataset pass gives a correct cache or a clear error: other images, damaged files, other
weights, a second writer, a full disk and folders left by an interrupted creation."""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import threading
from collections import namedtuple

import numpy as np
import pytest
import torch
from conftest import images_for, small_clip
from PIL import Image
from test_data import FIELDS, Interrupting, labelled
from torch.utils.data import DataLoader, TensorDataset

import captum_clipspan as cs
import captum_clipspan.cache.writer as cache_writer
from captum_clipspan.cache import model_fingerprint


def run(clip, images, path, **kwargs):
    return cs.cache_decomposition(clip, images, path, batch_size=3, show_progress=False, **kwargs)


def assert_same(cache, other):
    for name in FIELDS:
        assert np.array_equal(getattr(cache, name), getattr(other, name)), name


@pytest.fixture(scope="module")
def clip():
    return small_clip("tok", torch.float32)


@pytest.fixture(scope="module")
def data(clip):
    return labelled(clip, 10)


@pytest.fixture(scope="module")
def whole(clip, data, tmp_path_factory):
    """The cache of ``data`` from one uninterrupted pass, to compare against."""
    return run(clip, data, tmp_path_factory.mktemp("whole") / "cache")


def interrupted(clip, data, path, at=7):
    """A partial cache: with batches of 3, the pass stops after 6 committed images."""
    with pytest.raises(KeyboardInterrupt):
        run(clip, Interrupting(data, at=at), path)


# 1. What the cache was built from -----------------------------------------------------------

@pytest.mark.parametrize("change", ["images", "labels", "last row only", "through a loader"])
def test_other_images_of_the_same_count_are_refused(tmp_path, clip, data, change):
    images, labels = data.tensors
    other = {"images": TensorDataset(images_for(clip, batch=10, seed=1), labels),
             "labels": TensorDataset(images, (labels + 1) % 3),
             "last row only": TensorDataset(torch.cat([images[:9], images[9:] + 1]), labels),
             "through a loader": DataLoader(TensorDataset(images.flip(0), labels), batch_size=4),
             }[change]
    run(clip, data, tmp_path / "c")
    run(clip, DataLoader(data, batch_size=4), tmp_path / "c")  # the same images are reused
    with pytest.raises(ValueError, match="differ from those the cache was built from.*"
                                         "overwrite=True"):
        run(clip, other, tmp_path / "c")
    assert_same(run(clip, other, tmp_path / "c", overwrite=True), run(clip, other, tmp_path / "o"))


@pytest.mark.parametrize("row", [0, 5])
def test_resuming_with_other_images_is_refused(tmp_path, clip, data, whole, row):
    interrupted(clip, data, tmp_path / "c")
    images, labels = data.tensors
    changed = images.clone()
    changed[row] += 1
    with pytest.raises(ValueError, match=f"row {row} has another image"):
        run(clip, TensorDataset(changed, labels), tmp_path / "c")
    assert_same(run(clip, data, tmp_path / "c"), whole)


@pytest.fixture
def folder_clip():
    clip = small_clip("tok", torch.float32)
    clip.preprocess = lambda image: torch.from_numpy(np.asarray(image, dtype=np.float32) / 255
                                                     ).permute(2, 0, 1)
    return clip


def write_images(folder, names, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_a_changed_image_folder_is_refused(tmp_path, folder_clip):
    folder = write_images(tmp_path / "images", [f"{index}.png" for index in range(5)])
    cache = run(folder_clip, folder, tmp_path / "c")
    assert cache.files == [folder.resolve() / f"{index}.png" for index in range(5)]
    stat = (folder / "3.png").stat()
    os.utime(folder / "3.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(ValueError, match=r"3\.png \(row 3\) changed.*overwrite=True"):
        run(folder_clip, folder, tmp_path / "c")
    os.utime(folder / "3.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    run(folder_clip, folder, tmp_path / "c")
    write_images(folder, ["5.png"])
    with pytest.raises(ValueError, match=r"other images \(1 files added, e\.g\. 5\.png\)"):
        run(folder_clip, folder, tmp_path / "c")


def test_limit_a_folder_file_rewritten_keeping_its_size_and_mtime_is_not_seen(tmp_path,
                                                                             folder_clip):
    """A documented limit: an image folder's files are known by path, size and mtime (reading
    every image again on each resume would cost a pass), so a file rewritten with the same size
    whose mtime is then set back is taken for the cached one."""
    folder = write_images(tmp_path / "images", [f"{index}.png" for index in range(4)])
    cache = run(folder_clip, folder, tmp_path / "c")
    stat = (folder / "2.png").stat()
    changed = bytearray((folder / "2.png").read_bytes())
    changed[len(changed) // 2] ^= 0xFF  # inside the pixel data: another image, the same size
    (folder / "2.png").write_bytes(bytes(changed))
    os.utime(folder / "2.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert_same(run(folder_clip, folder, tmp_path / "c"), cache)  # not rebuilt


def test_a_moved_image_folder_is_reused(tmp_path, folder_clip):
    folder = write_images(tmp_path / "images", [f"{index}.png" for index in range(4)])
    cache = run(folder_clip, folder, tmp_path / "c")
    moved = shutil.copytree(folder, tmp_path / "moved")  # copy2 keeps sizes and mtimes
    shutil.rmtree(folder)
    reused = run(folder_clip, moved, tmp_path / "c")
    assert_same(reused, cache)
    assert reused.files == [moved.resolve() / f"{index}.png" for index in range(4)]


# 2. Damaged arrays ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["heads", "labels", "digests"])
@pytest.mark.parametrize("finished", [True, False])
def test_a_truncated_array_is_refused(tmp_path, clip, data, name, finished):
    path = tmp_path / "c"
    run(clip, data, path) if finished else interrupted(clip, data, path)
    file = path / f"{name}.npy"
    os.truncate(file, file.stat().st_size - 8)  # the last bytes of the last row
    message = f"{name}.npy is .* bytes where its header needs .*truncated.*overwrite=True"
    with pytest.raises(ValueError, match=message):
        cs.DecompositionCache.open(path, allow_partial=True)
    with pytest.raises(ValueError, match=message):
        run(clip, data, path)


def test_a_replaced_or_garbled_array_is_refused(tmp_path, clip, data, whole):
    path = tmp_path / "c"
    run(clip, data, path)
    np.save(path / "embed.npy", np.zeros((10, 5), np.float16))
    with pytest.raises(ValueError, match=r"embed\.npy holds a float16 array of shape \[10, 5\]"):
        cs.DecompositionCache.open(path)
    (path / "embed.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match=r"embed\.npy is damaged \(its \.npy header"):
        run(clip, data, path)
    assert_same(run(clip, data, path, overwrite=True), whole)


# 3. The model fingerprint ---------------------------------------------------------------------

def test_the_fingerprint_covers_every_weight_and_buffer(tmp_path):
    clip = small_clip("tok", torch.float32)
    data = labelled(clip, 4)
    cache = run(clip, data, tmp_path / "c")
    base = model_fingerprint(clip)
    assert model_fingerprint(small_clip("tok", torch.float32)) == base
    tower = clip.visual.model
    name, early = next((name, param) for name, param in tower.named_parameters()
                       if "resblocks.0." in name)
    saved = early.detach().clone()
    with torch.no_grad():
        early.view(-1)[0] += 1e-3  # fine-tuning the first block
    assert model_fingerprint(clip) != base, name
    with pytest.raises(ValueError, match="another model"):
        cache.check_model(clip)
    with pytest.raises(ValueError, match="other settings.*fingerprint"):
        run(clip, data, tmp_path / "c")
    with torch.no_grad():
        early.copy_(saved)
    assert model_fingerprint(clip) == base
    tower.register_buffer("probe", torch.zeros(3))
    with_buffer = model_fingerprint(clip)
    tower.probe += 1
    assert len({base, with_buffer, model_fingerprint(clip)}) == 3


# 4. One writer at a time -----------------------------------------------------------------------

class Blocking(torch.utils.data.Dataset):
    """Waits at one index until released, the first time only (a pass still running)."""

    def __init__(self, data, at):
        self.data, self.at = data, at
        self.reached, self.release = threading.Event(), threading.Event()

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        if index == self.at and not self.reached.is_set():
            self.reached.set()
            self.release.wait(30)
        return self.data[index]


def test_a_second_writer_is_refused_with_the_holder(tmp_path, clip, data, whole):
    blocking, result = Blocking(data, at=7), {}
    writer = threading.Thread(target=lambda: result.update(cache=run(clip, blocking, tmp_path)))
    writer.start()
    try:
        assert blocking.reached.wait(30)
        holder = re.escape(f"pid {os.getpid()} on host {socket.gethostname()}")
        with pytest.raises(RuntimeError, match=f"being written by another .*{holder}"):
            run(clip, data, tmp_path)
    finally:
        blocking.release.set()
        writer.join(60)
    assert_same(result["cache"], whole)
    assert_same(run(clip, data, tmp_path), whole)  # the lock went with the first pass


# 5. A full disk -------------------------------------------------------------------------------

def cache_files(path):
    return sorted(entry.name for entry in path.iterdir() if entry.name != "lock")


def test_a_full_disk_is_an_oserror_and_leaves_a_usable_folder(tmp_path, clip, data, whole,
                                                              monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(OSError, match="could not create the cache files.*No space left") as info:
        run(clip, data, tmp_path / "c")
    assert info.value.errno == errno.ENOSPC
    assert cache_files(tmp_path / "c") == []
    monkeypatch.undo()
    assert_same(run(clip, data, tmp_path / "c"), whole)


def test_too_little_free_space_is_refused_before_any_work(tmp_path, clip, data, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 100, 100))
    monkeypatch.setattr(cache_writer, "decompose", lambda *args, **kwargs: pytest.fail("work done"))
    with pytest.raises(OSError, match="needs .* GiB but its disk has 0.00 GiB free"):
        run(clip, data, tmp_path / "c")
    assert cache_files(tmp_path / "c") == []


# 6. Folders left by an interrupted creation ------------------------------------------------------

def test_a_folder_with_nothing_committed_is_rebuilt(tmp_path, clip, data, whole):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "progress.json").write_text('{"done": 0}')  # killed before meta.json
    assert_same(run(clip, data, tmp_path / "c"), whole)
    run(clip, labelled(clip, 4), tmp_path / "d")
    (tmp_path / "d" / "progress.json").unlink()  # killed before the first commit
    assert_same(run(clip, data, tmp_path / "d"), whole)


@pytest.mark.parametrize("finished", [True, False])
def test_a_lost_meta_json_is_restored_by_the_same_pass(tmp_path, clip, data, whole, finished):
    path = tmp_path / "c"
    run(clip, data, path) if finished else interrupted(clip, data, path)
    (path / "meta.json").unlink()
    with pytest.raises(ValueError, match=r"meta\.json is missing; run cache_decomposition again"):
        cs.DecompositionCache.open(path, allow_partial=True)
    with pytest.raises(ValueError, match=r"meta\.json is missing.*not from this model"):
        run(small_clip("tok", torch.float32, seed=1), data, path)
    assert_same(run(clip, data, path), whole)
    assert_same(cs.DecompositionCache.open(path), whole)


def test_images_refused_by_the_model_leave_nothing_behind(tmp_path, clip, data, whole):
    with pytest.raises(ValueError, match="shape"):
        run(clip, torch.randn(4, 3, 16, 16), tmp_path / "c")
    assert cache_files(tmp_path / "c") == []
    assert_same(run(clip, data, tmp_path / "c"), whole)


# 7. Rows that are not what they claim (checksums) ----------------------------------------------

def row_offset(file, row):
    """The byte offset of ``row`` in the ``.npy`` file ``file``, and the bytes of one row."""
    array = np.load(file, mmap_mode="r")
    return file.stat().st_size - array.nbytes + row * array[0].nbytes, array[0].nbytes


def flip_byte(file, row, at=5):
    offset, _ = row_offset(file, row)
    with open(file, "r+b") as handle:
        handle.seek(offset + at)
        byte = handle.read(1)
        handle.seek(offset + at)
        handle.write(bytes([byte[0] ^ 0x10]))


def damaged(path, name, rows):
    return f"{name}\\.npy is damaged: {rows} row\\(s\\)"


@pytest.mark.parametrize("name", ["heads", "image_embed", "labels", "digests"])
def test_a_flipped_byte_in_a_committed_array_is_never_returned_as_data(tmp_path, clip, data,
                                                                      whole, name):
    path = tmp_path / "c"
    run(clip, data, path)
    flip_byte(path / f"{name}.npy", row=7)
    cache = cs.DecompositionCache.open(path)
    assert np.array_equal(cache.tensor(name, slice(0, 7)), whole.tensor(name, slice(0, 7)))
    message = damaged(path, name, 1) + r" \(7\) do not match the checksums.*overwrite=True"
    for read in (lambda: cache.tensor(name), lambda: np.array_equal(getattr(cache, name), 0),
                 lambda: getattr(cache, name)[5:9], lambda: getattr(cache, name).sum(),
                 lambda: list(cache.chunks([name], chunk=4)), cache.verify):
        with pytest.raises(ValueError, match=message):
            read()
    assert not np.array_equal(  # unchecked on request only
        cs.DecompositionCache.open(path, check_rows=False).tensor(name), whole.tensor(name))


def test_two_arrays_of_one_shape_swapped_are_detected(tmp_path, clip, data):
    path = tmp_path / "c"
    run(clip, data, path)
    os.rename(path / "attns.npy", path / "swap")
    os.rename(path / "mlps.npy", path / "attns.npy")
    os.rename(path / "swap", path / "mlps.npy")
    cache = cs.DecompositionCache.open(path)  # headers, dtypes and shapes all agree
    with pytest.raises(ValueError, match=damaged(path, "attns", 10)):
        cache.term("attn.1")
    with pytest.raises(ValueError, match=damaged(path, "attns", 10) + ".*mlps.*10 row"):
        cache.verify()


def test_two_rows_of_one_array_swapped_are_detected(tmp_path, clip, data):
    path = tmp_path / "c"
    run(clip, data, path)
    file = path / "embed.npy"
    (first, size), (second, _) = row_offset(file, 2), row_offset(file, 6)
    raw = bytearray(file.read_bytes())
    raw[first:first + size], raw[second:second + size] = (raw[second:second + size],
                                                          raw[first:first + size])
    file.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=damaged(path, "embed", 2) + r" \(2, 6\)"):
        cs.DecompositionCache.open(path).verify()


def test_a_progress_file_claiming_rows_never_written_is_refused(tmp_path, clip, data):
    import json

    path = tmp_path / "c"
    interrupted(clip, data, path)  # rows 0..5 committed
    progress = json.loads((path / "progress.json").read_text())
    (path / "progress.json").write_text(json.dumps({**progress, "done": 10}))
    message = r"claims rows 0..9 as committed, but 4 of them were never written.*row 6"
    with pytest.raises(ValueError, match=message):
        cs.DecompositionCache.open(path)
    with pytest.raises(ValueError, match=message):
        run(clip, data, path)


def test_a_sound_cache_verifies_and_reads_each_row_once(tmp_path, clip, data, whole,
                                                        monkeypatch):
    from captum_clipspan.cache import checksums

    cache = cs.DecompositionCache.open(whole.path)
    cache.verify()
    read = []
    monkeypatch.setattr(checksums, "row_checksum", lambda name, index, row: read.append(index))
    cache.tensor("heads"), cache.term("head.1.2"), list(cache.chunks(["heads"], chunk=3))
    cache.verify()
    assert read == []  # every row was checked once, by verify()
    assert np.array_equal(cache.heads, whole.heads)


# 8. Damaged JSON files --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["meta.json", "progress.json"])
@pytest.mark.parametrize("text", ['{"done": 1', "[]", "{}"])
def test_a_damaged_json_file_is_named(tmp_path, clip, data, whole, name, text):
    path = tmp_path / "c"
    run(clip, data, path)
    (path / name).write_text(text)
    with pytest.raises(ValueError, match=f"{re.escape(name)} is damaged"):
        cs.DecompositionCache.open(path)
    if name == "meta.json":
        assert_same(run(clip, data, path), whole)  # restored: the committed rows are this pass's
        return
    with pytest.raises(ValueError, match=r"progress\.json is damaged.*overwrite=True"):
        run(clip, data, path)
    assert_same(run(clip, data, path, overwrite=True), whole)


# Other sources of silent loss -------------------------------------------------------------------

def test_a_loader_that_drops_images_is_an_error(tmp_path, clip, data):
    loader = DataLoader(data, batch_size=4, drop_last=True)
    with pytest.raises(ValueError, match="yielded 8 of its 10 images.*drop_last"):
        run(clip, loader, tmp_path / "c")


def test_overwrite_deletes_only_cache_files(tmp_path, clip, data):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"not an empty folder.*notes\.txt"):
        run(clip, data, tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
