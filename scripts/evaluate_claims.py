"""Regenerate the README's application tables on held-out scenes, each as mean ± spread over seeds.

Every scene here comes from the ``"test"`` split of :mod:`captum_clipspan.toy.scenes` (choices:
TextSpan's reference set, the means, the oracle's head set, from ``"validation"``), which
cannot hold a scene the toys were trained on. For each seed in ``--seeds`` the script runs:

* **probe**: the per-head probe (each head alone, zero-shot, per family), TextSpan on the toy
  bank, the agreement of the probe's and TextSpan's labels with the planted attributes
  (:func:`captum_clipspan.toy.probes.head_roles`), and the direct mean-ablation study for shape;
* **segmentation**: every heat-map method, model-free controls included, with the protocol's
  scores and threshold-free ones (foreground AUROC, IoU of the top pixels), and paired
  bootstrap intervals (:func:`captum_clipspan.evaluation.paired_bootstrap`) for the differences
  the README claims, over the images of all seeds;
* **spurious**: the spurious-cue study with k heads, against the expectation over every choice of
  k random heads, the expected best of 5 and 20 draws, and the oracle chosen on validation.

Each part runs on every toy of ``--toys``, on held-out scenes of the world it was trained on
(``"toy"``: the simple world; ``"toy-clutter"``, the 6 x 8 second generation: the clutter world,
where colour alone cannot find the objects), the spurious part on its spurious variant.

Spread is the sample standard deviation over seeds (``mean ± sd``); a difference whose 95%
interval holds 0 is printed as "cannot separate". Markdown goes to stdout (progress to stderr).

Usage::

    python scripts/evaluate_claims.py                      # everything, 3 seeds, both toys
    python scripts/evaluate_claims.py --parts segmentation --seeds 0 1 2 3 4 --n-segmentation 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import captum_clipspan as cs  # noqa: E402
from captum_clipspan import segmentation as seg  # noqa: E402
from captum_clipspan.evaluation import paired_bootstrap  # noqa: E402
from captum_clipspan.segmentation.benchmarking import (  # noqa: E402
    benchmark_terms,
    summarize_terms,
)
from captum_clipspan.segmentation.methods import MODEL_FREE_METHODS  # noqa: E402
from captum_clipspan.toy import SceneSegmentation, toy_bank  # noqa: E402
from captum_clipspan.toy.model import toy_world  # noqa: E402
from captum_clipspan.toy.probes import (  # noqa: E402
    family_classifier,
    head_roles,
    probe_heads,
    read_labels,
    textspan_families,
)
from captum_clipspan.toy.scenes import ATTRIBUTES, write_image_folder  # noqa: E402
from captum_clipspan.toy.spurious import spurious_benchmark  # noqa: E402

PARTS = ("probe", "segmentation", "spurious")
SEGMENTATION_CLAIMS = (("decomposition", "chefer"), ("decomposition", "color_rarity"),
                       ("chefer", "color_rarity"), ("decomposition", "rollout"))
"""Pairs whose difference the README states or implies (the decomposition leads)."""
INVESTIGATED_HEADS = ("L3.H1", "L2.H0")
TOYS = ("toy", "toy-clutter")
SPURIOUS_TOY = {"toy": "toy-spurious", "toy-clutter": "toy-clutter-spurious"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--toys", nargs="+", choices=TOYS, default=list(TOYS),
                   help="the toys to evaluate (the spurious part reads their spurious variants)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="test-split seeds (>= 3 for a spread)")
    p.add_argument("--n-probe", type=int, default=1000, help="scenes per seed for the probe")
    p.add_argument("--n-segmentation", type=int, default=300, help="scenes per seed")
    p.add_argument("--n-per-group", type=int, default=100, help="spurious: scenes per group")
    p.add_argument("--n-reference", type=int, default=2000, help="spurious: reference scenes")
    p.add_argument("--k", type=int, default=2, help="spurious: heads ablated")
    p.add_argument("--m", type=int, default=5, help="TextSpan texts per head (probe part)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def log(message: str) -> None:
    print(f"[evaluate_claims] {message}", file=sys.stderr, flush=True)


def spread(values: Sequence[float], digits: int = 3, scale: float = 1.0) -> str:
    """``mean ± sd`` over seeds (sd with ddof=1; no ± for a single value)."""
    array = np.asarray(values, dtype=np.float64) * scale
    if array.size < 2:
        return f"{array.mean():.{digits}f}"
    return f"{array.mean():.{digits}f} ± {array.std(ddof=1):.{digits}f}"


# Probe, TextSpan against ground truth, mean ablation ----------------------------------------

def probe_seed(clip: Any, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One seed of the probe part: probe, TextSpan (default and normalized scoring), roles."""
    world = toy_world(args.toy)
    folder = write_image_folder(work / f"probe-{args.toy}-{seed}", args.n_probe, seed=seed,
                                split="test", world=world)
    labels = read_labels(folder)
    cache = cs.cache_decomposition(clip, folder, work / f"probe-cache-{args.toy}-{seed}",
                                   batch_size=args.batch_size, show_progress=False)
    probes = probe_heads(clip, cache, labels)
    texts, families = toy_bank()
    report = cs.TextSpan(clip, bank=texts).fit(cache, m=args.m, show_progress=False)
    normalized = cs.TextSpan(clip, bank=texts).fit(cache, m=args.m, normalize_scoring=True,
                                                   show_progress=False)
    roles = head_roles(cache, labels, probes, report, families)
    by_normalized = textspan_families(normalized, families)
    for role, key in zip(roles, report.results, strict=True):
        role["textspan_normalized"] = by_normalized[key]
    directions = text_directions(clip, texts, families)
    effects = cache.tensor("heads", dtype=torch.float64)  # [N, L_s, H, E]
    for role in roles:
        layer, head = (int(part[1:]) for part in role["head"].split("."))
        centered = effects[:, cache.layers.index(layer), head]
        centered = centered - centered.mean(0)
        total = centered.pow(2).sum(1).mean()
        role["text_variance"] = {f: float((centered @ d.T).pow(2).mean() / total * d.shape[1])
                                 for f, d in directions.items()}
    study = cs.MeanAblation(clip, cs.ComponentMeans.from_cache(cache)).study(
        cache, family_classifier(clip, "shape"), labels=labels["shape"], show_progress=False)
    return {"probes": probes, "roles": roles, "layers": cache.layers,
            "ablation": {**study.table(), **{f"MSA 0..{layer} ablated": value
                                             for layer, value in enumerate(study.accumulated)}}}


