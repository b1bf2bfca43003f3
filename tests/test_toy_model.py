"""Tests of the shipped toy CLIP and its word tokenizer."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch

from captum_clipspan.toy import (
    TOY_MODEL_CONFIG,
    WordTokenizer,
    build_toy_clip,
    load_toy_clip,
    toy_clip_info,
    zero_shot_accuracy,
)
from captum_clipspan.toy.model import TOY_WEIGHTS
from captum_clipspan.toy.scenes import ATTRIBUTES, caption_vocabulary, make_scenes

# Every family reached 1.000 on 1,000 held-out scenes (toy_clip.json); allow a small margin.
MIN_ZERO_SHOT = 0.98

needs_weights = pytest.mark.skipif(not TOY_WEIGHTS.exists(), reason="toy weights not trained")


@pytest.fixture(scope="module")
def toy():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return load_toy_clip()


def test_tokenizer_round_trip(tmp_path):
    tok = WordTokenizer()
    assert set(tok.words) == set(caption_vocabulary())
    assert tok.vocab_size == len(tok.words) + 4 == TOY_MODEL_CONFIG["text_cfg"]["vocab_size"]
    text = "a photo of two small blue squares on the left on a black striped background"
    ids = tok([text, "a red circle"])
    assert ids.dtype == torch.long and ids.shape == (2, tok.context_length)
    assert ids[0, 0] == tok.sot_token_id and tok.decode(ids[0]) == text
    # eot is the largest id, so open_clip's argmax pooling reads the end-of-text token
    assert tok.eot_token_id == tok.vocab_size - 1
    assert (ids.argmax(-1) == torch.tensor([len(text.split()) + 1, 4])).all()
    assert (ids[1, 5:] == 0).all()
    assert tok("A Red, CIRCLE!").tolist() == tok("a red circle").tolist()
    with pytest.warns(UserWarning, match="'dog' is not among them"):
        unk = tok("a purple dog")
    assert unk[0, 3] == tok.unk_token_id and tok.decode(unk[0]) == "a purple <unk>"
    long = tok(" ".join(["red"] * 50), context_length=8)
    assert long.shape == (1, 8) and long[0, -1] == tok.eot_token_id
    path = tok.save(tmp_path / "tok.json")
    loaded = WordTokenizer.load(path)
    assert loaded.words == tok.words and loaded.context_length == tok.context_length
    assert torch.equal(loaded([text]), tok([text]))


def test_build_matches_config():
    model = build_toy_clip()
    assert isinstance(model, open_clip.model.CLIP)
    vcfg = TOY_MODEL_CONFIG["vision_cfg"]
    assert len(model.visual.transformer.resblocks) == vcfg["layers"]
    assert model.visual.conv1.kernel_size == (vcfg["patch_size"],) * 2


@needs_weights
def test_shipped_model(toy):
    model, tokenizer, preprocess = toy
    assert isinstance(model, open_clip.model.CLIP) and not model.training
    vcfg, tcfg = TOY_MODEL_CONFIG["vision_cfg"], TOY_MODEL_CONFIG["text_cfg"]
    visual = model.visual
    assert visual.conv1.kernel_size == (8, 8) and visual.grid_size == (8, 8)
    assert visual.positional_embedding.shape == (65, vcfg["width"])
    assert len(visual.transformer.resblocks) == vcfg["layers"] == 4
    assert visual.transformer.resblocks[0].attn.num_heads == 4
    assert visual.proj.shape == (vcfg["width"], TOY_MODEL_CONFIG["embed_dim"])
    assert model.token_embedding.num_embeddings == tokenizer.vocab_size
    assert model.context_length == tokenizer.context_length == tcfg["context_length"]
    assert model.text_pool_type == "argmax"
    assert all(p.dtype == torch.float32 for p in model.parameters())

    scenes = make_scenes(3, seed=99)
    from PIL import Image

    x_np = preprocess(scenes.images[0])
    x_pil = preprocess(Image.fromarray(scenes.images[0]))
    x_t = preprocess(scenes.tensors()[0])
    assert x_np.shape == (3, 64, 64)
    torch.testing.assert_close(x_np, x_pil)
    torch.testing.assert_close(x_np, x_t)
    big = torch.nn.functional.interpolate(scenes.tensors()[:1], size=128, mode="nearest")[0]
    assert preprocess(big).shape == (3, 64, 64)
    with torch.no_grad():
        img = model.encode_image(torch.stack([x_np, x_t]), normalize=True)
        txt = model.encode_text(tokenizer(scenes.captions), normalize=True)
    assert img.shape == (2, TOY_MODEL_CONFIG["embed_dim"]) and txt.shape == (3, img.shape[1])
    assert torch.allclose(img.norm(dim=-1), torch.ones(2), atol=1e-4)


@needs_weights
def test_zero_shot_accuracy(toy):
    model, tokenizer, preprocess = toy
    acc = zero_shot_accuracy(model, tokenizer, preprocess, n=300, seed=4242)
    assert set(acc) == set(ATTRIBUTES)
    low = {f: a for f, a in acc.items() if a < MIN_ZERO_SHOT}
    assert not low, f"zero-shot accuracy below {MIN_ZERO_SHOT}: {low} (all: {acc})"
    info = toy_clip_info()
    assert info["model_config"] == TOY_MODEL_CONFIG
    assert np.isclose(min(info["zero_shot_accuracy"].values()), min(acc.values()), atol=0.06)
