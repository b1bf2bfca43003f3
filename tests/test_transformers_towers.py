"""transformers CLIP-family towers (CLIP, SigLIP, MetaCLIP 2, AltCLIP, ChineseCLIP, CLIPSeg): the
hooked tower computes what transformers computes, and HookedCLIP.from_transformers works offline
with a real (tiny, locally built) tokenizer and image processor of each family. Every 1-D
parameter is randomized (transformers initializes biases to zero)."""

from __future__ import annotations

import copy
import functools
import io
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import randomize_
from PIL import Image

import captum_clipspan as cs
from captum_clipspan.hooked.backends.transformers_text import TransformersText, pooled
from captum_clipspan.hooked.spec import UnsupportedTowerError
from captum_clipspan.text_cache import text_tower_fingerprint

IMAGE_SIZE = 32
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              image_size=IMAGE_SIZE, patch_size=8)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=16)
# The families' class-name prefixes (transformers.{prefix}Model, {prefix}VisionModel, ...).
PREFIXES = {"clip": "CLIP", "siglip": "Siglip", "metaclip2": "MetaClip2", "altclip": "AltCLIP",
            "chineseclip": "ChineseCLIP", "clipseg": "CLIPSeg"}
FAMILIES = tuple(PREFIXES)
ATTENTIONS = ("sdpa", "eager")
TEXTS = ["a photo of a cat", "a red circle", "dog"]
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@functools.cache
def _clip_tokenizer() -> transformers.CLIPTokenizer:
    """A character-level CLIP BPE tokenizer (byte alphabet, no merges): no download needed."""
    from open_clip.tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    words = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return transformers.CLIPTokenizer(vocab={w: i for i, w in enumerate(words)}, merges=[])


@functools.cache
def _siglip_tokenizer() -> transformers.SiglipTokenizer:
    """A SigLIP SentencePiece tokenizer trained here on a few sentences."""
    import tempfile

    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXTS * 10), model_writer=model, vocab_size=40, minloglevel=2,
        hard_vocab_limit=False)
    path = f"{tempfile.mkdtemp()}/spiece.model"
    with open(path, "wb") as file:
        file.write(model.getvalue())
    return transformers.SiglipTokenizer(vocab_file=path,
                                        model_max_length=TEXT["max_position_embeddings"])


@functools.cache
def _xlm_roberta_tokenizer() -> transformers.XLMRobertaTokenizer:
    """A character-level XLM-R unigram tokenizer (MetaCLIP 2's and AltCLIP's kind), with XLM-R's
    special-token ids (<s> 0, <pad> 1, </s> 2)."""
    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces = [("\u2581" + c, -1.0) for c in LETTERS] + [(c, -2.0) for c in LETTERS]
    return transformers.XLMRobertaTokenizer(vocab=specials + pieces + [("<mask>", 0.0)])


@functools.cache
def _bert_tokenizer() -> transformers.BertTokenizer:
    """A character-level WordPiece tokenizer (ChineseCLIP's kind), Chinese characters included."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *LETTERS, *("##" + c for c in LETTERS),
             *"猫狗照片"]
    return transformers.BertTokenizer(vocab={w: i for i, w in enumerate(words)})


TOKENIZERS = {"clip": _clip_tokenizer, "siglip": _siglip_tokenizer,
              "metaclip2": _xlm_roberta_tokenizer, "altclip": _xlm_roberta_tokenizer,
              "chineseclip": _bert_tokenizer, "clipseg": _clip_tokenizer}


def processor_for(family: str):
    """Each family's own processor class around a small image processor and its tokenizer."""
    tokenizer = TOKENIZERS[family]()
    square = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    if family == "siglip":
        return transformers.SiglipProcessor(
            image_processor=transformers.SiglipImageProcessor(size=square), tokenizer=tokenizer)
    if family == "clipseg":  # resizes to a larger square for its decoder, as CIDAS's does
        image_processor = transformers.ViTImageProcessor(
            size={"height": 2 * IMAGE_SIZE, "width": 2 * IMAGE_SIZE})
        return transformers.CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer)
    if family == "chineseclip":
        image_processor = transformers.ChineseCLIPImageProcessor(size=square, crop_size=square)
        return transformers.ChineseCLIPProcessor(image_processor=image_processor,
                                                 tokenizer=tokenizer)
    image_processor = transformers.CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                                      crop_size=square)
    processor = transformers.AltCLIPProcessor if family == "altclip" else transformers.CLIPProcessor
    return processor(image_processor=image_processor, tokenizer=tokenizer)


