"""Bad input gets a clear error that says what is accepted."""

from __future__ import annotations

import open_clip
import pytest
import torch
from conftest import TEXT_CFG, images_for
from open_clip.model import CLIP

import captum_clipspan as cs


def test_wrong_image_size_names_the_expected_shape(clip32):
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        cs.decompose(clip32, torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="shape"):
        cs.HeadContribution(clip32).attribute(torch.randn(3, 32, 32), texts="a dog")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_images_are_refused(clip32, value):
    images = images_for(clip32)
    images[0, 0, 0, 0] = value
    with pytest.raises(ValueError, match="NaN"):
        cs.HeadContribution(clip32).attribute(images, texts="a dog")
    images[1, 2, 3, 4] = -value  # +inf and -inf together: the sum is NaN as well
    with pytest.raises(ValueError, match="NaN"):
        cs.decompose(clip32, images)


def test_finite_images_whose_sum_overflows_are_accepted(clip32):
    images = torch.full((2, 3, 32, 32), 3e38)
    clip32.visual.check_images(images)  # the sum is infinite, every value finite
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        clip32.visual.check_images(images)


def test_non_tensor_images_are_refused(clip32):
    with pytest.raises(TypeError, match="preprocess_images"):
        cs.decompose(clip32, [[0.0]])


def test_text_embeddings_of_the_wrong_width(clip32):
    with pytest.raises(ValueError, match=r"\[T, 24\]"):
        cs.HeadContribution(clip32).attribute(images_for(clip32), texts=torch.randn(2, 512))


def test_empty_text_list(clip32):
    with pytest.raises(ValueError, match="empty"):
        clip32.encode_text([])
    with pytest.raises(ValueError, match="empty"):
        cs.HeadContribution(clip32).attribute(images_for(clip32), texts=torch.empty(0, 24))


def test_unknown_texts_and_target_types(clip32):
    with pytest.raises(TypeError, match="texts must be"):
        cs.HeadContribution(clip32).attribute(images_for(clip32), texts={"dog": 1})
    with pytest.raises(TypeError, match="target must be"):
        cs.HeadContribution(clip32).attribute(images_for(clip32), texts="a dog",
                                              target={"dog": 1})


def test_targets_need_texts_and_valid_indices(clip32):
    images = images_for(clip32)
    with pytest.raises(ValueError, match="texts="):
        cs.HeadContribution(clip32).attribute(images, target=[0, 1])
    classifier = cs.ZeroShotClassifier(clip32, ["dog", "cat"], templates=["{}"])
    with pytest.raises(ValueError, match=r"0\.\.1"):
        cs.HeadContribution(clip32).attribute(images, texts=classifier, target=[0, 5])
    with pytest.raises(ValueError, match=r"one text index per example \(2\)"):
        cs.HeadContribution(clip32).attribute(images, texts=classifier, target=[0, 1, 1])


def test_layers_and_heads_out_of_range(clip32):
    with pytest.raises(ValueError, match="out of range"):
        cs.HeadContribution(clip32, layers=[7])
    with pytest.raises(ValueError, match="out of range"):
        cs.PatchContribution(clip32, heads=[9])


def test_granularity_and_convention_are_checked(clip32):
    with pytest.raises(ValueError, match="granularity"):
        cs.decompose(clip32, images_for(clip32), granularity="neuron")
    with pytest.raises(ValueError, match="convention"):
        cs.HeadContribution(clip32, convention="paper")


def test_training_mode_is_refused_by_decompose(clip32):
    clip32.model.train()
    with pytest.raises(ValueError, match="training mode"):
        cs.decompose(clip32, images_for(clip32))


def test_not_a_hooked_clip():
    with pytest.raises(TypeError, match="HookedCLIP"):
        cs.HeadContribution(torch.nn.Linear(2, 2))


def _small_clip(vision_cfg):
    return CLIP(embed_dim=16, vision_cfg=vision_cfg, text_cfg=TEXT_CFG).eval()


@pytest.mark.parametrize("vision_cfg, message", [
    (dict(layers=[1, 1, 1, 1], width=8, image_size=64), "ResNet"),
    (dict(image_size=32, patch_size=8, width=32, layers=1, head_width=16, qk_norm=True),
     "custom-block"),
])
def test_unsupported_towers_are_named(vision_cfg, message):
    with pytest.raises(ValueError, match=message):
        cs.HookedCLIP.from_open_clip(_small_clip(vision_cfg))


def test_timm_towers_are_refused():
    from open_clip.timm_model import TimmModel

    with pytest.raises(ValueError, match="timm"):
        cs.HookedViT(TimmModel("resnet18", embed_dim=16, image_size=64))


def test_unknown_model_name():
    with pytest.raises(ValueError, match="list_models"):
        cs.HookedCLIP.from_pretrained("ViT-Q-99")


def test_pretrained_loading_code_builds_random_weights_offline():
    clip = cs.HookedCLIP.from_pretrained("ViT-B-32", pretrained=None)
    assert clip.visual.n_layers == 12 and clip.embed_dim == 512 and not clip.model.training
    assert isinstance(clip.tokenizer, open_clip.tokenizer.SimpleTokenizer)
