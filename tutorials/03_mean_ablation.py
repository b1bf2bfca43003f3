# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Mean-ablation: which components matter
#
# Before reading heads with texts, it helps to know which parts of the network the image
# embedding actually depends on. Mean-ablation answers that: replace a component's output by its
# **mean over a reference set of images** (so it still contributes, but no longer depends on the
# image) and measure how much a score or an accuracy changes. The paper (Section 3.1, Figure 2 and
# Table 1) finds that in CLIP-ViTs the direct effects that matter come from the attention layers
# of the last few blocks, while the MLPs can be mean-ablated at little cost; that is why the
# later notebooks look at attention heads.
#
# Two modes:
#
# * **direct** replaces only the component's *direct term* in the decomposition of the embedding
#   (notebook 01). No forward pass is re-run, so it is fast, and what later layers read from the
#   component is left untouched.
# * **total** re-runs the network with the component's output replaced inside it (hooks), so the
#   change also includes everything downstream layers did with it (indirect effects).
#
# The task throughout is zero-shot shape classification of synthetic scenes with the toy model;
# the notebook takes about half a minute on CPU.
#
# > **Real weights.** Everything here runs offline on the embedded toy model. With internet access,
# > swap the first line for a pretrained open_clip model and use a real text bank, e.g.
# > `clip = cs.HookedCLIP.from_pretrained("ViT-B-16", "laion2b_s34b_b88k")` and
# > `cs.text_bank("general")`; images then come from `clip.preprocess_images([...PIL images...])`.

# %%
import pandas as pd
import torch

import captum_clipspan as cs
from captum_clipspan.toy.scenes import ATTRIBUTES, SyntheticScenes, zero_shot_prompts
from captum_clipspan.visualization import plot_ablation_bars, plot_ablation_curve

torch.manual_seed(0)
clip = cs.HookedCLIP.from_pretrained("toy")  # a 4-layer, 4-head open_clip ViT trained on scenes
print(clip.visual.n_layers, "layers x", clip.visual.n_heads, "heads; image size",
      clip.visual.image_size)

# %% [markdown]
# ## Means, a classifier and test images
#
# `component_means` runs the model over a reference set (256 scenes) and stores the mean output
# of every component, both as a direct term and inside the residual stream (what total mode
# needs). The zero-shot classifier averages the embeddings of a few prompts per shape ("a circle",
# "a photo of a circle", ...). The test scenes are a different seed, labelled by their shape.

# %%
reference = SyntheticScenes(256, seed=3, transform=clip.preprocess, split="validation")
means = cs.component_means(clip, reference, show_progress=False)
shape = cs.ZeroShotClassifier.from_prompts(
    clip, {value: zero_shot_prompts("shape", value) for value in ATTRIBUTES["shape"]})
test = SyntheticScenes(256, seed=4, label="shape", transform=clip.preprocess, split="test")
images = torch.stack([test[i][0] for i in range(8)])
labels = [test[i][1] for i in range(8)]
print("classes:", list(ATTRIBUTES["shape"]), "| first labels:", labels)

# %% [markdown]
# ## One component at a time
#
# `MeanAblation.attribute` is a Captum perturbation attribution: for each image it returns the
# ablated score minus the original score of the image's own class (`target=labels`), one value
# per ablated component (`components="attn"`: each attention layer in turn). Negative values mean
# the layer supported the right class. Direct mode first:

# %%
direct = cs.MeanAblation(clip, means)
change = direct.attribute(images, texts=shape, target=labels, components="attn")
change.mean(0)  # mean change of the true class's score per MSA layer

# %% [markdown]
# And total mode, where each layer's ablation propagates through the layers after it. A layer
# whose total change is much larger than its direct change mostly works through later layers
# (it prepares features that others write out); similar values mean its effect is mostly direct.

# %%
total = cs.MeanAblation(clip, means, mode="total")
total.attribute(images, texts=shape, target=labels, components="attn").mean(0)

# %% [markdown]
# ## The ablation study
#
# `study` measures zero-shot accuracy on all 256 test scenes in several settings: the whole model
# (`baseline`), all MLPs mean-ablated, all MSA layers mean-ablated, and MSA layers `0..l`
# mean-ablated cumulatively for each `l`. The table below has one column per mode.

# %%
studies = {mode: cs.MeanAblation(clip, means, mode=mode).study(test, shape, show_progress=False)
           for mode in ["direct", "total"]}
pd.DataFrame({mode: study.to_frame()["accuracy"] for mode, study in studies.items()})

# %% [markdown]
# The accumulated curve (the paper's Figure 2): point `l` is the accuracy with the attention
# layers `0..l` all mean-ablated; the dashed lines are the unablated accuracy and the dotted line
# chance (1 / 5 shapes). Where a curve stays near its baseline, the layers ablated so far do not
# matter for the task; the steps show which layers do. In direct mode the last point ablates
# every attention layer's direct term, so what is left is the MLPs and the embedding term.

# %%
fig, _ = plot_ablation_curve({mode: study.accumulated for mode, study in studies.items()},
                             baseline={mode: study.baseline for mode, study in studies.items()},
                             chance=1 / len(ATTRIBUTES["shape"]))
fig

# %% [markdown]
# The same study as bars (the paper's Table 1): the whole model, all MLPs ablated, all MSAs
# ablated. The paper's finding is about direct effects: in direct mode, ablating the MLPs should
# cost little accuracy and ablating the attention layers much more. In total mode, ablating every
# MLP inside the network also takes away what all later layers read from them, which can break
# the model altogether; that is the difference between a component's direct and total effect.

# %%
fig, _ = plot_ablation_bars(pd.DataFrame({mode: study.table() for mode, study in studies.items()}),
                            chance=1 / len(ATTRIBUTES["shape"]))
fig
