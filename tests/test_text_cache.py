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