def _config(family: str):
    tokenizer = TOKENIZERS[family]()
    text = dict(TEXT, vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    if family == "siglip":
        return transformers.SiglipConfig(text_config=dict(text, bos_token_id=None),
                                         vision_config=VISION)
    if family == "altclip":  # RoBERTa positions start after the padding index: 16 tokens
        text.update(max_position_embeddings=18, project_dim=TEXT["hidden_size"])
    config = getattr(transformers, f"{PREFIXES[family]}Config")
    return config(text_config=text, projection_dim=24,
                  vision_config=dict(VISION, hidden_act="quick_gelu"))


@functools.cache
def _model(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = getattr(transformers, f"{PREFIXES[family]}Model")(_config(family))
    return randomize_(model.eval())


def model_for(family: str, dtype: torch.dtype = torch.float64,
              attention: str = "sdpa") -> torch.nn.Module:
    model = copy.deepcopy(_model(family)).to(dtype)
    model.set_attn_implementation(attention)
    return model


def images(batch: int = 2, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator).to(dtype)


def own_features(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return pooled(model.get_image_features(pixel_values=pixels))


def vision_only(family: str, attention: str = "sdpa") -> list[tuple[torch.nn.Module, torch.Tensor]]:
    """The family's vision-only classes around the same weights, with their own outputs: its
    vision model and, where the family has one, its vision model with projection."""
    model, pixels = model_for(family, attention=attention), images()
    towers = [(model.vision_model, lambda out: out.pooler_output)]
    with_projection = getattr(transformers, f"{PREFIXES[family]}VisionModelWithProjection", None)
    if with_projection is not None:
        config = copy.deepcopy(model.config.vision_config)
        config.projection_dim = model.config.projection_dim
        tower = with_projection(config)
        tower.vision_model, tower.visual_projection = model.vision_model, model.visual_projection
        towers.append((tower.eval(), lambda out: out.image_embeds))
    with torch.no_grad():
        return [(tower, read(tower(pixel_values=pixels))) for tower, read in towers]


@pytest.mark.parametrize("family", FAMILIES)
def test_passthrough_is_bit_identical_to_get_image_features(family):
    model, pixels = model_for(family, torch.float32), images(dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(cs.HookedViT(model)(pixels), own_features(model, pixels))


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_only_classes_are_bit_identical(family):
    pixels = images()
    for tower, expected in vision_only(family):
        with torch.no_grad():
            assert torch.equal(cs.HookedViT(tower)(pixels), expected), type(tower).__name__


@pytest.mark.parametrize("family", FAMILIES)
def test_split_path_and_pattern_hooks_match_fp64(family):
    model, pixels = model_for(family), images()
    expected = own_features(model, pixels)
    hooked = cs.HookedViT(model)
    for block in hooked.blocks:
        block.attn.force_split = True
    with torch.no_grad():
        assert torch.allclose(hooked(pixels), expected, rtol=0, atol=1e-10)
        names = lambda name: name.endswith("hook_pattern")  # noqa: E731
        out, cache = hooked.run_with_cache(pixels, names_filter=names)
    assert torch.allclose(out, expected, rtol=0, atol=1e-10)
    n, h = hooked.n_tokens, hooked.n_heads
    assert cache["blocks.1.attn.hook_pattern"].shape == (2, h, n, n)
    if family == "siglip":
        assert cache["pool.hook_pattern"].shape == (2, h, 1, n)


@pytest.mark.parametrize("family", FAMILIES)
def test_eager_attention_with_its_fp32_softmax_is_exact(family):
    model, pixels = model_for(family, attention="eager"), images()
    hooked = cs.HookedViT(model)
    expected = own_features(model, pixels)
    with torch.no_grad():
        assert torch.equal(hooked(pixels), expected)
        for block in hooked.blocks:
            block.attn.force_split = True
        assert torch.allclose(hooked(pixels), expected, rtol=0, atol=1e-12)
        for block in hooked.blocks:
            block.attn.force_split = False
    parts = cs.decompose(hooked, pixels, granularity="token")
    assert (parts.total() - F.normalize(expected, dim=-1)).abs().max() < 1e-12


@pytest.mark.parametrize("family", FAMILIES)
def test_tower_module_owns_exactly_the_image_tower_parameters(family):
    model = model_for(family)
    expected = {id(p) for p in model.vision_model.parameters()}
    if family != "siglip":
        expected |= {id(p) for p in model.visual_projection.parameters()}
    hooked = cs.HookedViT(model)
    assert {id(p) for p in hooked.model.parameters()} == expected
    assert len(list(hooked.model.parameters())) == len(expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_from_transformers_encodes_text_and_images(family):
    model = model_for(family, torch.float32)
    clip = cs.HookedCLIP.from_transformers(model, processor_for(family))
    texts = clip.encode_text(TEXTS)
    assert texts.shape == (3, clip.embed_dim)
    assert torch.allclose(texts.norm(dim=-1), torch.ones(3))
    pil = [Image.fromarray(np.full((40, 48, 3), 60 * i, dtype=np.uint8)) for i in range(2)]
    pixels = clip.preprocess_images(pil)
    assert pixels.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert torch.equal(clip.encode_image(pixels), own_features(model, pixels))
    cosines = clip(pixels, texts)
    assert cosines.shape == (2, 3) and cosines.abs().max() <= 1 + 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_both_families_are_one_hooked_clip_class(family):
    model = model_for(family, torch.float32)
    clip = cs.HookedCLIP.from_transformers(model, processor_for(family))
    assert type(clip) is cs.HookedCLIP and isinstance(clip.text, TransformersText)
    assert clip.visual.family == f"transformers-{PREFIXES[family].lower()}"
    assert clip.model is model and clip.text.model is model
    tokens = clip.text.tokenize(TEXTS)
    raw = clip.text.encode_text(tokens)
    assert torch.equal(raw, pooled(model.get_text_features(**tokens)))
    assert torch.allclose(clip.encode_text(TEXTS), F.normalize(raw, dim=-1))
    assert torch.equal(clip.logit_scale, model.logit_scale.exp())
    assert (clip.text.logit_bias is not None) == (family == "siglip")


@pytest.mark.parametrize("family", FAMILIES)
def test_text_fingerprint_reads_only_the_text_tower(family):
    model = model_for(family)
    clip = cs.HookedCLIP.from_transformers(model, processor_for(family))
    names = set(clip.text.text_parameters())
    assert names and not any(name.startswith(("vision_model.", "visual_projection."))
                             for name in names)
    before = text_tower_fingerprint(clip)
    with torch.no_grad():
        model.vision_model.embeddings.patch_embedding.weight.add_(1.0)
    assert text_tower_fingerprint(clip) == before
    with torch.no_grad():
        next(model.text_model.parameters()).add_(0.01)
    assert text_tower_fingerprint(clip) != before


def test_siglip_texts_are_padded_to_full_length():
    clip = cs.HookedCLIP.from_transformers(model_for("siglip", torch.float32),
                                           processor_for("siglip"))
    with torch.no_grad():
        one = clip.encode_text(["dog"])
        batch = clip.encode_text(["dog", "a photo of a cat"])
    assert torch.allclose(one[0], batch[0], atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_from_transformers_loads_a_saved_folder_offline(family, tmp_path):
    model, processor = model_for(family, torch.float32), processor_for(family)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    clip = cs.HookedCLIP.from_transformers(str(tmp_path))
    pixels = images(dtype=torch.float32)
    assert type(clip.model) is type(model) and not clip.model.training
    assert type(clip.text.processor) is type(processor)
    assert clip.model_name == str(tmp_path) and clip.dtype == torch.float32
    assert torch.equal(clip.encode_image(pixels), own_features(model, pixels))
    assert torch.allclose(clip.encode_text(TEXTS), cs.HookedCLIP.from_transformers(
        model, processor).encode_text(TEXTS))


def test_uncached_repo_fails_fast_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(OSError, match="not in the local Hugging Face cache"):
        cs.HookedCLIP.from_transformers("captum-clipspan-tests/no-such-model")
    assert time.monotonic() - start < 5


def test_live_model_is_switched_to_eval_mode():
    model = model_for("clip", torch.float32).train()
    with pytest.warns(UserWarning, match="training mode"):
        clip = cs.HookedCLIP.from_transformers(model)
    assert not model.training
    with pytest.raises(ValueError, match="no tokenizer"):
        clip.encode_text("a cat")


def test_unsupported_transformers_towers_are_named():
    siglip2 = transformers.Siglip2VisionModel(transformers.Siglip2VisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_patches=16, patch_size=8))
    with pytest.raises(UnsupportedTowerError, match="Siglip2VisionModel.*NaFlex"):
        cs.HookedViT(siglip2)
    vit = transformers.ViTModel(transformers.ViTConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=8))
    with pytest.raises(UnsupportedTowerError, match="ViTModel"):
        cs.HookedViT(vit)
    headless = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
        **VISION, vision_use_head=False))
    with pytest.raises(UnsupportedTowerError, match="vision_use_head"):
        cs.HookedViT(headless)
    segmentation = transformers.CLIPSegForImageSegmentation(_config("clipseg")).eval()
    with pytest.raises(UnsupportedTowerError, match="CLIPSegForImageSegmentation.*model.clip"):
        cs.HookedCLIP.from_transformers(segmentation)
    classifier = transformers.CLIPForImageClassification(_config("clip"))
    with pytest.raises(UnsupportedTowerError, match="CLIPForImageClassification.*classifier"):
        cs.HookedViT(classifier)
    with pytest.raises(TypeError, match="transformers model.*from_open_clip"):
        cs.HookedCLIP.from_transformers(torch.nn.Linear(2, 2))


def test_every_refusal_says_why_and_lists_what_is_supported():
    siglip2 = transformers.Siglip2VisionModel(transformers.Siglip2VisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_patches=16, patch_size=8))
    vit = transformers.ViTModel(transformers.ViTConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=8))
    for tower in (siglip2, vit):
        with pytest.raises(UnsupportedTowerError) as refusal:
            cs.HookedViT(tower)
        message = str(refusal.value)
        assert f"transformers {type(tower).__name__}: " in message
        for supported in ("CLIPModel", "MetaClip2Model", "AltCLIPModel", "ChineseCLIPModel",
                          "CLIPSegModel", "SiglipModel", "SiglipVisionModel"):
            assert supported in message.split("captum_clipspan supports")[1]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_vision_only_classes_work_through_from_transformers(family, attention):
    """The image side alone: exact embeddings and terms; texts must come as embeddings."""
    full = cs.HookedCLIP.from_transformers(model_for(family, attention=attention),
                                           processor_for(family))
    pixels = images()
    for tower, expected in vision_only(family, attention):
        clip = cs.HookedCLIP.from_transformers(tower, processor_for(family))
        assert not clip.text.has_text_tower and clip.text.text_parameters() == {}
        with torch.no_grad():
            assert torch.equal(clip.encode_image(pixels), expected)
        parts = cs.decompose(clip, pixels, granularity="token")
        assert (parts.total() - F.normalize(expected, dim=-1)).abs().max() <= 1e-10
        with pytest.raises(ValueError, match="without a text tower.*text embeddings"):
            clip.encode_text(TEXTS)
        with pytest.raises(ValueError, match="without a text tower"):
            clip.logit_scale  # noqa: B018
        if clip.embed_dim == full.embed_dim:  # the joint space (a projection, or SigLIP without)
            texts = full.encode_text(TEXTS)
            assert torch.allclose(clip(pixels, texts), full(pixels, texts), rtol=0, atol=1e-12)
        assert clip.preprocess_images(Image.new("RGB", (40, 48))).shape == (1, 3, IMAGE_SIZE,
                                                                              IMAGE_SIZE)


