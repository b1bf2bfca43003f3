# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Getting started: heads and patch maps
#
# A CLIP vision transformer turns an image into one embedding, and that embedding is an **exact
# sum** of what each part of the network writes into it directly: the patch embedding, every MLP
# layer, every attention head, and, inside a head, every image token it reads. Each of these terms
# lives in the joint image-text space, so it can be compared with a text embedding: the dot
# product of a head's term with the embedding of "a red object" is that head's share of the
# image-text cosine similarity, and the shares of all terms add up to the similarity itself.
#
# This notebook
#
# 1. decomposes a few images and checks that the terms add up,
# 2. scores every head against a few texts (`HeadContribution`),
# 3. draws patch maps: which image regions push the embedding towards a text
#    (`PatchContribution`).
#
# It runs in a few seconds on CPU with the toy model shipped with the package: a 4-layer, 4-head
# open_clip ViT trained on synthetic scenes (one to three objects with a shape, a color and a
# size, over a textured background).
#
# > **Real weights.** Everything here runs offline on the embedded toy model. With internet access,
# > swap the first line for a pretrained open_clip model and use a real text bank, e.g.
# > `clip = cs.HookedCLIP.from_pretrained("ViT-B-16", "laion2b_s34b_b88k")` and
# > `cs.text_bank("general")`; images then come from `clip.preprocess_images([...PIL images...])`.

# %%
import torch
from captum.attr import visualization as viz

import captum_clipspan as cs
from captum_clipspan.attr.patches import contrast_maps
from captum_clipspan.toy.scenes import make_scenes
from captum_clipspan.visualization import plot_head_grid, plot_patch_maps, plot_top_images

torch.manual_seed(0)
clip = cs.HookedCLIP.from_pretrained("toy")  # a 4-layer, 4-head open_clip ViT trained on scenes
print(clip.visual.n_layers, "layers x", clip.visual.n_heads, "heads; image size",
      clip.visual.image_size)

# %% [markdown]
# ## The images
#
# `make_scenes` renders synthetic scenes whose attributes are known exactly, so we can tell
# whether an explanation points at the right thing. `clip.preprocess` turns each one into the
# normalized tensor the model reads. The captions name every attribute of a scene.

# %%
scenes = make_scenes(8, seed=1, split="test")  # synthetic scenes, held out from training
images = torch.stack([clip.preprocess(image) for image in scenes.tensors()])
fig, _ = plot_top_images(scenes.tensors(), titles=scenes.captions, ncols=4)
fig

# %% [markdown]
# ## The decomposition is exact
#
# `cs.decompose` runs the model once and returns every term as a tensor. With
# `granularity="token"` it keeps, per layer and head, the contribution that flows through each
# token (`tokens`, `[B, L, N, H, E]`, with `N` = class token + patches); `heads` sums it over
# tokens (`[B, L, H, E]`). `total()` adds up all terms (embedding, MSA layers, MLP layers); it
# equals the unit-norm image embedding up to float rounding, which the last line measures.

# %%
parts = cs.decompose(clip, images, granularity="token")
print("heads:", tuple(parts.heads.shape), "tokens:", tuple(parts.tokens.shape))
print("largest completeness error:", (parts.total() - parts.image_embed).abs().max().item())

# %% [markdown]
# ## Heads against texts
#
# `HeadContribution` is a Captum attribution. `texts=` takes strings, text embeddings or a
# `ZeroShotClassifier`; the result `scores[b, l, h, t]` is head `(l, h)`'s direct effect on the
# cosine similarity between image `b` and text `t`. With `return_convergence_delta=True`, Captum's
# completeness check comes back too: the sum of *all* terms (heads, MLPs, embedding) minus the
# true cosine, which is zero up to rounding. `target` keeps Captum's meaning: one index per image
# into the texts, which selects that text's scores.

# %%
texts = ["a red object", "a circle", "an object on a striped background"]
heads = cs.HeadContribution(clip)
scores, delta = heads.attribute(images, texts=texts, return_convergence_delta=True)
print("scores", tuple(scores.shape), "| largest delta:", delta.abs().max().item())
own = heads.attribute(images, texts=texts, target=0)  # [B, L, H]: the first text for every image
print("target=0:", tuple(own.shape))

# %% [markdown]
# The grid below has one cell per head (rows: layers, columns: heads). The color is how much the
# head's effect on "a red object" **varies across the eight images**. A head whose effect is the
# same for every image adds a constant and cannot tell red objects from others; a head with a
# large spread changes its vote with the image content, so the brightest cells are the first
# candidates for a "color head" (notebook 02 tests that with a probe over 600 images). Eight
# images are a small sample: treat this grid as a quick look, not a measurement. In large CLIP
# models the heads with large direct effects sit in the last few layers (the paper's Section 3);
# the toy model has only four layers, and its early heads matter too.

# %%
fig, ax = plot_head_grid(scores[..., 0].std(dim=0), title="spread of each head's effect on "
                         "'a red object'", center=None, cmap="viridis", colorbar_label="std")
fig

# %% [markdown]
# ## Patch maps
#
# `PatchContribution` adds up the per-token terms of the chosen layers and heads (all of them by
# default), drops the class token and arranges the patches on their grid; `interpolate=True`
# upsamples the `[B, T, g, g]` map to pixels. Summed over the patches (plus the class token and
# the remaining terms) it gives the cosine again.
#
# Maps of several texts on one image look alike when drawn raw: most of each map is the image's own
# direct effect, which every text shares. The paper's remedy is a contrast: each text's map minus
# the mean of the texts' maps (`contrast_maps(maps)`, or `contrast="mean"` in `attribute`; an index
# instead subtracts one reference text's map). What is left is where the texts *differ*. The panels
# share one colour scale (its ends are stated on the colorbar), so a weak map looks weak: green
# patches favour that text over the others, red ones favour the others. Look for the object's pixels
# lighting up for the texts that describe the object ("a red object", "a circle"), and compare with
# the texture text, which this scene (a checkered background) does not match.

# %%
maps = cs.PatchContribution(clip).attribute(images, texts=texts, interpolate=True)
apart = contrast_maps(maps)  # [B, T, H, W]: each map minus the mean over the texts
print(scenes.captions[0])
fig, _ = plot_patch_maps(scenes.tensors()[0], apart[0], titles=texts,
                         colorbar_label="patch effect minus the mean over the three texts")
fig

# %% [markdown]
# The raw maps (`maps`, no contrast) are what Captum's completeness is about: summed over the
# patches, plus the class token and the other terms, they give the cosine. They are ordinary Captum
# attributions, so Captum's own visualizer draws them too (each map on its own scale). Captum's
# figures are plain matplotlib figures, which IPython only displays once its inline backend is on,
# hence `%matplotlib inline` (the figures of `captum_clipspan.visualization` display without it).

# %%
# %matplotlib inline
fig, _ = viz.visualize_image_attr(maps[0, :1].permute(1, 2, 0).numpy(), scenes.images[0] / 255.0,
                                  "blended_heat_map", sign="all", use_pyplot=False,
                                  title=f"'{texts[0]}'", fig_size=(3.5, 3.5))
fig
