"""Write the tutorial notebooks in ``tutorials/`` from the cell sources below.

The notebooks are committed unexecuted; ``tests/test_tutorials.py`` runs each one top to bottom
on the toy model. Edit the cells here and run ``python scripts/build_tutorials.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat

SWITCH = """\
> **Real weights.** Everything here runs offline on the embedded toy model. With internet access,
> swap the first line for a pretrained open_clip model and use a real text bank, e.g.
> `clip = cs.HookedCLIP.from_pretrained("ViT-B-16", "laion2b_s34b_b88k")` and
> `cs.text_bank("general")`; images then come from `clip.preprocess_images([...PIL images...])`."""

SETUP = """\
import torch
import captum_clipspan as cs
from captum_clipspan.datasets import SyntheticScenes, make_scenes

torch.manual_seed(0)
clip = cs.HookedCLIP.from_pretrained("toy")   # a 4-layer, 4-head open_clip ViT trained on scenes
print(clip.visual.n_layers, "layers x", clip.visual.n_heads, "heads; image size",
      clip.visual.image_size)"""

TUTORIALS: dict[str, list[tuple[str, str]]] = {
    "01_getting_started": [
        ("md", "# Getting started: heads and patch maps\n\nThe image embedding of a CLIP-ViT is "
               "an exact sum of direct contributions of layers, heads and image patches. This "
               "notebook decomposes a few images, reads heads against texts, and draws patch "
               "maps.\n\n" + SWITCH),
        ("code", SETUP),
        ("code", "scenes = make_scenes(8, seed=1)        # synthetic scenes with known attributes\n"
                 "images = torch.stack([clip.preprocess(image) for image in scenes.tensors()])\n"
                 "scenes.captions[:4]"),
        ("md", "## The decomposition is exact\n\n`decompose` returns every term; they sum to "
               "the unit-norm image embedding."),
        ("code", "parts = cs.decompose(clip, images, granularity=\"token\")\n"
                 "print(\"heads:\", tuple(parts.heads.shape), \"tokens:\", "
                 "tuple(parts.tokens.shape))\n"
                 "print(\"largest completeness error:\", "
                 "(parts.total() - parts.image_embed).abs().max().item())"),
        ("md", "## Heads against texts\n\n`HeadContribution` is a Captum attribution: "
               "`texts=` takes strings, text embeddings or a `ZeroShotClassifier`; `target` "
               "keeps Captum's meaning, one index per image into the texts."),
        ("code", "texts = [\"a red object\", \"a circle\", \"an object on a striped background\"]\n"
                 "heads = cs.HeadContribution(clip)\n"
                 "scores, delta = heads.attribute(images, texts=texts, "
                 "return_convergence_delta=True)\n"
                 "print(tuple(scores.shape), \"delta:\", delta.abs().max().item())\n"
                 "own = heads.attribute(images, texts=texts, target=0)   # [B, L, H]: one text\n"
                 "print(tuple(own.shape))"),
        ("code", "from captum_clipspan.visualization import plot_head_grid\n\n"
                 "fig, ax = plot_head_grid(scores[..., 0].std(dim=0), "
                 "title=\"spread of each head's effect on 'a red object'\", center=None, "
                 "cmap=\"viridis\")\nfig"),
        ("md", "## Patch maps\n\n`PatchContribution` sums the per-token terms of the chosen "
               "layers and heads and drops the class token; `interpolate=True` upsamples to "
               "pixels."),
        ("code", "maps = cs.PatchContribution(clip).attribute(images, texts=texts, "
                 "interpolate=True)\n"
                 "from captum_clipspan.visualization import plot_patch_maps\n\n"
                 "fig, _ = plot_patch_maps(scenes.tensors()[0], maps[0], titles=texts)\nfig"),
        ("code", "from captum.attr import visualization as viz\n\n"
                 "fig, _ = viz.visualize_image_attr(maps[0, :1].permute(1, 2, 0).numpy(), "
                 "scenes.images[0] / 255.0,\n"
                 "                                  \"blended_heat_map\", sign=\"all\", "
                 "use_pyplot=False)\nfig"),
    ],
    "02_textspan": [
        ("md", "# TextSpan: what each head does\n\nTextSpan (the paper's Algorithm 1) picks, "
               "from a bank of texts, the directions that span a head's outputs over many "
               "images.\n\n" + SWITCH),
        ("code", SETUP),
        ("code", "import tempfile\n\n"
                 "scenes = SyntheticScenes(600, seed=2, transform=clip.preprocess)\n"
                 "folder = tempfile.mkdtemp()\n"
                 "cache = cs.cache_decomposition(clip, scenes, folder + \"/cache\", "
                 "show_progress=False)\n"
                 "cache.heads.shape   # [images, layers, heads, E], memory-mapped"),
        ("code", "bank = cs.text_bank(\"toy\")            # the scenes' attribute phrases\n"
                 "report = cs.TextSpan(clip, texts=bank).attribute(cache, m=5, "
                 "show_progress=False)\n"
                 "print(report.describe(layer=3, head=0))"),
        ("code", "fig, _ = report.plot(max_texts=5)\nfig"),
        ("code", "report.to_frame().head(10)"),
        ("md", "## Which attribute does each head carry?\n\nA per-head probe: zero-shot accuracy "
               "of one head's direct effect, with every other component mean-ablated."),
        ("code", "from captum_clipspan.datasets import ATTRIBUTES, zero_shot_prompts\n"
                 "from captum_clipspan.visualization import plot_head_grid\n\n"
                 "attributes = [scenes.attributes(i) for i in range(len(scenes))]\n"
                 "probes = {}\n"
                 "for family in [\"shape\", \"color\"]:\n"
                 "    classifier = cs.ZeroShotClassifier.from_prompts(\n"
                 "        clip, {v: zero_shot_prompts(family, v) for v in ATTRIBUTES[family]})\n"
                 "    labels = [ATTRIBUTES[family].index(a[family]) for a in attributes]\n"
                 "    probes[family] = cs.head_accuracy(cache, classifier, labels)\n"
                 "fig, _ = plot_head_grid(probes[\"color\"], title=\"color probe\", center=None, "
                 "cmap=\"viridis\", annotate=True)\nfig"),
        ("md", "## Head-specific retrieval\n\nRank the cached images by one head's direct "
               "effect on a query."),
        ("code", "best = probes[\"color\"].flatten().argmax().item()\n"
                 "layer, head = divmod(best, clip.visual.n_heads)\n"
                 "top = cs.retrieve(cache, layer, head, \"a red object\", k=8, clip=clip)\n"
                 "from captum_clipspan.visualization import plot_top_images\n\n"
                 "shown = make_scenes(600, seed=2).tensors()[top.indices]\n"
                 "fig, _ = plot_top_images(shown, scores=top.scores, "
                 "title=f\"L{layer}.H{head}: 'a red object'\")\nfig"),
        ("md", "## How much of the model do the texts explain?\n\nReplace every head by its "
               "projection on its first `m` TextSpan texts, mean-ablate everything else, and "
               "compare with a bank of random directions of the same size."),
        ("code", "from captum_clipspan.attr.textspan import random_bank\n\n"
                 "shape = cs.ZeroShotClassifier.from_prompts(\n"
                 "    clip, {v: zero_shot_prompts(\"shape\", v) for v in ATTRIBUTES[\"shape\"]})\n"
                 "labels = torch.tensor([ATTRIBUTES[\"shape\"].index(a[\"shape\"]) "
                 "for a in attributes])\n"
                 "import numpy as np\n"
                 "cache.labels = np.asarray(labels)   # give the cache the shape labels\n"
                 "random = cs.TextSpan(clip, texts=[f\"random {i}\" for i in range(len(bank))],\n"
                 "                     text_embeddings=random_bank(len(bank), clip.embed_dim))\n"
                 "random_report = random.attribute(cache, m=5, show_progress=False)\n"
                 "{\"TextSpan\": report.accuracy(cache, shape, m_values=[1, 3, 5]),\n"
                 " \"random bank\": random_report.accuracy(cache, shape, m_values=[1, 3, 5])}"),
    ],
    "03_mean_ablation": [
        ("md", "# Mean-ablation: which components matter\n\nReplace a component's output by its "
               "mean over a reference set and measure the change. *Direct* mode changes only "
               "its direct term (no re-run); *total* mode re-runs the network.\n\n" + SWITCH),
        ("code", SETUP),
        ("code", "reference = SyntheticScenes(256, seed=3, transform=clip.preprocess)\n"
                 "means = cs.component_means(clip, reference, show_progress=False)\n"
                 "from captum_clipspan.datasets import ATTRIBUTES, zero_shot_prompts\n\n"
                 "shape = cs.ZeroShotClassifier.from_prompts(\n"
                 "    clip, {v: zero_shot_prompts(\"shape\", v) for v in ATTRIBUTES[\"shape\"]})\n"
                 "test = SyntheticScenes(256, seed=4, label=\"shape\", "
                 "transform=clip.preprocess)\n"
                 "images = torch.stack([test[i][0] for i in range(8)])\n"
                 "labels = [test[i][1] for i in range(8)]"),
        ("code", "direct = cs.MeanAblation(clip, means)\n"
                 "change = direct.attribute(images, texts=shape, target=labels, "
                 "components=\"msa\")\n"
                 "change.mean(0)   # mean change of the true class's score per MSA layer"),
        ("code", "total = cs.MeanAblation(clip, means, mode=\"total\")\n"
                 "total.attribute(images, texts=shape, target=labels, "
                 "components=\"msa\").mean(0)"),
        ("code", "studies = {mode: cs.MeanAblation(clip, means, mode=mode).study(test, shape, "
                 "show_progress=False)\n"
                 "           for mode in [\"direct\", \"total\"]}\n"
                 "import pandas as pd\n\n"
                 "pd.DataFrame({mode: study.to_frame()[\"accuracy\"] "
                 "for mode, study in studies.items()})"),
        ("code", "from captum_clipspan.visualization import plot_ablation_bars, "
                 "plot_ablation_curve\n\n"
                 "fig, _ = plot_ablation_curve({m: s.accumulated for m, s in studies.items()},\n"
                 "                             baseline={m: s.baseline for m, s in "
                 "studies.items()})\nfig"),
        ("code", "fig, _ = plot_ablation_bars(pd.DataFrame({m: s.table() for m, s in "
                 "studies.items()}))\nfig"),
    ],
    "04_custom_attribution": [
        ("md", "# Extending: a custom attribution\n\nSubclass `ClipSpanAttribution`: "
               "`self.decompose` resolves `texts=` and `target` and runs the exact "
               "decomposition, `self.output` selects each image's text and adds the "
               "convergence delta. Here: the "
               "class token's own contribution through every head, a quantity the built-in "
               "classes do not report.\n\n" + SWITCH),
        ("code", SETUP),
        ("code", "from captum.log import log_usage\n\n\n"
                 "class ClassTokenContribution(cs.ClipSpanAttribution):\n"
                 "    \"\"\"Direct effect that flows through the class token's value vectors, "
                 "per layer and head.\"\"\"\n\n"
                 "    @log_usage()\n"
                 "    def attribute(self, inputs, texts=None, target=None, "
                 "return_convergence_delta=False):\n"
                 "        parts, resolved = self.decompose(inputs, texts, target, "
                 "granularity=\"token\")\n"
                 "        through_class_token = parts.tokens[:, :, 0]   # [B, L, H, T]\n"
                 "        return self.output(through_class_token, parts, resolved, "
                 "return_convergence_delta)"),
        ("code", "images = torch.stack([clip.preprocess(x) for x in make_scenes(4, "
                 "seed=5).tensors()])\n"
                 "scores, delta = ClassTokenContribution(clip).attribute(\n"
                 "    images, texts=[\"a circle\", \"a square\"], return_convergence_delta=True)\n"
                 "scores.shape, delta.abs().max().item()"),
        ("md", "The new class works with Captum's wrappers, e.g. `NoiseTunnel`: it repeats "
               "`target` per noisy sample and leaves `texts=` alone."),
        ("code", "from captum.attr import NoiseTunnel\n\n"
                 "smooth = NoiseTunnel(ClassTokenContribution(clip)).attribute(\n"
                 "    images, nt_samples=4, stdevs=0.05, texts=[\"a circle\", \"a square\"],\n"
                 "    target=[0, 1, 0, 1])   # [B, L, H]: each image's own text\n"
                 "smooth.shape"),
        ("md", "The math is also usable directly: `cs.decompose(..., text_embeddings=...)` "
               "contracts with the texts early, so per-token scores never build a "
               "`[B, L, N, H, E]` tensor."),
        ("code", "texts = clip.encode_text([\"a circle\", \"a square\"])\n"
                 "parts = cs.decompose(clip, images, granularity=\"token\", "
                 "text_embeddings=texts)\n"
                 "parts.tokens.shape   # [B, L, N, H, T]"),
    ],
    "05_captum_methods": [
        ("md", "# Captum's own methods on the hooked model\n\nThe hooked tower exposes "
               "TransformerLens hook points, which are modules Captum's layer methods can "
               "target; `HookedCLIP(images, texts)` returns cosine similarities, a "
               "differentiable `forward_func`.\n\n" + SWITCH),
        ("code", SETUP),
        ("code", "scenes = make_scenes(4, seed=6)\n"
                 "images = torch.stack([clip.preprocess(x) for x in scenes.tensors()])\n"
                 "texts = clip.encode_text([\"a circle\", \"a square\", \"a red object\"])\n"
                 "clip(images, texts)   # [B, T] cosines"),
        ("code", "from captum.attr import LayerIntegratedGradients\n\n"
                 "layer = clip.visual.mod_dict[\"blocks.2.hook_resid_post\"]\n"
                 "lig = LayerIntegratedGradients(clip, layer)\n"
                 "attributions = lig.attribute(images, baselines=torch.zeros_like(images), "
                 "target=0,\n"
                 "                             additional_forward_args=(texts,), n_steps=16)\n"
                 "attributions.shape   # [B, tokens, width]"),
        ("code", "from captum.attr import IntegratedGradients\n"
                 "from captum_clipspan.visualization import plot_patch_maps\n\n"
                 "ig = IntegratedGradients(clip)\n"
                 "pixels = ig.attribute(images, target=0, additional_forward_args=(texts,), "
                 "n_steps=16)\n"
                 "direct = cs.PatchContribution(clip).attribute(images, texts=texts[0], "
                 "interpolate=True)\n"
                 "fig, _ = plot_patch_maps(scenes.tensors()[0], "
                 "torch.stack([pixels[0].sum(0), direct[0, 0]]),\n"
                 "                         titles=[\"IntegratedGradients\", \"direct patch "
                 "effect\"])\nfig"),
        ("code", "_, cache = clip.visual.run_with_cache(images, names_filter=lambda n: "
                 "n.endswith(\"hook_pattern\"))\n"
                 "cache[\"blocks.3.attn.hook_pattern\"].shape   # [B, H, N, N]"),
    ],
}


def build(out: Path) -> list[Path]:
    """Write every tutorial notebook into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, cells in TUTORIALS.items():
        notebook = nbformat.v4.new_notebook()
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                           "language": "python"}
        notebook.cells = [nbformat.v4.new_markdown_cell(text) if kind == "md"
                          else nbformat.v4.new_code_cell(text) for kind, text in cells]
        for index, cell in enumerate(notebook.cells):
            cell["id"] = f"{name}-{index}"
        path = out / f"{name}.ipynb"
        nbformat.write(notebook, path)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "tutorials")
    for path in build(parser.parse_args().out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
