"""Text banks are encoded once per text tower and bank, cached on disk, with a progress bar."""

from __future__ import annotations

import pytest
import torch

import captum_clipspan as cs
from captum_clipspan.text_cache import cache_dir, encode_texts_cached, text_tower_fingerprint

TEXTS = ["a red circle", "a blue square", "a striped background"]


@pytest.fixture(scope="module")
def toy() -> cs.HookedCLIP:
    return cs.HookedCLIP.from_pretrained("toy")


def test_a_second_encoding_of_the_same_bank_is_read_from_disk(toy, tmp_path, monkeypatch, capsys):
    first = encode_texts_cached(toy, TEXTS, directory=tmp_path)
    assert "encoding texts" in capsys.readouterr().err  # the progress bar
    torch.testing.assert_close(first, toy.encode_text(TEXTS).cpu())
    assert len(list(tmp_path.glob("*.pt"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(toy, "encode_text", fail)
    torch.testing.assert_close(encode_texts_cached(toy, TEXTS, directory=tmp_path), first)


def test_the_key_changes_with_the_bank_and_the_text_weights(tmp_path):
    clip = cs.HookedCLIP.from_pretrained("toy")
    encode_texts_cached(clip, TEXTS, directory=tmp_path, show_progress=False)
    encode_texts_cached(clip, TEXTS[::-1], directory=tmp_path, show_progress=False)
    assert len(list(tmp_path.glob("*.pt"))) == 2
    before = text_tower_fingerprint(clip)
    with torch.no_grad():
        clip.model.visual.conv1.weight.add_(1.0)  # image side: same text embeddings
    assert text_tower_fingerprint(clip) == before
    with torch.no_grad():
        clip.model.token_embedding.weight.add_(0.01)
    assert text_tower_fingerprint(clip) != before
    again = encode_texts_cached(clip, TEXTS, directory=tmp_path, show_progress=False)
    torch.testing.assert_close(again, clip.encode_text(TEXTS).cpu())
    assert len(list(tmp_path.glob("*.pt"))) == 3


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSPAN_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("CLIPSPAN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "captum_clipspan"


def test_an_empty_bank_is_refused(toy, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        encode_texts_cached(toy, [], directory=tmp_path)


def encoded_once(toy, tmp_path, monkeypatch):
    """Encode TEXTS into the cache at ``tmp_path``; its file and the embeddings."""
    first = encode_texts_cached(toy, TEXTS, directory=tmp_path, show_progress=False)
    (file,) = tmp_path.glob("*.pt")
    return file, first


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "a pickle", "other shape"])
def test_a_damaged_file_is_encoded_anew_and_replaced(toy, tmp_path, monkeypatch, damage):
    import pickle

    file, first = encoded_once(toy, tmp_path, monkeypatch)
    raw = file.read_bytes()
    file.write_bytes({"garbage": b"\x00not a torch file" * 10, "truncated": raw[:len(raw) // 2],
                      "empty": b"", "a pickle": pickle.dumps({"x": 1}),
                      "other shape": raw}[damage])
    if damage == "other shape":
        torch.save(torch.zeros(3, 5), file)
    for _ in range(2):  # replaced: the second call reads it
        torch.testing.assert_close(encode_texts_cached(toy, TEXTS, directory=tmp_path,
                                                       show_progress=False), first)
    assert file.read_bytes() == raw
    assert not list(tmp_path.glob("*.tmp"))


def test_a_tampered_file_of_the_right_shape_is_detected(toy, tmp_path, monkeypatch):
    file, first = encoded_once(toy, tmp_path, monkeypatch)
    stored = torch.load(file, weights_only=True)  # the texts' rows reordered: same count,
    if isinstance(stored, dict):                   # shape and dtype
        stored["embeddings"] = stored["embeddings"].flip(0)
    else:
        stored = stored.flip(0)
    torch.save(stored, file)
    calls = []
    original = toy.encode_text
    monkeypatch.setattr(toy, "encode_text", lambda *a, **k: calls.append(1) or original(*a, **k))
    torch.testing.assert_close(encode_texts_cached(toy, TEXTS, directory=tmp_path,
                                                   show_progress=False), first)
    assert calls  # encoded anew, not read
    assert torch.equal(torch.load(file, weights_only=True)["embeddings"], first)


@pytest.mark.parametrize("error", [
    OSError(28, "No space left on device"),
    RuntimeError("basic_ios::clear: iostream error"),  # torch.save's own, on a full tmpfs
])
def test_a_full_disk_leaves_no_temporary_file_and_still_returns_the_embeddings(
        toy, tmp_path, monkeypatch, error):
    def full(value, target, *args, **kwargs):
        with open(target, "wb") as handle:
            handle.write(b"partial")
        raise error

    monkeypatch.setattr(torch, "save", full)
    with pytest.warns(UserWarning, match="could not be written.*(No space left|iostream)"):
        embeddings = encode_texts_cached(toy, TEXTS, directory=tmp_path, show_progress=False)
    torch.testing.assert_close(embeddings, toy.encode_text(TEXTS).cpu())
    assert list(tmp_path.iterdir()) == []
