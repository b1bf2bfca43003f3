"""Every open_clip configuration whose image tower is open_clip's own (ViT, CoCa, ResNet) is
either decomposed exactly or refused by name; the timm-based ones are swept in
``test_timm_towers.py``."""

from __future__ import annotations

import collections

import open_clip
import torch
import torch.nn.functional as F
from conftest import randomize_

import captum_clipspan as cs
from captum_clipspan.hooked.spec import UnsupportedTowerError


def _native_configs() -> list[str]:
    return [name for name in open_clip.list_models()
            if "timm_model_name" not in open_clip.get_model_config(name).get("vision_cfg", {})]


def _tiny_native_tower(name: str) -> torch.nn.Module:
    """The configuration's tower with 2 blocks of width 64 on a 2 x 2 patch grid."""
    config = open_clip.get_model_config(name)
    vision = dict(config["vision_cfg"])
    if not isinstance(vision.get("layers"), int):  # a ResNet: build it as configured
        vision["image_size"] = 64
    else:
        vision.update(layers=2, width=64, head_width=16, image_size=2 * vision["patch_size"])
        if "attn_pooler_queries" in vision or vision.get("attentional_pool"):
            vision.update(attn_pooler_heads=4, attn_pooler_queries=3)
    torch.manual_seed(0)
    visual = open_clip.model._build_vision_tower(config["embed_dim"], vision,
                                                 quick_gelu=config.get("quick_gelu", False))
    return randomize_(visual.eval())


def test_every_open_clip_native_tower_is_exact_or_refused_by_name():
    counts = collections.Counter()
    for name in _native_configs():
        visual = _tiny_native_tower(name)
        try:
            hooked = cs.HookedViT(visual)
        except UnsupportedTowerError as error:
            assert "ResNet" in str(error), f"{name}: {error}"
            counts["refused (ResNet)"] += 1
            continue
        images = torch.randn(2, 3, *hooked.image_size)
        with torch.no_grad():
            output = visual(images)
            output = output[0] if isinstance(output, tuple) else output
            assert torch.equal(hooked(images), output), name
        for convention in ("reference", "centered"):
            parts = cs.decompose(hooked, images, granularity="token", convention=convention)
            error = (parts.total() - F.normalize(output, dim=-1)).abs().max()
            assert error < 1e-5, f"{name} ({convention}): off by {error:.2g}"
            assert (parts.tokens.sum(dim=2) - parts.heads).abs().max() < 1e-5, name
        counts["coca" if hooked.pool is not None else hooked.family] += 1
    print(dict(sorted(counts.items())))
    assert counts["open_clip"] >= 50 and counts["coca"] == 2 and counts["refused (ResNet)"] == 10
