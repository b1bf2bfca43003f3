# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Captum's own methods on the hooked model
#
# The decomposition gives *direct* effects, exactly and without gradients. Captum's gradient
# methods answer a different question (how the score changes when the input or a layer's
# activation changes), and they run on the same model: `HookedCLIP(images, texts)` returns the
# `[B, T]` image-text cosine similarities, a differentiable `forward_func`, and the vision tower
# exposes TransformerLens hook points (`blocks.2.hook_resid_post`, `blocks.3.attn.hook_pattern`,
# ...), which are modules Captum's layer methods can target.
#
# This notebook runs `LayerIntegratedGradients` on a residual-stream hook, compares
# `IntegratedGradients` pixel attributions with the direct patch effect, attributes the score to
# image segments with Captum 0.9's `ImageMaskInput` and draws them with `plot_image_heatmap`, and
# reads attention patterns with `run_with_cache` as TransformerLens users do. It takes a few
# seconds.
#
# > **Real weights.** Everything here runs offline on the embedded toy model. With internet access,
# > swap the first line for a pretrained open_clip model and use a real text bank, e.g.
# > `clip = cs.HookedCLIP.from_pretrained("ViT-B-16", "laion2b_s34b_b88k")` and
# > `cs.text_bank("general")`; images then come from `clip.preprocess_images([...PIL images...])`.

# %%
import matplotlib.pyplot as plt
import torch
from captum.attr import (
    FeatureAblation,
    ImageMaskInput,
    IntegratedGradients,
    LayerIntegratedGradients,
    LLMAttributionResult,
)
from PIL import Image

import captum_clipspan as cs
from captum_clipspan.toy.scenes import make_scenes
from captum_clipspan.visualization import plot_patch_maps

torch.manual_seed(0)
clip = cs.HookedCLIP.from_pretrained("toy")  # a 4-layer, 4-head open_clip ViT trained on scenes
print(clip.visual.n_layers, "layers x", clip.visual.n_heads, "heads; image size",
      clip.visual.image_size)

# %% [markdown]
# ## The model as a `forward_func`
#
# Texts are passed as embeddings (`clip.encode_text`), through Captum's
# `additional_forward_args`; `target=t` picks the cosine with text `t`.

# %%
scenes = make_scenes(4, seed=6, split="test")
images = torch.stack([clip.preprocess(x) for x in scenes.tensors()])
texts = clip.encode_text(["a circle", "a square", "a red object"])
clip(images, texts)  # [B, T] cosines

# %% [markdown]
# ## A layer method on a hook point
#
# `clip.visual.mod_dict` maps hook names to their modules. `LayerIntegratedGradients` attributes
# the cosine with "a circle" to every unit of the residual stream after block 2, for every token.

# %%
layer = clip.visual.mod_dict["blocks.2.hook_resid_post"]
lig = LayerIntegratedGradients(clip, layer)
attributions = lig.attribute(images, baselines=torch.zeros_like(images), target=0,
                             additional_forward_args=(texts,), n_steps=16)
attributions.shape  # [B, tokens, width]

# %% [markdown]
# ## Gradients versus direct effects
#
# Left: `IntegratedGradients` on the pixels (summed over colour channels), from a black baseline,
# for the cosine with "a circle". Right: the direct patch effect of `PatchContribution` for the
# same text. They measure different things (IG follows every path through the network, the patch
# map only what each patch's tokens write directly into the embedding), so they need not agree;
# where both highlight the object, the two explanations support each other. Green raises the
# similarity, red lowers it; each map has its own scale.

# %%
ig = IntegratedGradients(clip)
pixels = ig.attribute(images, target=0, additional_forward_args=(texts,), n_steps=16)
direct = cs.PatchContribution(clip).attribute(images, texts=texts[0], interpolate=True)
print(scenes.captions[0])
fig, _ = plot_patch_maps(scenes.tensors()[0], torch.stack([pixels[0].sum(0), direct[0, 0]]),
                         titles=["IntegratedGradients", "direct patch effect"])
fig

