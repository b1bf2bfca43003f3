# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Extending: a custom attribution
#
# The built-in classes (`HeadContribution`, `PatchContribution`, `LayerContribution`, ...) are
# thin views of one exact decomposition. A new quantity needs only a new view: subclass
# `ClipSpanAttribution` and write `attribute` in three lines.
#
# * `self.decompose(inputs, texts, target, granularity=...)` checks `texts=` and `target` the way
#   every class of the package does and runs the decomposition, projected on the texts;
# * pick the terms you want from the returned `Decomposition`;
# * `self.output(...)` selects each image's text when `target` is given and adds Captum's
#   convergence delta (the completeness error) when `return_convergence_delta=True`.
#
# The example is a quantity the built-in classes do not report: the part of each head's direct
# effect that flows through the **class token's own value vector** (token 0), as opposed to the
# image patches. In a class-token-pooled ViT every head's output at the class token is a weighted
# sum of value vectors over all tokens; this view isolates the class token's share. The notebook
# runs in a few seconds.
#
# > **Real weights.** Everything here runs offline on the embedded toy model. With internet access,
# > swap the first line for a pretrained open_clip model and use a real text bank, e.g.
# > `clip = cs.HookedCLIP.from_pretrained("ViT-B-16", "laion2b_s34b_b88k")` and
# > `cs.text_bank("general")`; images then come from `clip.preprocess_images([...PIL images...])`.

# %%
import torch
from captum.attr import NoiseTunnel
from captum.log import log_usage

import captum_clipspan as cs
from captum_clipspan.toy.scenes import make_scenes
from captum_clipspan.visualization import plot_head_grid

torch.manual_seed(0)
clip = cs.HookedCLIP.from_pretrained("toy")  # a 4-layer, 4-head open_clip ViT trained on scenes
print(clip.visual.n_layers, "layers x", clip.visual.n_heads, "heads; image size",
      clip.visual.image_size)

# %% [markdown]
# ## The class
#
# `parts.tokens` is `[B, L, N, H, T]` once projected on `T` texts (`N` tokens, class token
# first), so token 0 is one index away. `@log_usage()` is Captum's decorator; keeping it lets
# Captum's wrappers (`NoiseTunnel`) call the method the way they call Captum's own.

# %%
class ClassTokenContribution(cs.ClipSpanAttribution):
    """Direct effect that flows through the class token's value vectors, per layer and head."""

    @log_usage()
    def attribute(self, inputs, texts=None, target=None, return_convergence_delta=False):
        parts, resolved = self.decompose(inputs, texts, target, granularity="token")
        through_class_token = parts.tokens[:, :, 0]  # [B, L, H, T]
        return self.output(through_class_token, parts, resolved, return_convergence_delta)


# %% [markdown]
# ## Using it
#
# Four scenes, two texts. The scores are `[B, L, H, T]` like `HeadContribution`'s. The delta is
# the completeness error of the whole decomposition (the sum of all terms minus the true cosine),
# so it is zero up to rounding here too, even though the class-token terms alone do not add up
# to the cosine.

# %%
scenes = make_scenes(4, seed=5, split="test")
images = torch.stack([clip.preprocess(x) for x in scenes.tensors()])
texts = ["a circle", "a square"]
scores, delta = ClassTokenContribution(clip).attribute(images, texts=texts,
                                                      return_convergence_delta=True)
print("scores", tuple(scores.shape), "| largest delta:", delta.abs().max().item())

# %% [markdown]
# How much of each head's effect on "a circle" goes through the class token? The grid shows, per
# head, the class-token part as a fraction of the head's whole direct effect (`HeadContribution`),
# averaged over the four images. Values near 1 mean the head mostly copies the class token;
# values near 0 mean it reads the image patches. Heads that read patches are the ones whose
# patch maps (notebook 01) are informative.

# %%
whole = cs.HeadContribution(clip).attribute(images, texts=texts)
share = (scores[..., 0].abs() / whole[..., 0].abs().clamp_min(1e-8)).mean(0)
fig, _ = plot_head_grid(share, title="class-token share of each head's effect on 'a circle'",
                        center=None, cmap="viridis", annotate=True, colorbar_label="share")
fig

# %% [markdown]
# ## With Captum's wrappers
#
# The new class works with Captum's wrappers, e.g. `NoiseTunnel` (SmoothGrad-style averaging over
# noisy copies of the images): it repeats `target` for every noisy sample and passes `texts=`
# through unchanged. With `target` given, the text dimension is dropped: `[B, L, H]`.

# %%
smooth = NoiseTunnel(ClassTokenContribution(clip)).attribute(
    images, nt_samples=4, stdevs=0.05, texts=texts, target=[0, 1, 0, 1])
smooth.shape

# %% [markdown]
# ## Without a class
#
# The math is usable directly as well: `cs.decompose(..., text_embeddings=...)` contracts with the
# texts early, so per-token scores are `[B, L, N, H, T]` and never build the much larger
# `[B, L, N, H, E]` tensor of joint-space vectors.

# %%
text_embeddings = clip.encode_text(texts)
parts = cs.decompose(clip, images, granularity="token", text_embeddings=text_embeddings)
parts.tokens.shape  # [B, L, N, H, T]
