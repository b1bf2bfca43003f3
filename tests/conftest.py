"""Random-initialized open_clip towers with every bias, LayerNorm and LayerScale parameter
randomized (open_clip initializes biases to zero, which would hide bias bugs)."""

from __future__ import annotations

import copy
import functools

import open_clip
import pytest
import torch
from open_clip.model import CLIP

import captum_clipspan as cs


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Encoded text banks go to a temporary folder, never the user's cache."""
    monkeypatch.setenv("CLIPSPAN_CACHE_DIR", str(tmp_path_factory.mktemp("user_cache")))


# A small text tower with open_clip's real BPE tokenizer (it ships in the wheel).
TEXT_CFG = dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)
SMALL_VISION = dict(image_size=32, patch_size=8, width=64, layers=3, head_width=16,
                    ls_init_value=0.5)
# Pooling variants of a small tower: every open_clip-native combination.
SMALL_VARIANTS = {
    "tok": {},
    "tok-ln-after-pool": dict(final_ln_after_pool=True),
    "avg": dict(pool_type="avg"),
    "clipa": dict(pool_type="avg", final_ln_after_pool=True, no_ln_pre=True),
    "quickgelu-no-ls": dict(ls_init_value=None),
}
# Real open_clip configurations; the CLIPA tower is shrunk (ViT-L is too slow for CPU tests) but
# keeps its no-ln_pre, avg-pooling, LN-after-pool layout.
NAMED_TOWERS = ["ViT-B-32", "ViT-B-16", "ViT-B-16-quickgelu", "ViT-M-16-alt", "CLIPA-style"]


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every 1-D parameter (biases, LN, LayerScale, class token) random values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() == 1:
                noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
                center = 1.0 if name.endswith(("weight", "gamma")) else 0.0
                param.copy_(center + 0.3 * noise)
    return module


@functools.cache
def _named_model(name: str) -> CLIP:
    torch.manual_seed(0)
    if name == "CLIPA-style":
        vision = dict(open_clip.get_model_config("ViT-L-14-CLIPA")["vision_cfg"])
        vision.update(layers=4, width=256, image_size=112, patch_size=14)
        model = CLIP(embed_dim=128, vision_cfg=vision, text_cfg=TEXT_CFG)
    else:
        config = open_clip.get_model_config(name)
        model = CLIP(embed_dim=config["embed_dim"], vision_cfg=config["vision_cfg"],
                     text_cfg=TEXT_CFG, quick_gelu=config.get("quick_gelu", False))
    return randomize_(model.eval())


def named_clip(name: str, dtype: torch.dtype = torch.float32) -> cs.HookedCLIP:
    model = copy.deepcopy(_named_model(name)).to(dtype)
    return cs.HookedCLIP.from_open_clip(model, tokenizer=open_clip.get_tokenizer("ViT-B-32"))


def small_clip(variant: str = "tok", dtype: torch.dtype = torch.float64,
               seed: int = 0) -> cs.HookedCLIP:
    torch.manual_seed(seed)
    vision = {**SMALL_VISION, **SMALL_VARIANTS[variant]}
    model = CLIP(embed_dim=24, vision_cfg=vision, text_cfg=TEXT_CFG,
                 quick_gelu=variant.startswith("quickgelu"))
    randomize_(model.eval(), seed)
    return cs.HookedCLIP.from_open_clip(model.to(dtype),
                                        tokenizer=open_clip.get_tokenizer("ViT-B-32"))


def images_for(clip: cs.HookedCLIP, batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    size = clip.visual.image_size
    return torch.randn(batch, 3, *size, generator=generator).to(clip.dtype)


@pytest.fixture
def clip64() -> cs.HookedCLIP:
    return small_clip("tok", torch.float64)


@pytest.fixture
def clip32() -> cs.HookedCLIP:
    return small_clip("tok", torch.float32)
