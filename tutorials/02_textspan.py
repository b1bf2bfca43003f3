# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # TextSpan: what each head does
#
# A head's direct contribution to the image embedding is a vector in the joint image-text space,
# one per image. Over many images these vectors mostly vary along a few directions, and TextSpan
# (the paper's Algorithm 1) names those directions with texts. For one head it takes the matrix
# `C` (`[K, E]`) of its contributions to `K` images and a bank of candidate texts, then `m` times:
# pick the text whose direction captures the most variance of the (centered) rows of `C`, record
# it, and remove that direction from `C` and from every remaining text. The result is a short,
# ordered list of texts per head, with the fraction of the head's variance explained after each.
#
# Labels are only useful if they are right, so this notebook checks them three ways:
#
# 1. **probe**: how well each head on its own predicts an attribute (zero-shot accuracy with
#    everything else mean-ablated);
# 2. **retrieval**: the images a head ranks highest for a text;
# 3. **reconstruction**: how much zero-shot accuracy survives when every head is replaced by its
#    projection on its first `m` texts, against a bank of random directions of the same size.
#
# It takes well under a minute on CPU with the toy model and 600 synthetic scenes.
#
# > **Real weights.** Everything here runs offline on the embedded toy model. With internet access,
# > swap the first line for a pretrained open_clip model and use a real text bank, e.g.
# > `clip = cs.HookedCLIP.from_pretrained("ViT-B-16", "laion2b_s34b_b88k")` and
# > `cs.text_bank("general")`; images then come from `clip.preprocess_images([...PIL images...])`.

# %%
import tempfile

import torch
from IPython.display import display

import captum_clipspan as cs
from captum_clipspan.attr.textspan import random_bank
from captum_clipspan.toy.scenes import ATTRIBUTES, SyntheticScenes, make_scenes, zero_shot_prompts
from captum_clipspan.visualization import plot_head_grid, plot_top_images

torch.manual_seed(0)
clip = cs.HookedCLIP.from_pretrained("toy")  # a 4-layer, 4-head open_clip ViT trained on scenes
print(clip.visual.n_layers, "layers x", clip.visual.n_heads, "heads; image size",
      clip.visual.image_size)

# %% [markdown]
# ## Cache the decomposition once
#
# TextSpan, the probes and retrieval only need each head's contribution per image, so the model
# runs once over the images and `cache_decomposition` stores the terms on disk, memory-mapped
# (`heads` is `[images, layers, heads, E]`). With `label="shape"` the scenes come with their
# shape as the label, and the cache keeps the labels too.

# %%
scenes = SyntheticScenes(600, seed=2, label="shape", transform=clip.preprocess, split="test")
folder = tempfile.mkdtemp()
cache = cs.cache_decomposition(clip, scenes, folder + "/cache", show_progress=False)
print("cached heads:", cache.heads.shape)

# %% [markdown]
# ## Run TextSpan on every head
#
# The toy bank holds the phrases of the scenes' attributes ("a circle", "a red object", "on a
# striped background", ...). `m=5` keeps five texts per head. `describe` lists them in the order
# they were chosen, with the cumulative fraction of the head's variance they explain; `rank` is
# the number of singular directions of `C` the bank was restricted to first.

# %%
bank = cs.text_bank("toy")  # the scenes' attribute phrases
print(len(bank), "texts, e.g.", bank[:3])
report = cs.TextSpan(clip, bank=bank).fit(cache, m=5, show_progress=False)
print(report.describe(layer=3, head=0))

# %% [markdown]
# One panel per head (`L{layer}.H{head}`), texts top-down in the order chosen. Each bar is the
# cumulative variance explained after that text; its darker end is what the text itself added.
# A head is well described when its first two or three texts belong to one attribute (all colors,
# or all shapes) and the bar is long: that head writes one property of the image into the
# embedding. Mixed lists or short bars mean the head's outputs are not spanned by the bank.

# %%
fig, _ = report.plot(max_texts=5)
fig

# %% [markdown]
# The same results as a table, one row per (head, step), for filtering or saving:

# %%
report.to_frame().head(10)

# %% [markdown]
# ## Which attribute does each head carry?
#
# A probe, independent of the texts TextSpan chose: replace every component except one head by
# its mean over the images, and measure zero-shot accuracy (`head_accuracy`). Only that head's
# variation is left to separate the classes, so its accuracy measures what it carries. The grids
# share a 0..1 scale; the black mark on the colour bar is chance (1 / number of classes). Compare
# the heads that stand out with their TextSpan texts above: a head that probes well for color
# should have color words among its first texts.

# %%
def classifier(family):
    """A zero-shot classifier over one attribute family, with the scenes' prompts."""
    return cs.ZeroShotClassifier.from_prompts(
        clip, {value: zero_shot_prompts(family, value) for value in ATTRIBUTES[family]})


attributes = [scenes.attributes(i) for i in range(len(scenes))]
probes = {}
for family in ["shape", "color"]:
    labels = [ATTRIBUTES[family].index(a[family]) for a in attributes]
    probes[family] = cs.head_accuracy(cache, classifier(family), labels)
    fig, _ = plot_head_grid(probes[family], title=f"{family} probe", center=None,
                            cmap="viridis", annotate=True, vmin=0, vmax=1,
                            chance=1 / len(ATTRIBUTES[family]))
    display(fig)

# %% [markdown]
# ## Head-specific retrieval
#
# `retrieve` ranks the cached images by one head's direct effect on a query, here the best color
# head and "a red object". If the head really carries color, the top images are red objects of
# any shape, size and background; the score under each image is its dot product with the text.

# %%
best = probes["color"].flatten().argmax().item()
layer, head = divmod(best, clip.visual.n_heads)
top = cs.retrieve(cache, layer, head, "a red object", k=8, clip=clip)
shown = make_scenes(600, seed=2, split="test").tensors()[top.indices]  # same scenes, raw
fig, _ = plot_top_images(shown, scores=top.scores, ncols=8,
                         title=f"L{layer}.H{head}: top images for 'a red object'")
fig

# %% [markdown]
# ## How much of the model do the texts explain?
#
# `report.accuracy` replaces every head by its projection on its first `m` TextSpan texts,
# mean-ablates everything else, and measures zero-shot shape accuracy (the cache's labels).
# `baseline` is the whole model and `heads, no projection` the heads kept whole with the rest
# mean-ablated: the best the projections can do. The same with a bank of random unit directions
# (`random_bank`) shows what `m` arbitrary directions would keep: TextSpan's texts should get
# much closer to `heads, no projection` with the same `m`.

# %%
shape = classifier("shape")
random = cs.TextSpan(clip, bank=[f"random {i}" for i in range(len(bank))],
                     text_embeddings=random_bank(len(bank), clip.embed_dim))
random_report = random.fit(cache, m=5, show_progress=False)
{"TextSpan": report.accuracy(cache, shape, m_values=[1, 3, 5]),
 "random bank": random_report.accuracy(cache, shape, m_values=[1, 3, 5])}