# %% [markdown]
# ## Image segments: Captum 0.9's `ImageMaskInput` and `plot_image_heatmap`
#
# Captum 0.9 describes an image by segments with `ImageMaskInput`: each segment is one
# interpretable feature, present or replaced by a baseline colour, and `processor_fn` turns the
# (masked) PIL image into what the model reads. Captum built it for `LLMAttribution`, which scores
# the log-probability of tokens a *generative* language model writes; a CLIP model writes no
# tokens (it scores an image against texts), so `LLMAttribution` itself does not apply. The input
# does, with any perturbation method: below, `FeatureAblation` greys out one segment at a time and
# records the drop in the cosine with the scene's own shape. The segments are the object (from
# the scene's ground-truth mask, segment 0) and the four quadrants of the background (1-4).
# Captum's `LLMAttributionResult` carries the segment scores to `plot_image_heatmap`
# (`border_width=0`: its segment borders need scipy).

# %%
scene_texts = [f"a {scenes.attributes[0]['shape']}"]
picture = Image.fromarray(scenes.images[0])
on_object = torch.from_numpy(scenes.masks[0]).bool()
height, width = on_object.shape
quadrant = ((torch.arange(height)[:, None] >= height // 2).long() * 2
            + (torch.arange(width)[None] >= width // 2).long())
segments = torch.where(on_object, 0, 1 + quadrant).int()
segmented = ImageMaskInput(image=picture, mask=segments, baseline=(128, 128, 128),
                           processor_fn=lambda image: clip.preprocess_images([image]))


def segment_scores(presence):
    """[k, n_segments] present (1) / greyed out (0) -> [k, T] cosines with the texts."""
    images = torch.cat([segmented.to_model_input(row[None]) for row in presence])
    return clip(images, clip.encode_text(scene_texts))


occlusion = FeatureAblation(segment_scores).attribute(segmented.to_tensor(), target=0)
result = LLMAttributionResult(input_tokens=segmented.values, output_tokens=scene_texts,
                              seq_attr=occlusion[0], inp=segmented)
fig, ax = result.plot_image_heatmap(border_width=0)
ax.set_title(f"occlusion of each segment: change in the cosine with '{scene_texts[0]}'")
plt.close(fig)  # a pyplot figure: closed here so that the notebook shows it once, below
fig

# %% [markdown]
# The direct patch effect answers a narrower question (what each segment's tokens write straight
# into the embedding, with nothing occluded), and sums over the same segments. Where the two agree
# in sign, the segment matters both directly and in total; where they differ, the segment acts
# through later layers or through what occluding it changes elsewhere.

# %%
direct = cs.PatchContribution(clip).attribute(segmented.to_model_input(), texts=scene_texts,
                                              interpolate=True)[0, 0]
pixels_per_patch = direct.numel() / (clip.visual.grid_size[0] * clip.visual.grid_size[1])
for name, mask, total in zip(["object", "top left", "top right", "bottom left", "bottom right"],
                             segmented.get_mask_list(), occlusion[0], strict=True):
    print(f"{name:>12}: occlusion {total.item():+.4f}   direct "
          f"{direct[mask].sum().item() / pixels_per_patch:+.4f}")

# %% [markdown]
# ## Attention patterns and TransformerLens' cache
#
# `run_with_cache` returns every hooked activation by name, as in TransformerLens: the cache is
# TransformerLens' own `ActivationCache` (with a small `cfg` for the ViT), so its shorthand
# indexing and its residual-stream tools work. Attention patterns are `[B, H, N, N]` per layer,
# query rows and key columns, the class token first.

# %%
_, cache = clip.visual.run_with_cache(images)
cache["pattern", -1].shape  # [B, H, N, N]: the last layer's attention patterns

# %% [markdown]
# `stack_head_results` stacks every head's output at the class token (`pos_slice=0`, the pooled
# position); `apply_ln=True` applies the final norm's centering and scale as the real forward
# pass did, and `to_image_embed` finishes the readout (the norm's weight and the projection).
# These are the decomposition's per-head terms, before normalization, with each term centered on
# its own: `cs.decompose(..., convention="centered", normalize=False)`.

# %%
stack, labels = cache.stack_head_results(pos_slice=0, apply_ln=True, return_labels=True)
per_head = cache.to_image_embed(stack)  # [L * H, B, E]
parts = cs.decompose(clip, images, convention="centered", normalize=False)
print(labels[:4], "...", tuple(per_head.shape))
print("largest difference from cs.decompose:",
      (per_head.reshape(*parts.heads.shape[1:3], *per_head.shape[1:]).permute(2, 0, 1, 3)
       - parts.heads).abs().max().item())