def text_directions(clip: Any, texts: Sequence[str],
                    families: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per family, its bank texts' unit directions after removing the family's mean text (what
    tells its values apart): ``{family: [T_f, E]}``, float64."""
    embeddings = clip.encode_text(list(texts)).double().cpu()
    embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
    result = {}
    for family in ATTRIBUTES:
        rows = embeddings[[i for i, f in enumerate(families) if f == family]]
        result[family] = torch.nn.functional.normalize(rows - rows.mean(0), dim=-1)
    return result


def probe_section(runs: list[dict[str, Any]], n: int, toy: str) -> list[str]:
    """The probe table, the agreement table and the mean-ablation table, mean ± sd."""
    families = list(ATTRIBUTES)
    layers = runs[0]["layers"]
    n_heads = runs[0]["probes"][families[0]]["heads"].shape[1]
    stacked = {f: torch.stack([r["probes"][f]["heads"] for r in runs]).numpy() for f in families}
    best = {f: np.unravel_index(stacked[f].mean(0).argmax(), stacked[f].shape[1:])
            for f in families}
    lines = [f"### {toy}: per-head probe ({len(runs)} test seeds x {n} scenes of the "
             f"{toy_world(toy)} world; mean ± sd)", "",
             "| head | " + " | ".join(families) + " |", "|---" * (len(families) + 1) + "|"]
    for row, layer in enumerate(layers):
        for head in range(n_heads):
            cells = []
            for f in families:
                text = spread(stacked[f][:, row, head], 2)
                cells.append(f"**{text}**" if best[f] == (row, head) else text)
            lines.append(f"| L{layer}.H{head} | " + " | ".join(cells) + " |")
    chance = ", ".join(f"{f} {1 / len(v):.2f}" for f, v in ATTRIBUTES.items())
    lines += ["", f"Chance: {chance}. Bold: the best head per family by the mean.", ""]

    lines += [f"### {toy}: TextSpan against ground truth", "",
              "Planted: the family whose values explain the largest share (R²) of the variance of "
              "the head's direct effect (no text involved). Probe: the family the head alone "
              "classifies best, relative to chance. TextSpan: the family most of its first 3 "
              "texts name (toy bank; authors' unnormalized scoring, and normalized scoring). "
              "Labels of the first seed; shares and variance explained as mean ± sd.", "",
              "| head | planted (R²) | probe | TextSpan | TextSpan, normalized scoring | "
              "first texts (first seed) | variance explained by its texts |",
              "|---|---|---|---|---|---|---|"]
    for index, role in enumerate(runs[0]["roles"]):
        share = spread([r["roles"][index]["planted_share"] for r in runs], 2)
        explained = spread([r["roles"][index]["variance_explained"] for r in runs], 2)
        note = "" if role["carries"] else " (carries none)"
        lines.append(f"| {role['head']} | {role['planted']} ({share}){note} | {role['probe']} | "
                     f"{role['textspan']} | {role['textspan_normalized']} | "
                     f"{'; '.join(role['texts'])} | {explained} |")
    lines += ["", f"| agreement (share of heads) | all {len(runs[0]['roles'])} heads | heads "
              "carrying a family "
              "(R² >= 0.1) |", "|---|---|---|"]
    for name, (a, b) in {"TextSpan = planted": ("textspan", "planted"),
                         "TextSpan (normalized) = planted": ("textspan_normalized", "planted"),
                         "probe = planted": ("probe", "planted"),
                         "TextSpan = probe": ("textspan", "probe")}.items():
        every, carrying = [], []
        for run in runs:
            agree = [role[a] == role[b] for role in run["roles"]]
            every.append(np.mean(agree))
            carrying.append(np.mean([g for g, role in zip(agree, run["roles"], strict=True)
                                     if role["carries"]]))
        lines.append(f"| {name} | {spread(every, 2)} | {spread(carrying, 2)} |")
    lines += ["", "Heads the README names as disagreeing (size vs count). Variance along a "
              "family's texts: the head's direct-effect variance along the family's bank texts "
              "(unit directions, the family's mean text removed), per direction, relative to an "
              "isotropic share (1 = as much as a random direction); what TextSpan ranks texts "
              "by.", "",
              "| head | R² size | R² count | probe size | probe count | variance along size "
              "texts | along count texts | TextSpan labels over seeds | normalized scoring |",
              "|---|---|---|---|---|---|---|---|---|"]
    names = [role["head"] for role in runs[0]["roles"]]
    for head in INVESTIGATED_HEADS if toy == "toy" else ():
        index = names.index(head)
        row, column = divmod(index, n_heads)
        lines.append(
            f"| {head} | {spread([r['roles'][index]['shares']['size'] for r in runs], 2)} | "
            f"{spread([r['roles'][index]['shares']['count'] for r in runs], 2)} | "
            f"{spread(stacked['size'][:, row, column], 2)} | "
            f"{spread(stacked['count'][:, row, column], 2)} | "
            f"{spread([r['roles'][index]['text_variance']['size'] for r in runs], 2)} | "
            f"{spread([r['roles'][index]['text_variance']['count'] for r in runs], 2)} | "
            f"{', '.join(r['roles'][index]['textspan'] for r in runs)} | "
            f"{', '.join(r['roles'][index]['textspan_normalized'] for r in runs)} |")
    settings = list(runs[0]["ablation"])
    lines += ["", f"### {toy}: direct mean-ablation, shape classification (mean ± sd)", "",
              "| setting | accuracy |", "|---|---|"]
    lines += [f"| {s} | {spread([r['ablation'][s] for r in runs])} |" for s in settings]
    return lines + [""]


# Segmentation ---------------------------------------------------------------------------------

def segmentation_seed(clip: Any, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    data = SceneSegmentation(args.n_segmentation, seed=seed, split="test",
                             world=toy_world(args.toy), **seg.for_model(clip))
    texts = cs.ZeroShotClassifier.from_prompts(clip, SceneSegmentation.class_prompts())
    return benchmark_terms(clip, data, texts, batch_size=args.batch_size)


METRICS: dict[str, tuple[str, Callable[[dict[str, torch.Tensor]], Any]]] = {
    "pixel_accuracy": ("pixel acc.", lambda t: torch.stack(
        [t["correct"].double(), t["labeled"].double()], 1)),
    "miou": ("mIoU", lambda t: torch.cat([t["inter"].double(), t["union"].double()], 1)),
    "mean_ap": ("mAP", lambda t: t["ap"].double()),
    "auroc": ("AUROC", lambda t: t["auroc"].double()),
    "top_iou": ("top-pixel IoU", lambda t: t["top_iou"].double()),
}
"""Metric -> (column, the per-image rows its pooled statistic reads)."""

POOLED: dict[str, Callable[[torch.Tensor], Any] | None] = {
    "pixel_accuracy": lambda t: t[:, 0].sum() / t[:, 1].sum(),
    "miou": lambda t: (t[:, 0].sum() / t[:, 2].sum() + t[:, 1].sum() / t[:, 3].sum()) / 2,
    "mean_ap": None, "auroc": None, "top_iou": None,
}
"""Metric -> the pooled statistic of its rows (``None``: the mean), as the protocol pools."""


def segmentation_section(runs: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    methods = list(runs[0])
    summaries = {m: [summarize_terms(run[m]) for run in runs] for m in methods}
    order = sorted(methods, key=lambda m: -np.mean([s["miou"] for s in summaries[m]]))
    n = sum(int(summaries[methods[0]][i]["n"]) for i in range(len(runs)))
    lines = [f"### {args.toy}: zero-shot segmentation ({len(runs)} test seeds x "
             f"{args.n_segmentation} scenes of the {toy_world(args.toy)} world; percent, "
             "mean ± sd over seeds)", "",
             "| method | " + " | ".join(label for label, _ in METRICS.values()) + " |",
             "|---" * (len(METRICS) + 1) + "|"]
    for method in order:
        kind = " (model-free)" if method in MODEL_FREE_METHODS else ""
        cells = [spread([s[key] for s in summaries[method]], 2, 100) for key in METRICS]
        lines.append(f"| {method}{kind} | " + " | ".join(cells) + " |")
    lines += ["", "The protocol's pixel accuracy, mIoU and mAP threshold each map at its mean; "
              "AUROC and the IoU of the top pixels (as many as the mask) read only the ranking "
              "of pixels.", "",
              f"Paired differences, all {n} images of the seeds pooled (95% bootstrap interval, "
              f"{args.bootstrap} resamples, percent points):", "",
              "| difference | " + " | ".join(label for label, _ in METRICS.values()) + " |",
              "|---" * (len(METRICS) + 1) + "|"]
    pooled = {m: {key: torch.cat([run[m][key] for run in runs]) for key in runs[0][m]}
              for m in methods}
    verdicts = []
    for a, b in SEGMENTATION_CLAIMS:
        if a not in pooled or b not in pooled:
            continue
        cells = []
        for key, (label, rows) in METRICS.items():
            result = paired_bootstrap(rows(pooled[a]), rows(pooled[b]), POOLED[key],
                                      n_resamples=args.bootstrap)
            separated = result["low"] > 0 or result["high"] < 0
            cells.append(f"{100 * result['difference']:+.2f} [{100 * result['low']:+.2f}, "
                         f"{100 * result['high']:+.2f}]" + ("" if separated else " ~"))
            if not separated:
                verdicts.append(f"{a} vs {b}: {label}")
        lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    lines += ["", "~: the interval holds 0; the toy cannot separate the two methods on that "
              "measure."]
    if verdicts:
        lines += ["", "Cannot separate: " + "; ".join(verdicts) + "."]
    return lines + [""]


# Spurious cue ---------------------------------------------------------------------------------

def spurious_section(runs: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    def heads(pairs: Sequence[tuple[int, int]]) -> str:
        return ", ".join(f"{layer}.{head}" for layer, head in pairs)

    rows: list[tuple[str, str, list[dict[str, float]]]] = [
        ("unmodified", "-", [r["before"] for r in runs]),
        ("texture heads ablated (TextSpan)", "; ".join(sorted({heads(r["heads"]) for r in runs})),
         [r["after"] for r in runs]),
        ("random heads, one draw (mean over the sets)", "-",
         [r["random_expectation"]["mean"] for r in runs])]
    for d in runs[0]["random_expectation"]["best_of"]:
        rows.append((f"random heads, best of {d} (expected)", "-",
                     [r["random_expectation"]["best_of"][d] for r in runs]))
    rows += [(f"random heads, best of {len(runs[0]['random']['draws'])} (one draw seed, as "
              "before)", "; ".join(sorted({heads(r["random"]["heads"]) for r in runs})),
              [r["random"]["after"] for r in runs]),
             ("oracle (best set on validation groups)",
              "; ".join(sorted({heads(r["oracle"]["heads"]) for r in runs})),
              [r["oracle"]["after"] for r in runs])]
    n_sets = len(runs[0]["random_expectation"]["sets"])
    exhaustive = runs[0]["random_expectation"]["exhaustive"]
    lines = [f"### {SPURIOUS_TOY[args.toy]}: spurious cue, k = {args.k} ({len(runs)} test "
             f"seeds x 16 groups x {args.n_per_group} scenes of the {toy_world(args.toy)} "
             "world; mean ± sd)", "",
             "| setting | heads | average | worst group | minority groups |",
             "|---|---|---:|---:|---:|"]
    for name, pairs, scores in rows:
        minority = ""
        if name == "unmodified":
            minority = spread([r["minority"]["before"] for r in runs])
        elif name.startswith("texture"):
            minority = spread([r["minority"]["after"] for r in runs])
        lines.append(f"| {name} | {pairs} | {spread([s['average'] for s in scores])} | "
                     f"{spread([s['worst_group'] for s in scores])} | {minority} |")
    ranks, gains = [], []
    for run in runs:
        worst = run["random_expectation"]["worst_group"]
        ranks.append(1 + int((worst > run["after"]["worst_group"]).sum()))
        gains.append(run["after"]["worst_group"] - run["before"]["worst_group"])
    lines += ["", f"Worst-group gain of the TextSpan heads: {spread(gains)}; their rank by "
              f"test worst group among {'all' if exhaustive else 'a sample of'} {n_sets} sets "
              f"of {args.k} heads, per seed: "
              f"{', '.join(map(str, ranks))} (1 = best; ties share the better rank)."]
    return lines + [""]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if len(args.seeds) < 3:
        log("warning: fewer than 3 seeds give no meaningful spread")
    out = [f"<!-- python scripts/evaluate_claims.py {' '.join(sys.argv[1:])} -->", ""]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        for toy in args.toys:
            args.toy = toy
            out += [f"## {toy}", ""]
            clip = cs.HookedCLIP.from_pretrained(args.toy)
            if "probe" in args.parts:
                runs = []
                for seed in args.seeds:
                    log(f"{args.toy}: probe, seed {seed}")
                    runs.append(probe_seed(clip, seed, args, Path(scratch)))
                out += probe_section(runs, args.n_probe, args.toy)
            if "segmentation" in args.parts:
                runs = []
                for seed in args.seeds:
                    log(f"{args.toy}: segmentation, seed {seed}")
                    runs.append(segmentation_seed(clip, seed, args))
                out += segmentation_section(runs, args)
            if "spurious" in args.parts:
                runs = []
                for seed in args.seeds:
                    log(f"{SPURIOUS_TOY[args.toy]}: spurious, seed {seed}")
                    runs.append(spurious_benchmark(
                        k=args.k, n_reference=args.n_reference, n_per_group=args.n_per_group,
                        batch_size=args.batch_size * 2, show_progress=False, scene_seed=seed,
                        reference_seed=1000 + seed, oracle_seed=2000 + seed,
                        toy=SPURIOUS_TOY[args.toy]))
                out += spurious_section(runs, args)
    log(f"done in {(time.perf_counter() - start) / 60:.1f} min")
    print("\n".join(out))


if __name__ == "__main__":
    main()
