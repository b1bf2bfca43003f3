"""Print the neuron lens's scores on the shipped toy as a Markdown table.

For MLP layers 0-2 of ``HookedCLIP.from_pretrained("toy")`` on scenes it was not trained on
(seed 2024; training used seed 0): second- vs first-order effect norms, the variance the first
principal component explains, and whether the sparse texts of the strongest neurons name
attributes their top images have (:mod:`captum_clipspan.toy.neurons`).

Usage::

    python scripts/neuron_table.py [--images 400] [--seed 2024] [--top 10]
"""

from __future__ import annotations

import argparse

from captum_clipspan.toy.neurons import markdown_table, neuron_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="scenes (default: 400)")
    parser.add_argument("--seed", type=int, default=2024, help="scene seed (default: 2024)")
    parser.add_argument("--top", type=int, default=10,
                        help="strongest neurons scored per layer (default: 10)")
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    rows = neuron_table(layers=args.layers, n_images=args.images, seed=args.seed, top=args.top)
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
