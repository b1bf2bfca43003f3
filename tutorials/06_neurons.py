# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Neurons, read in words: the second-order lens
#
# An MLP neuron writes `p_n w_n` into the residual stream. Its *direct* (first-order) effect on the
# image embedding is small; its *second-order* effect, the same write carried by every later
# attention head's value path to the embedding, is large, nearly rank one over images, and can be
# read as a sparse sum of texts (Gandelsman, Efros & Steinhardt, "Interpreting the Second-Order
# Effects of Neurons in CLIP", ICLR 2025).
#
# This notebook, on the embedded toy model and held-out synthetic scenes (seed 2024; the toy was
# trained on seed 0):
#
# 1. compares second- and first-order effects per layer;
# 2. fits the lens (`NeuronLens`) on one layer: each neuron's mean effect, its top images, the first
#    principal component of their effects and that component as a sparse sum of texts;
# 3. checks the texts against the scenes' known attributes;
# 4. mean-ablates the layer's first-order, second-order and indirect effects;
# 5. groups neurons by the concepts their texts share.
#
# > **Real weights.** With internet access use e.g.
# > `clip = cs.HookedCLIP.from_pretrained("ViT-B-32", "openai")`, layer 9, `bank="general"` and an
# > image folder; `fit(..., work_dir="lens/")` makes the two passes resumable and `torchrun` shares
# > them over processes.

# %%
import collections

import torch
from IPython.display import display

import captum_clipspan as cs
from captum_clipspan.toy.scenes import family_prompts, make_scenes
from captum_clipspan.visualization import plot_neuron_grid, plot_neuron_images

clip = cs.HookedCLIP.from_pretrained("toy")
scenes = make_scenes(400, seed=2024, split="test")
images = clip.preprocess_images(list(scenes.images))
images.shape

# %% [markdown]
# ## 1. Second- vs first-order effects
#
# `cs.second_order` and `cs.first_order` give every neuron's effect, `[B, n, E]` (or `[B, n, T]`
# with `texts=`). We compare the mean norm of each neuron's centered effect.

# %%
for layer in range(clip.visual.n_layers - 1):
    second = cs.second_order(clip, images[:100], layer)
    first = cs.first_order(clip, images[:100], layer)
    size = [(effect - effect.mean(0)).norm(dim=-1).mean().item() for effect in (second, first)]
    print(f"MLP {layer}: second-order {size[0]:.5f}, first-order {size[1]:.5f}, "
          f"ratio {size[0] / size[1]:.1f}")

# %% [markdown]
# ## 2. The lens on one layer
#
# Two streamed passes over the images: the mean effect of each neuron, then its top-`k` images by
# the norm of the centered effect (kept in a bounded running top-k) and the first principal
# component of those effects. The component is decomposed over the (toy) text bank by orthogonal
# matching pursuit, after the authors' text preprocessing.

# %%
lens = cs.NeuronLens(clip, layer=0, bank="toy", top_k=20, n_components=4)
report = lens.fit(images, batch_size=100)
for neuron in report.strongest(3):
    print(report.describe(neuron))
display(report.to_frame().head(10))

# %%
fig, _ = report.plot()
fig

# %%
fig, _ = plot_neuron_grid(report)
fig

# %% [markdown]
# ## 3. Do the texts name what the top images have?
#
# Every toy bank text names one attribute. The strongest neurons' top images share one value of
# one family, and their texts name that family (often by contrast: the bank is centered, so
# "striped" may read as `-dotted +checkered -plain`).

# %%
for neuron in report.strongest(3):
    rows = report.images_of(neuron).tolist()
    shared = {family: collections.Counter(scenes.attributes[row][family] for row in rows)
              .most_common(1)[0] for family in ("texture", "background", "count", "shape")}
    print(neuron, report.texts_of(neuron, 2), shared)

# %% [markdown]
# Top images of the strongest neurons, with each neuron's activation at every patch
# (`blocks.{l}.mlp.hook_post`) overlaid.

# %%
strongest = report.strongest(3)
post = {}
with clip.visual.hooks(fwd_hooks=[("blocks.0.mlp.hook_post",
                                   lambda tensor, hook: post.update(value=tensor))]):
    clip.encode_image(images[report.top_images[[report.row(n) for n in strongest], :6].flatten()])
grid = clip.visual.grid_size
maps = post["value"][:, clip.visual.n_prefix_tokens:].reshape(3, 6, *grid, -1)
fig, _ = plot_neuron_images(
    [scenes.images[report.images_of(n, 6).numpy()] for n in strongest],
    [maps[i, ..., n] for i, n in enumerate(strongest)],
    titles=[f"neuron {n}: {report.texts_of(n, 1)[0][0]}" for n in strongest])
fig

# %% [markdown]
# ## 4. Mean-ablating the layer's effects
#
# Zero-shot shape classification with MLP 0's first-order effect, its second-order effect, both,
# the indirect effects beyond second order, or its whole output mean-ablated (the last re-runs the
# model with the MLP's output replaced by its mean). The report's means give the second-order
# mean, so no pass is spent on it.

# %%
classifier = cs.ZeroShotClassifier.from_prompts(clip, family_prompts("shape"))
data = torch.utils.data.TensorDataset(images, torch.as_tensor(scenes.labels("shape")))
study = cs.neuron_ablation(clip, 0, data, classifier, report=report)
display(study.to_frame())

# %% [markdown]
# ## 5. Concepts shared by neurons
#
# Neurons whose first texts share a text, and the images among the top images of several of them.

# %%
for concept in cs.discover_concepts(report, max_texts=2)[:5]:
    print(f"{concept.text!r}: {len(concept.neurons)} neurons, "
          f"{len(concept.images)} images shared by at least two of them")
