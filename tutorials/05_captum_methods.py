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
# `IntegratedGradients` pixel attributions with the direct patch effect, and reads attention
# patterns with `run_with_cache`. It takes a few seconds.
#
# > **Real weights.** Everything here runs offline on the embedded toy model. With internet access,
# > swap the first line for a pretrained open_clip model and use a real text bank, e.g.
# > `clip = cs.HookedCLIP.from_pretrained("ViT-B-16", "laion2b_s34b_b88k")` and
# > `cs.text_bank("general")`; images then come from `clip.preprocess_images([...PIL images...])`.

# %%
import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients

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
scenes = make_scenes(4, seed=6)
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
# ## Attention patterns
#
# `run_with_cache` returns every hooked activation by name (filtered here to the attention
# patterns), as in TransformerLens: `[B, H, N, N]` per layer, query rows and key columns, the
# class token first.

# %%
_, cache = clip.visual.run_with_cache(images, names_filter=lambda n: n.endswith("hook_pattern"))
cache["blocks.3.attn.hook_pattern"].shape  # [B, H, N, N]