@pytest.mark.parametrize("family", FAMILIES)
def test_long_texts_are_cut_to_the_text_towers_positions(family):
    clip = cs.HookedCLIP.from_transformers(model_for(family, torch.float32),
                                           processor_for(family))
    texts = clip.encode_text(["a photo of a cat " * 20, "猫的照片"])
    assert texts.shape == (2, clip.embed_dim) and torch.isfinite(texts).all()


def test_clip_tower_follows_the_models_train_and_eval_mode():
    model = model_for("clip")
    hooked = cs.HookedViT(model)
    assert not hooked.model.training
    model.train()
    assert hooked.model.training
    model.eval()
    assert not hooked.model.training


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_token_decomposition_is_exact(family, attention, dtype, tolerance):
    model = model_for(family, dtype, attention)
    clip = cs.HookedCLIP.from_transformers(model)
    pixels = images(dtype=dtype)
    expected = torch.nn.functional.normalize(own_features(model, pixels), dim=-1)
    for convention in cs.decomposition.CONVENTIONS:
        parts = cs.decompose(clip, pixels, granularity="token", convention=convention)
        assert (parts.total() - expected.to(parts.total().dtype)).abs().max() <= tolerance
        biases = parts.attn_biases if convention == "centered" else 0
        assert (parts.heads.sum(2) + biases - parts.attns).abs().max() <= tolerance
        assert (parts.tokens.sum(2) - parts.heads).abs().max() <= tolerance
        assert (parts.pool_mlp is not None) == (family == "siglip")


@pytest.mark.parametrize("family", FAMILIES)
def test_head_contribution_runs_on_text_targets(family):
    clip = cs.HookedCLIP.from_transformers(model_for(family, torch.float32),
                                           processor_for(family))
    pixels = images(dtype=torch.float32)
    texts = clip.encode_text(TEXTS)
    attributions = cs.HeadContribution(clip).attribute(pixels, texts=texts)
    assert attributions.shape[0] == 2 and attributions.shape[-1] == len(TEXTS)
    assert torch.isfinite(attributions).all()


def test_siglip_pool_mlp_is_a_layer_row_and_a_cache_array(tmp_path):
    """The MAP head's own MLP is a term: LayerContribution rows and cached terms stay complete."""
    clip = cs.HookedCLIP.from_transformers(model_for("siglip", torch.float32),
                                           processor_for("siglip"))
    pixels = images(3, torch.float32)
    texts = torch.nn.functional.normalize(torch.randn(2, clip.embed_dim), dim=-1)
    layers = cs.LayerContribution(clip)
    rows, delta = layers.attribute(pixels, texts=texts, return_convergence_delta=True)
    assert layers.row_names()[-1] == "pool_mlp" and rows.shape[1] == len(layers.row_names())
    cosines = clip(pixels, texts)
    assert (rows.sum(dim=1) - cosines).abs().max() < 1e-5 and delta.abs().max() < 1e-5
    cache = cs.cache_decomposition(clip, pixels, tmp_path / "cache", show_progress=False)
    total = cache.embed[:] + cache.attns[:].sum(1) + cache.mlps[:].sum(1) + cache.pool_mlp[:]
    assert abs(total - cache.image_embed[:]).max() < 1e-3  # fp16 arrays
